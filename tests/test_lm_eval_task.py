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
