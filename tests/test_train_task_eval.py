"""Benchmark tasks evaluated during training: a tiny run (8-device mesh) logs task metrics under both matchings
to metrics.jsonl and TensorBoard, and they equal an offline evaluation of the saved checkpoint through
`mellama_jax.load` + eval.runner — for full-parameter training and for LoRA (adapters applied)."""
import json
import os

import pytest

from mellama_jax import parallel
from mellama_jax.api import load
from mellama_jax.config import ConfigError, config_module
from mellama_jax.data.tokenizer import Tokenizer, train_tokenizer
from mellama_jax.demo import mibe as synthetic
from mellama_jax.eval.runner import EvalConfig, evaluate
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("pubmedqa", "hoc")
VOCAB = 320


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("assets")
    data = str(d / "tasks")
    synthetic.write_synthetic_benchmark(data, per_task=4, seed=3, tasks=TASKS)
    texts = [r["query"] + " " + r["answer"] for t in TASKS for r in synthetic.make_records(t, 16, seed=5)]
    train_tokenizer(texts, str(d / "tok"), vocab_size=VOCAB, character_coverage=1.0)
    return data, str(d / "tok" / "tokenizer.model")


def config(assets, **overrides):
    data, tok = assets
    c = config_module(os.path.join(ROOT, "configs", "tiny_pretrain.py")).get_config()
    values = {"model.vocab_size": VOCAB, "model.max_position_embeddings": 256, "train.steps": 4,
              "checkpoint.every_steps": 0, "eval.every_steps": 0, "log.progress_bar": False, "log.every_steps": 2,
              "log.peak_flops_per_device": 1e11, "data.tokenizer": tok, "eval.tasks": ",".join(TASKS),
              "eval.task_data_dir": data, "eval.task_every_steps": 2, "eval.task_limit": 3,
              "eval.task_max_new_tokens": 6, **overrides}
    c.update_from_flattened_dict(values)
    return TrainConfig.from_config_dict(c)


def _offline(workdir, cfg):
    model = load(workdir, mesh=parallel.make_mesh(cfg.mesh))
    model.tokenizer = Tokenizer(cfg.data.tokenizer)  # a synthetic-data workdir carries no tokenizer
    run_cfg = EvalConfig(tasks=TASKS, data_dir=cfg.eval.task_data_dir, limit=3, max_new_tokens=6, progress=False)
    results = evaluate(model, run_cfg)
    metrics = {f"{r.task.name}/{m}/{k}": v for r in results
               for m, values in r.metrics_by_matching.items() for k, v in values.items() if "[" not in k}
    return metrics, [[e.output for e in r.examples] for r in results]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_task_metrics_are_logged_and_match_offline_evaluation(assets, tmp_path, lora):
    extra = {"train.lora.rank": 4, "train.lora.targets": "q_proj,v_proj,down_proj",
             "optim.learning_rate": 3e-2} if lora else {}
    cfg = config(assets, **extra)
    workdir = str(tmp_path / "run")
    result = train(cfg, workdir)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    logged = [r for r in records if r["kind"] == "tasks"]
    assert [r["step"] for r in logged] == [2, 4]
    last = logged[-1]
    for key in ("pubmedqa/mibe/accuracy", "pubmedqa/strict/accuracy", "pubmedqa/mibe/missing",
                "hoc/mibe/macro_f1", "hoc/strict/macro_f1"):
        assert 0.0 <= last[key] <= 1.0, key
    assert last["seconds"] > 0 and result.eval_metrics["tasks/seconds"] == last["seconds"]
    assert any(e.startswith("events.out.tfevents") for e in os.listdir(os.path.join(workdir, "tensorboard")))
    # The in-loop numbers are those of the saved parameters scored offline (LoRA: merged adapters).
    offline, outputs = _offline(workdir, cfg)
    assert {k: last[k] for k in offline} == pytest.approx(offline)
    assert [[e.output for e in r.examples] for r in result.task_results] == outputs
    assert any(o for task_outputs in outputs for o in task_outputs)  # something was generated


def test_bad_task_records_fail_before_training(assets, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pubmedqa.jsonl").write_text(json.dumps({"query": "q", "choices": ["yes", "no"], "gold": 9}) + "\n")
    (bad / "hoc.jsonl").write_text(json.dumps({"query": "q", "gold": [1]}) + "\n")
    with pytest.raises(ConfigError, match=r"eval.tasks=.*pubmedqa\.jsonl:1: field 'gold': 9 is out of range"):
        train(config(assets, **{"eval.task_data_dir": str(bad)}), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")  # failed before writing anything
