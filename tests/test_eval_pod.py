"""Evaluation on a mesh and on several processes, resumed after a kill, and its input checks.

The reference is the same evaluation on one device (itself checked against transformers in
test_eval_model.py): sharded runs must give the same outputs token for token (fp32) and the same scores.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from hf_fixtures import make_hf_model

import mellama_jax
from mellama_jax.checkpoints.model_dir import save_model_checkpoint
from mellama_jax.commands import evaluate as evaluate_cli
from mellama_jax.convert.hf import load_hf_params
from mellama_jax.data.hf_tokenizer import save_hf_tokenizer
from mellama_jax.demo import mibe as synthetic
from mellama_jax.eval.runner import EvalConfig, evaluate
from mellama_jax.model.lora import LoraConfig, init_lora
from mellama_jax.parallel import MeshConfig, axis_rules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 400
TASKS = ("pubmedqa", "mednli", "pubmed_sum")  # choice by generation, choice by loglik, free text
MESHES = {"data2_tensor4": MeshConfig(data=2, fsdp=1, tensor=4), "fsdp8": MeshConfig(data=1, fsdp=8, tensor=1)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An HF directory (4 heads, 2 kv heads: tensor=4 splits heads, fsdp=8 the 64-wide embedding), a LoRA
    model checkpoint on the same base, and MIBE-format records."""
    from mellama_jax.data.tokenizer import train_tokenizer
    root = tmp_path_factory.mktemp("pod")
    hf_dir = str(root / "hf")
    make_hf_model(hf_dir, vocab_size=VOCAB, max_position_embeddings=192, seed=3)
    texts = [r["query"] + " " + synthetic.ideal_output(t, r) for t in TASKS for r in synthetic.make_records(t, 12, seed=7)]
    save_hf_tokenizer(train_tokenizer(texts, hf_dir, vocab_size=VOCAB, character_coverage=1.0), hf_dir)
    cfg, base = load_hf_params(hf_dir)
    lora_cfg = LoraConfig(rank=2, alpha=8.0, targets=("q_proj", "down_proj"))
    adapters = jax.tree.map(lambda a: np.asarray(a) + 0.05, init_lora(cfg, lora_cfg, jax.random.PRNGKey(1)))
    lora_dir = save_model_checkpoint(root / "lora", cfg, base, lora_cfg=lora_cfg, adapters=adapters,
                                     tokenizer_dir=hf_dir)
    data = str(root / "data")
    synthetic.write_synthetic_benchmark(data, per_task=4, tasks=TASKS, seed=1)
    return {"hf": hf_dir, "lora": lora_dir, "data": data}


RUNS = {"generate": ("pubmedqa", "pubmed_sum"), "loglik": ("mednli",)}  # a choice and free text; choice scoring


def _run(model, data):
    out = {}
    for mode, tasks in RUNS.items():
        cfg = EvalConfig(tasks=tasks, data_dir=data, mode=mode, max_new_tokens=8, batch_size=4, max_length=160,
                         progress=False)
        out.update({r.task.name: ([(e.output, e.prediction) for e in r.examples], r.metrics_by_matching)
                    for r in evaluate(model, cfg)})
    return out


@pytest.fixture(scope="module")
def one_device(tiny):
    """The reference: each model evaluated on one device."""
    results = {}

    def get(kind):
        if kind not in results:
            model = mellama_jax.load(tiny[kind], scan_layers=False)
            assert (model.lora_config is not None) == (kind == "lora")
            results[kind] = _run(model, tiny["data"])
            assert any(out for out, _ in results[kind]["pubmed_sum"][0])  # the model does write something
        return results[kind]
    return get


@pytest.mark.parametrize("kind, mesh", [("hf", "data2_tensor4"), ("hf", "fsdp8"), ("lora", "data2_tensor4")])
def test_sharded_evaluation_equals_one_device(tiny, one_device, kind, mesh):
    want = one_device(kind)
    mesh_cfg = MESHES[mesh]
    with axis_rules(mesh_cfg.rules):
        sharded = mellama_jax.load(tiny[kind], mesh=mesh_cfg, scan_layers=False)
        leaf = sharded.params["layers_0"]["attn"]["q_proj"]["kernel"]
        assert len(leaf.sharding.device_set) == 8 and not leaf.sharding.is_fully_replicated
        assert _run(sharded, tiny["data"]) == want


def _report(out_dir):
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    summary.pop("created")
    for t in summary["tasks"].values():
        t.pop("seconds")
    examples = {}
    for name in sorted(os.listdir(os.path.join(out_dir, "examples"))):
        with open(os.path.join(out_dir, "examples", name)) as f:
            examples[name] = f.read()
    return summary, examples


def _flags(tiny, out_dir, *extra, tasks=("pubmedqa", "pubmed_sum")):
    return ["--model", tiny["hf"], "--tasks", ",".join(tasks), "--data_dir", tiny["data"], "--out_dir", out_dir,
            "--max_new_tokens", "8", "--max_length", "160", "--batch_size", "2", "--no_progress", *extra]


class _Counting:
    """The loaded model, counting decode and scoring calls; optionally Ctrl-C at call number `interrupt_at`."""

    def __init__(self, model, interrupt_at=None):
        self.model, self.calls, self.interrupt_at = model, 0, interrupt_at

    def __getattr__(self, name):
        return getattr(self.model, name)

    def _count(self):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt

    def generate(self, *args, **kwargs):
        self._count()
        return self.model.generate(*args, **kwargs)

    def logits(self, *args, **kwargs):
        self._count()
        return self.model.logits(*args, **kwargs)


@pytest.mark.parametrize("mode", ["generate", "loglik"])
def test_killed_evaluation_resumes_to_the_report_of_an_uninterrupted_run(tiny, tmp_path, monkeypatch, mode):
    real_load = evaluate_cli.load
    models = []

    def load(*args, interrupt_at=None, **kwargs):
        models.append(_Counting(real_load(*args, **kwargs), interrupt_at))
        return models[-1]

    flags = ["--mode", mode]
    monkeypatch.setattr(evaluate_cli, "load", load)
    assert evaluate_cli.main(_flags(tiny, str(tmp_path / "whole"), *flags)) == 0
    full_calls = models[-1].calls
    out = str(tmp_path / "resumed")
    # 2 tasks x 2 batches of 2 records (loglik: pubmedqa's 12 choice requests make 6 batches)
    monkeypatch.setattr(evaluate_cli, "load", lambda *a, **k: load(*a, interrupt_at=3, **k))
    assert evaluate_cli.main(_flags(tiny, out, *flags)) == 130
    assert not os.path.exists(out) and os.listdir(out + ".partial")
    monkeypatch.setattr(evaluate_cli, "load", load)
    assert evaluate_cli.main(_flags(tiny, out, *flags)) == 0
    assert models[-1].calls == full_calls - 2  # the two batches finished before the kill are not redone
    assert _report(out) == _report(str(tmp_path / "whole"))
    assert not os.path.exists(out + ".partial")


def test_partial_results_of_another_command_are_refused(tiny, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "r")
    monkeypatch.setattr(evaluate_cli, "load", lambda *a, **k: _Counting(mellama_jax.load(*a, **k), 1))
    assert evaluate_cli.main(_flags(tiny, out)) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert evaluate_cli.main(_flags(tiny, out, "--seed", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert "partial results of another evaluation (it differs in seed)" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("mesh_flags, message", [
    (["--config.mesh.data=3"], "do not divide the 8 available devices"),
    (["--config.mesh.tensor=8", "--config.mesh.fsdp=1"], "tensor=8 does not divide the model's num_heads=4"),
    (["--config.mesh.data=8", "--config.mesh.fsdp=1", "--batch_size", "8"],
     "has 4 records, fewer than the mesh's 8 data-parallel replicas"),
    (["--config.mesh.data=4"], "--batch_size is 2"),  # fsdp: the other 2 devices, 8 replicas
    (["--config.mesh.tensr=2"], "--config.mesh.tensr: unknown mesh field"),
])
def test_bad_mesh_is_one_line_before_any_weight_is_read(tiny, tmp_path, capsys, mesh_flags, message):
    # The weights of this model directory are garbage: reading them would fail with another message.
    model = tmp_path / "model"
    model.mkdir()
    for name in os.listdir(tiny["hf"]):
        if not name.endswith(".safetensors"):
            (model / name).write_bytes(open(os.path.join(tiny["hf"], name), "rb").read())
    (model / "model.safetensors").write_bytes(b"not a safetensors file")
    flags = _flags(dict(tiny, hf=str(model)), str(tmp_path / "out"), *mesh_flags)
    assert evaluate_cli.main(flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "out.partial")


def test_two_processes_equal_one(tiny, tmp_path, monkeypatch):
    one = str(tmp_path / "one")
    assert evaluate_cli.main(_flags(tiny, one, "--batch_size", "4", tasks=("pubmedqa",))) == 0
    two = str(tmp_path / "two")
    cmd = [sys.executable, os.path.join(REPO, "launch", "local.py"), "--num_processes", "2",
           "--devices_per_process", "4", "--", "-m", "mellama_jax.commands.evaluate",
           *_flags(tiny, two, "--batch_size", "4", tasks=("pubmedqa",)),
           "--config.mesh.data=2", "--config.mesh.tensor=2", "--config.mesh.fsdp=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _report(two) == _report(one)
