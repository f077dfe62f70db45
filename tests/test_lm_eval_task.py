"""The shipped lm-eval task (configs/lm_eval/mibe_medqa.yaml, MIBE-format MedQA from a local file) runs offline
through --include_path, and our backend scores it as lm-eval's own HF backend does on the same weights."""
import os

import numpy as np
import pytest
from hf_fixtures import make_hf_model

from mellama_jax.data.hf_tokenizer import save_hf_tokenizer
from mellama_jax.data.tokenizer import train_tokenizer
from mellama_jax.demo import corpus as demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = os.path.join(ROOT, "configs", "lm_eval")
LIMIT = 6


@pytest.fixture()
def demo_workdir(tmp_path, monkeypatch):
    """A working directory laid out as after `make demo` (the YAML's data_files is relative to it)."""
    data = tmp_path / "runs" / "demo" / "prepare" / "data"
    demo.write_demo_data(str(data), seed=0, scale=0.05)
    model_dir = str(tmp_path / "model")
    tok = train_tokenizer(demo.demo_texts(str(data)), model_dir, vocab_size=400, character_coverage=1.0)
    save_hf_tokenizer(tok, model_dir)
    make_hf_model(model_dir, vocab_size=400, max_position_embeddings=256, seed=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return model_dir


def test_shipped_mibe_task_runs_offline_and_matches_hflm(demo_workdir):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from mellama_jax.eval.lm_eval_adapter import MellamaJaxLM

    def run(lm):
        out = lm_eval.simple_evaluate(model=lm, tasks=["mibe_medqa"], task_manager=TaskManager(include_path=INCLUDE),
                                      limit=LIMIT, log_samples=True)
        samples = sorted(out["samples"]["mibe_medqa"], key=lambda s: s["doc_id"])
        return out["results"]["mibe_medqa"], [[r[0] for r in s["filtered_resps"]] for s in samples]

    ours, ours_ll = run(MellamaJaxLM(pretrained=demo_workdir, batch_size=4))
    ref, ref_ll = run(HFLM(pretrained=demo_workdir, device="cpu", dtype="float32", batch_size=4))
    assert len(ours_ll) == LIMIT and all(len(c) == 5 for c in ours_ll)  # five MedQA options each
    np.testing.assert_allclose(np.array(ours_ll, float), np.array(ref_ll, float), rtol=1e-4, atol=1e-3)
    assert ours["acc,none"] == ref["acc,none"] and ours["acc_norm,none"] == ref["acc_norm,none"]


def _task_docs(include_metadata=None):
    from lm_eval.tasks import TaskManager, get_task_dict
    tasks = get_task_dict(["mibe_medqa"], TaskManager(include_path=INCLUDE, metadata=include_metadata))
    return list(tasks["mibe_medqa"].test_docs())


def test_task_data_from_metadata_or_environment_from_any_directory(tmp_path, monkeypatch):
    """The task's data directory comes from --metadata data_dir, else $MELLAMA_MIBE_DATA, from any working
    directory; the rows are the file's records."""
    import json
    data = tmp_path / "somewhere" / "mibe"
    demo.write_demo_data(str(tmp_path / "demo"), seed=1, scale=0.05)
    data.mkdir(parents=True)
    src = tmp_path / "demo" / "eval" / "medqa.jsonl"
    (data / "medqa.jsonl").write_text(src.read_text())
    want = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("MELLAMA_MIBE_DATA", raising=False)
    docs = _task_docs({"data_dir": str(data)})
    assert [(d["query"], d["choices"], d["gold"]) for d in docs] == [(r["query"], r["choices"], r["gold"])
                                                                     for r in want]
    monkeypatch.setenv("MELLAMA_MIBE_DATA", str(data))
    assert len(_task_docs()) == len(want)


def test_task_without_data_is_one_line_naming_the_fix(demo_workdir, tmp_path):
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=ROOT, HF_DATASETS_OFFLINE="1", JAX_PLATFORMS="cpu")
    env.pop("MELLAMA_MIBE_DATA", None)
    env.pop("XLA_FLAGS", None)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "mellama_jax.commands.lm_eval", "run",
                        "--model", "mellama_jax", "--model_args", f"pretrained={demo_workdir}", "--include_path",
                        INCLUDE, "--tasks", "mibe_medqa", "--limit", "1"], cwd=empty, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "MELLAMA_MIBE_DATA" in r.stderr and "data_dir" in r.stderr
