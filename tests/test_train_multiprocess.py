"""Real processes: two processes x 4 CPU devices (jax.distributed on localhost) match one 8-device process and
their checkpoint restores in one process onto another mesh; a run SIGKILLed mid-way and rerun with the same
command ends bit-identical to an uninterrupted run; a data file of the newest checkpoint that only one process
reads, cut in half, makes both processes fall back to the previous step (mixture data: the gathered grain state)
and end bitwise-equal to the uninterrupted run.

The in-process reference and the subprocesses use the same mesh (2x2x2), config and matmul precision, so the
one-process runs compile the same program and must agree bit for bit. Two processes reduce gradients through
gloo in another order, so they agree to float32 rounding (1e-5), not bitwise. Runs are short (16 steps,
checkpoint every 4) and configure the MFU peak, so no process spends its start-up measuring a matmul.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mellama_jax import parallel
from mellama_jax.checkpoints.manager import Checkpointer
from mellama_jax.data.synthetic import SyntheticSource
from mellama_jax.train.batches import checkpointed
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.loop import train
from mellama_jax.train.optimizer import make_optimizer
from mellama_jax.train.state import FullParams, state_layout

pytestmark = pytest.mark.multiprocess
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 16
KILL_AFTER = 4  # first checkpoint; the run is killed as soon as it is complete (12 steps before the end)
OVERRIDES = {"train.steps": STEPS, "checkpoint.every_steps": 4, "checkpoint.keep": 2, "eval.every_steps": 0,
             "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "log.progress_bar": False, "log.every_steps": 4,
             # MFU needs a peak; configuring it skips the start-up matmul measurement in every process.
             "log.peak_flops_per_device": 1e11}
FLAGS = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]


def _launcher():
    spec = importlib.util.spec_from_file_location("launch_local", os.path.join(ROOT, "launch", "local.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


local = _launcher()


def config(**extra):
    sys.path.insert(0, os.path.join(ROOT, "configs"))
    try:
        import tiny_pretrain
    finally:
        sys.path.pop(0)
    c = tiny_pretrain.get_config()
    for key, value in {**OVERRIDES, **extra}.items():
        group, leaf = key.split(".")
        c[group][leaf] = value
    return TrainConfig.from_config_dict(c)


def train_args(workdir):
    """The training command of one process, without the interpreter (launch/local.py adds the rest)."""
    return ["-m", "mellama_jax.train", "--config", "configs/tiny_pretrain.py", "--workdir", workdir, *FLAGS]


def worker_env():
    env = local.child_env()
    env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"  # as tests/conftest.py sets in this process
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted one-process run on 8 devices (mesh 2x2x2)."""
    workdir = str(tmp_path_factory.mktemp("ref"))
    result = train(config(), workdir)
    assert result.step == STEPS
    return jax.device_get(result.state)


def restore(workdir, mesh_cfg):
    """(step, state, data position) of the latest checkpoint of `workdir`, restored in this process onto a mesh
    of our choice."""
    cfg = config(**{"mesh.data": mesh_cfg.data, "mesh.fsdp": mesh_cfg.fsdp, "mesh.tensor": mesh_cfg.tensor})
    trainable = FullParams(cfg.model)
    tx, _ = make_optimizer(cfg.optim, cfg.train.steps, trainable.abstract_trainable())
    layout = state_layout(trainable, tx, parallel.make_mesh(mesh_cfg))
    ckpt = Checkpointer(workdir, cfg.checkpoint)
    try:
        step = ckpt.latest_step()
        source = SyntheticSource(cfg.data.synthetic, vocab_size=cfg.model.vocab_size, seq_len=cfg.train.seq_len,
                                 global_batch_size=cfg.train.global_batch_size)
        state, saved = ckpt.restore(step, layout.abstract, checkpointed(source))
    finally:
        ckpt.close()
    assert saved["train"]["steps"] == STEPS
    return step, state, source.index


def test_two_processes_match_one_process_and_restore_in_one_process(reference, tmp_path):
    workdir = str(tmp_path / "mp")
    cmd = [sys.executable, os.path.join(ROOT, "launch", "local.py"), "--num_processes", "2",
           "--devices_per_process", "4", "--timeout", "400", "--", *train_args(workdir)]
    proc = subprocess.run(cmd, cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=450)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"[0] finished at step {STEPS}" in proc.stdout and f"[1] finished at step {STEPS}" in proc.stdout
    # Restore the two-process checkpoint here, onto a different mesh (fsdp=8 instead of 2x2x2).
    step, state, data_index = restore(workdir, parallel.MeshConfig(1, 8, 1))
    assert step == STEPS and data_index == STEPS and int(state.step) == STEPS
    assert state.params["layers"]["attn"]["q_proj"]["kernel"].sharding.spec[1] == "fsdp"
    for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(reference.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_sigkill_and_rerun_is_bit_identical_to_an_uninterrupted_run(reference, tmp_path):
    workdir = str(tmp_path / "killed")
    command = [sys.executable, *train_args(workdir)]
    env = worker_env()  # one process with 8 devices, as this process (the launcher's env strips the count)
    env["XLA_FLAGS"] = (env["XLA_FLAGS"] + " --xla_force_host_platform_device_count=8").strip()
    first = os.path.join(workdir, "checkpoints", str(KILL_AFTER))
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not os.path.isdir(first) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps and KILL_AFTER <= steps[-1] < STEPS, steps
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"finished at step {STEPS}" in rerun.stdout
    _, state, _ = restore(workdir, parallel.MeshConfig(2, 2, 2))
    host = jax.device_get(state)
    for a, b in zip(jax.tree.leaves(host.params), jax.tree.leaves(reference.params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(host.opt_state), jax.tree.leaves(reference.opt_state)):
        np.testing.assert_array_equal(a, b)


def test_two_processes_evaluate_benchmark_tasks_during_training(tmp_path):
    """eval.tasks in a 2-process run: every process decodes (one SPMD program), process 0 logs one record per
    evaluation, and the numbers are those of the saved parameters evaluated offline in this process."""
    from mellama_jax.api import load
    from mellama_jax.data.tokenizer import train_tokenizer
    from mellama_jax.demo import mibe as synthetic
    from mellama_jax.eval.runner import EvalConfig, evaluate

    data = str(tmp_path / "tasks")
    synthetic.write_synthetic_benchmark(data, per_task=4, seed=3, tasks=("pubmedqa",))
    texts = [r["query"] + " " + r["answer"] for r in synthetic.make_records("pubmedqa", 16, seed=5)]
    tok = train_tokenizer(texts, str(tmp_path / "tok"), vocab_size=320, character_coverage=1.0)
    extra = {"train.steps": 4, "checkpoint.every_steps": 0, "model.vocab_size": 320,
             "model.max_position_embeddings": 256, "data.tokenizer": str(tmp_path / "tok" / "tokenizer.model"),
             "eval.tasks": "pubmedqa", "eval.task_data_dir": data, "eval.task_every_steps": 2, "eval.task_limit": 3,
             "eval.task_max_new_tokens": 6}
    flags_ = [f"--config.{k}={v}" for k, v in {**OVERRIDES, **extra}.items()]
    workdir = str(tmp_path / "mp_tasks")
    cmd = [sys.executable, os.path.join(ROOT, "launch", "local.py"), "--num_processes", "2",
           "--devices_per_process", "4", "--timeout", "400", "--", "-m", "mellama_jax.train", "--config",
           "configs/tiny_pretrain.py", "--workdir", workdir, *flags_]
    proc = subprocess.run(cmd, cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=450)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "[0] finished at step 4" in proc.stdout and "[1] finished at step 4" in proc.stdout
    assert "in-loop task evaluation: 2 runs" in proc.stdout
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    logged = [r for r in records if r["kind"] == "tasks"]
    assert [r["step"] for r in logged] == [2, 4]
    model = load(workdir, mesh=parallel.make_mesh(parallel.MeshConfig(2, 2, 2)))
    model.tokenizer = tok
    (result,) = evaluate(model, EvalConfig(tasks=("pubmedqa",), data_dir=data, limit=3, max_new_tokens=6,
                                           progress=False))
    for matching, metrics in result.metrics_by_matching.items():
        for name, value in metrics.items():
            assert logged[-1][f"pubmedqa/{matching}/{name}"] == pytest.approx(value), (matching, name)


MIX_CONFIG = '''"""tiny_pretrain on the demo mixture (written by tests/test_train_multiprocess.py)."""
from mellama_jax.config import config_module


def get_config():
    c = config_module({root!r} + "/configs/tiny_pretrain.py").get_config()
    c.data.kind = "mixture"
    c.data.tokenizer = {tokenizer!r}
    c.data.mixture = config_module({root!r} + "/configs/data/demo_mix.py").get_config({data!r})
    c.model.vocab_size = {vocab}
    return c
'''


def test_two_processes_agree_to_fall_back_from_a_damaged_checkpoint(tmp_path):
    """Mixture data (each process's grain shards, gathered into one checkpointed state) on 2 real processes; the
    newest checkpoint gets one array file cut in half; rerunning the same command, both processes agree to resume
    from the previous step and end bitwise-equal to the uninterrupted run, redoing the same losses."""
    from data_fixtures import make_demo
    from test_checkpoint_damage import losses

    from mellama_jax.checkpoints import rundir

    data, tok = make_demo(str(tmp_path), scale=0.15)
    config_file = tmp_path / "mix_config.py"
    config_file.write_text(MIX_CONFIG.format(root=ROOT, tokenizer=tok.model_path, data=data, vocab=tok.vocab_size))
    # fsdp over both processes: each process owns (writes and reads) its own parameter shards, so damage to a file
    # of process 1 is seen by process 1 only, and process 0 must follow it.
    flags_ = [f"--config.{k}={v}" for k, v in {**OVERRIDES, "train.steps": 6, "checkpoint.every_steps": 3,
                                               "log.every_steps": 1, "mesh.data": 1, "mesh.fsdp": 8,
                                               "mesh.tensor": 1}.items()]
    workdir = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(ROOT, "launch", "local.py"), "--num_processes", "2", "--devices_per_process",
           "4", "--timeout", "400", "--", "-m", "mellama_jax.train", "--config", str(config_file), "--workdir",
           workdir, *flags_]
    first = subprocess.run(cmd, cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=450)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "[0] finished at step 6" in first.stdout and "[1] finished at step 6" in first.stdout
    _, uninterrupted, extras = rundir.load_training_params(workdir)
    assert extras["step"] == 6
    uninterrupted_losses = losses(workdir)
    assert sorted(uninterrupted_losses) == [1, 2, 3, 4, 5, 6]

    own = os.path.join(workdir, "checkpoints", "6", "state", "ocdbt.process_1", "d")
    target = max((os.path.join(own, f) for f in os.listdir(own)), key=os.path.getsize)
    with open(target, "r+b") as fh:  # what a host lost mid-upload leaves: its own data file cut short
        fh.truncate(os.path.getsize(target) // 2)
    rerun = subprocess.run(cmd, cwd=ROOT, env=worker_env(), capture_output=True, text=True, timeout=450)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    lines = {p: [line for line in rerun.stdout.splitlines() if line.startswith(f"[{p}]")] for p in (0, 1)}
    damaged = {p: [line for line in lines[p] if "CHECKPOINT DAMAGED" in line] for p in (0, 1)}
    assert len(damaged[1]) == 1 and "OUT_OF_RANGE" in damaged[1][0], rerun.stdout[-3000:]  # it read the bad file
    assert len(damaged[0]) == 1 and "unreadable on another process" in damaged[0][0], rerun.stdout[-3000:]
    for p in (0, 1):  # every process fell back to the same step, and finished
        assert any("RESUMING FROM AN OLDER CHECKPOINT: step 3" in line for line in lines[p]), rerun.stdout[-3000:]
        assert any("finished at step 6" in line for line in lines[p])
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    assert sum(n.startswith("6.damaged-") for n in names) == 1, names  # set aside once (by process 0)
    _, resumed, extras = rundir.load_training_params(workdir)
    assert extras["step"] == 6
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    redone = losses(workdir)  # the rerun's records come last and win
    assert redone == uninterrupted_losses
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6, 4, 5, 6]
