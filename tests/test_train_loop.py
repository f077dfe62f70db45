"""The training loop end to end on the tiny config: loss falls, metrics are written, bad input is refused.

One tiny run (module fixture) is compiled and trained once; the rerun and the NaN test reuse its compiled
engine (`train(..., engine=)`), so this file compiles one train step and one eval step in all. Only the tiny
run measures the matmul peak for MFU; the other runs configure it (`log.peak_flops_per_device`).
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from mellama_jax.checkpoints import rundir
from mellama_jax.config import ConfigError, config_module
from mellama_jax.data.synthetic import SyntheticSource
from mellama_jax.model import params as P
from mellama_jax.train.config import TrainConfig, default_config
from mellama_jax.train.loop import TrainingError, train

CONFIGURED_PEAK = {"log.peak_flops_per_device": 1e11}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**overrides):
    c = config_module(os.path.join(ROOT, "configs", "tiny_pretrain.py")).get_config()
    c.log.progress_bar = False
    c.update_from_flattened_dict(overrides)
    return TrainConfig.from_config_dict(c)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("tiny"))
    return workdir, train(tiny(), workdir)


def test_tiny_config_loss_decreases_and_metrics_are_written(tiny_run):
    workdir, result = tiny_run
    assert result.step == 40
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(train_losses) == 8  # every 5 of 40 steps
    assert np.mean(train_losses[-2:]) < train_losses[0] - 1.0
    for key in ("perplexity", "grad_norm", "learning_rate", "tokens_per_sec", "mfu"):
        assert all(np.isfinite(r[key]) for r in records if r["kind"] == "train"), key
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [20, 40]
    for component in ("biomedical", "clinical", "general"):
        assert evals[1][f"{component}/loss"] < evals[0][f"{component}/loss"] + 0.5
        np.testing.assert_allclose(evals[1][f"{component}/perplexity"], np.exp(evals[1][f"{component}/loss"]), rtol=1e-6)
    events = os.listdir(os.path.join(workdir, "tensorboard"))
    assert any(e.startswith("events.out.tfevents") for e in events)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "40"]


def test_training_workdir_loads_as_a_model(tiny_run, tmp_path):
    """The workdir layout is what checkpoints.model_dir / mellama_jax.load read; export gives a model checkpoint."""
    from mellama_jax.checkpoints import model_dir
    from mellama_jax.checkpoints.export import export_model_checkpoint
    workdir, result = tiny_run
    cfg, params, extras = rundir.load_training_params(workdir)
    assert extras["step"] == 40 and cfg.vocab_size == 128
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(jax.device_get(result.state.params))):
        np.testing.assert_array_equal(np.asarray(a), b)
    out = export_model_checkpoint(workdir, str(tmp_path / "model"))
    _, exported, _ = model_dir.load_model_checkpoint(out)
    P.check_params(cfg, exported)


def test_rerun_of_a_finished_run_resumes_and_does_nothing(tiny_run):
    workdir, result = tiny_run
    again = train(tiny(**CONFIGURED_PEAK), workdir, engine=result.engine)  # same shapes: no recompilation
    assert again.step == 40
    for a, b in zip(jax.tree.leaves(jax.device_get(again.state.params)), jax.tree.leaves(jax.device_get(result.state.params))):
        np.testing.assert_array_equal(a, b)


def test_unknown_config_key_is_refused():
    c = default_config()
    c.unlock()
    c.train.learnig_rate = 1.0
    with pytest.raises(ConfigError, match=r"config\.train\.learnig_rate"):
        TrainConfig.from_config_dict(c)


def test_unknown_command_line_key_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mellama_jax.train", "--config", "configs/tiny_pretrain.py",
                           "--workdir", str(tmp_path / "w"), "--config.train.stepz=3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "stepz" in proc.stderr
    assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_mesh_that_does_not_divide_devices_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"needs 3 devices, but 8 are available"):
        train(tiny(**{"mesh.data": 3, "mesh.fsdp": 1}), str(tmp_path))
    with pytest.raises(ConfigError, match=r"do not divide the 8 available devices"):
        train(tiny(**{"mesh.data": 3}), str(tmp_path))


def test_batch_not_divisible_by_data_parallel_size_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"global_batch_size=12 is not divisible by the data-parallel size 8"):
        train(tiny(**{"train.global_batch_size": 12}), str(tmp_path))
    with pytest.raises(ConfigError, match=r"micro-batch is not divisible by the data-parallel size 8"):
        train(tiny(**{"train.micro_batches": 2}), str(tmp_path))


class CorruptedSource(SyntheticSource):
    """The tiny run's data, except that batch `bad_index` holds a token id beyond the vocabulary (a tokenizer /
    model mismatch): the embedding lookup of an out-of-range id gives NaN, so the loss of that step is NaN —
    without changing anything the compiled step depends on."""

    def __init__(self, *args, bad_index: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.bad_index = bad_index

    def make_batch(self, index):
        batch = super().make_batch(index)
        if index == self.bad_index:
            batch["tokens"][0, 5] = self.vocab_size + 7
        return batch


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_run, tmp_path):
    """Resume the finished tiny run's step-20 checkpoint on data whose 23rd batch is corrupt: the run stops at
    step 23 naming it, and the checkpoints it leaves (saved every step) hold finite parameters."""
    workdir, result = tiny_run
    run = tmp_path / "nan"
    os.makedirs(run / "checkpoints")
    shutil.copytree(os.path.join(workdir, "checkpoints", "20"), run / "checkpoints" / "20")
    cfg = tiny(**{"eval.every_steps": 0, "checkpoint.every_steps": 1, **CONFIGURED_PEAK})
    t = cfg.train
    source = CorruptedSource(cfg.data.synthetic, vocab_size=cfg.model.vocab_size, seq_len=t.seq_len,
                             global_batch_size=t.global_batch_size, rows=result.engine.rows, bad_index=22)
    with pytest.raises(TrainingError, match=r"loss is nan at step 23; stopping\. The last good checkpoint is step 22"):
        train(cfg, str(run), source=source, engine=result.engine)
    steps = sorted(int(s) for s in os.listdir(run / "checkpoints") if s.isdigit())
    assert steps[-1] == 22
    _, params, _ = rundir.load_training_params(str(run), step=steps[-1])
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_a_notice_while_the_last_saves_finish_is_a_stop_request_not_a_kill(tiny_run, tmp_path, monkeypatch):
    """SIGTERM arriving while the loop waits for its last checkpoint save is taken by the loop's handler (the run
    reports itself preempted, so the command exits 75), not by the process's own handler (by default: killed)."""
    from mellama_jax.checkpoints import manager
    workdir, result = tiny_run
    run = tmp_path / "late"
    os.makedirs(run / "checkpoints")
    shutil.copytree(os.path.join(workdir, "checkpoints", "20"), run / "checkpoints" / "20")
    close = manager.Checkpointer.close

    def close_after_a_notice(self):
        os.kill(os.getpid(), signal.SIGTERM)
        close(self)

    monkeypatch.setattr(manager.Checkpointer, "close", close_after_a_notice)
    outside = []
    previous = signal.signal(signal.SIGTERM, lambda *args: outside.append(args))
    try:
        done = train(tiny(**{"eval.every_steps": 0, **CONFIGURED_PEAK}), str(run), engine=result.engine)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not outside, "the notice reached the process's handler: the loop had given its handler back"
    assert done.preempted and done.step == 40
