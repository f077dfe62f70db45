"""The prompt template an instruction-tuned model was trained with travels with it (training_run.json of an
exported model checkpoint, the run config of a workdir); `mellama_jax.evaluate` uses it unless --template."""
import json

import jax
from hf_fixtures import train_small_sentencepiece

import mellama_jax
from mellama_jax import evaluate as evaluate_cli
from mellama_jax.checkpoints.model_dir import save_model_checkpoint
from mellama_jax.checkpoints.rundir import trained_template
from mellama_jax.config import preset
from mellama_jax.model import params as P


def test_trained_template_from_a_run_config():
    sft = {"data": {"kind": "sft", "mixture": {"instruct": {"template": "llama2_chat"}}}}
    assert trained_template(sft) == "llama2_chat"
    assert trained_template({"data": {"kind": "sft", "mixture": {"instruct": {}}}}) == "me_llama"  # the default
    assert trained_template({"data": {"kind": "mixture"}}) is None and trained_template(None) is None


def test_evaluate_defaults_to_the_recorded_template(tmp_path, capsys):
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    train_small_sentencepiece(str(tok_dir))
    cfg = preset("tiny").replace(vocab_size=100)  # the test tokenizer's size
    params = P.init_params(cfg, jax.random.key(0))
    plain = save_model_checkpoint(tmp_path / "plain", cfg, params, tokenizer_dir=str(tok_dir))
    tuned = save_model_checkpoint(tmp_path / "tuned", cfg, params, tokenizer_dir=str(tok_dir),
                                  training_run={"step": 3, "config": {"data": {
                                      "kind": "sft", "mixture": {"instruct": {"template": "alpaca"}}}}})
    assert mellama_jax.load(plain).template is None and mellama_jax.load(tuned).template == "alpaca"

    data = tmp_path / "data"
    data.mkdir()
    (data / "medqa.jsonl").write_text(json.dumps({"query": "the patient was given\nA. aspirin\nB. metformin\nAnswer:",
                                                  "answer": "aspirin", "choices": ["aspirin", "metformin"],
                                                  "gold": 0}) + "\n")
    common = ["--tasks", "medqa", "--data_dir", str(data), "--max_new_tokens", "2", "--no_progress"]
    runs = {"tuned": [], "explicit": ["--template", "none"], "plain": []}
    for name, extra in runs.items():
        model = tuned if name != "plain" else plain
        assert evaluate_cli.main(["--model", model, "--out_dir", str(tmp_path / f"eval_{name}"), *common, *extra]) == 0
    settings = {n: json.load(open(tmp_path / f"eval_{n}" / "summary.json"))["settings"]["template"] for n in runs}
    assert settings == {"tuned": "alpaca", "explicit": "none", "plain": "none"}
    assert "template: alpaca (recorded with the model" in capsys.readouterr().err
