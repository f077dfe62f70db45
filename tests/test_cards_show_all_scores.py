"""Model cards and the recipe report show every score an evaluation computed (both matching rules) and name
the data it ran on (issue #24: the card said "Not run with the strict matching rule" while summary.json held
strict scores; the report showed only `mibe` and was titled "demo MIBE tasks")."""
from mellama_jax.config import preset
from mellama_jax.convert.model_card import model_card
from mellama_jax.recipe.report import _eval_data, eval_comparison

SCORES = {"medqa": {"mibe": 0.6125, "strict": 0.4375}, "pubmedqa": {"mibe": 0.7311, "strict": 0.6907}}


def _summary(matching, data_dir="/data/mibe_release", shift=0.0):
    """A summary.json as mellama_jax.eval writes it: one run, its outputs scored under both rules."""
    tasks = {}
    for task, by_rule in SCORES.items():
        both = {r: {"acc": v + shift, "no_prediction_rate": 0.0} for r, v in by_rule.items()}
        tasks[task] = {"family": "qa", "data_file": f"{data_dir}/{task}.jsonl", "num_examples": 80,
                       "num_no_prediction": 0, "primary_metric": "acc", "metrics": both[matching],
                       "metrics_by_matching": both}
    return {"model": "m", "settings": {"matching": matching, "template": "llama2_chat", "max_new_tokens": 16,
                                       "data_dir": data_dir}, "tasks": tasks}


def test_model_card_shows_both_rules_from_one_run_and_the_data():
    card = model_card(preset("tiny"), run=None, evals=[_summary("mibe")], chat_template=None, lora="",
                      tokenizer_sha256=None, model_name="m")
    assert "Not scored" not in card and "Not run" not in card
    for task, by_rule in SCORES.items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {task} |"))
        assert f"{by_rule['mibe']:.4f}" in row and f"{by_rule['strict']:.4f}" in row and f"`{task}.jsonl`" in row
    assert "Test data: `/data/mibe_release`" in card


def test_report_shows_both_rules_for_base_and_tuned_and_names_the_data():
    base, tuned = _summary("mibe", shift=-0.1), _summary("mibe")
    table = eval_comparison(base, tuned)
    for task, by_rule in SCORES.items():
        for rule, value in by_rule.items():
            row = next(line for line in table.splitlines() if line.startswith(f"| {task} | acc | {rule} |"))
            assert f"{value:.4f}" in row and f"{value - 0.1:.4f}" in row
    assert "/data/mibe_release" in _eval_data(base, tuned) and "medqa.jsonl" in _eval_data(base, tuned)
