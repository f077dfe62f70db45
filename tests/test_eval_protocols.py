"""Few-shot and self-consistency protocols, driven by scripted stand-in models (the protocol logic);
tests/test_eval_model.py runs them on a real tiny model for determinism under a seed."""
import collections
import json
import random

import numpy as np
import pytest
from test_eval_runner import CharTokenizer

from mellama_jax.demo import mibe as synthetic
from mellama_jax.eval.protocols import majority
from mellama_jax.eval.report import markdown_table, summary_dict
from mellama_jax.eval.runner import EvalConfig, evaluate


class EchoModel:
    """Greedy or sampled: the answer is a function of (prompt, seed) only; every call is recorded."""

    class config:
        max_position_embeddings = 100_000

    def __init__(self, answers=("yes", "no", "maybe", "unsure")):
        self.tokenizer = CharTokenizer()
        self.answers = answers
        self.calls = []  # (prompt text, output text, temperature)

    def generate(self, prompt_ids, *, max_new_tokens, temperature, eos_id, seed=None):
        assert (seed is None) == (temperature == 0.0)
        out = []
        for ids in prompt_ids:
            prompt = self.tokenizer.decode(ids)
            text = random.Random(f"{seed}:{prompt}").choice(self.answers)
            self.calls.append((prompt, text, temperature))
            out.append(self.tokenizer.encode(text, bos=False) + [eos_id])
        return out


@pytest.fixture()
def dirs(tmp_path):
    test, train = str(tmp_path / "test"), str(tmp_path / "train")
    synthetic.write_synthetic_benchmark(test, per_task=5, seed=1, tasks=("pubmedqa", "emrqa"))
    # The train split in the released layout: <task>/train.jsonl; one record repeats a test query.
    pool = synthetic.make_records("pubmedqa", 6, seed=9)
    with open(f"{test}/pubmedqa.jsonl") as f:
        leaked = json.loads(f.readline())
    (tmp_path / "train" / "pubmedqa").mkdir(parents=True)
    (tmp_path / "train" / "pubmedqa" / "train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in pool + [leaked]))
    return test, train, leaked


def _run(model, test, train, **kw):
    cfg = EvalConfig(tasks=("pubmedqa",), data_dir=test, fewshot_dir=train, progress=False, batch_size=2, **kw)
    (result,) = evaluate(model, cfg)
    return cfg, result


def test_fewshot_prompts_draw_k_train_examples_per_record_reproducibly(dirs):
    test, train, leaked = dirs
    model = EchoModel()
    cfg, result = _run(model, test, train, num_fewshot=2, fewshot_seeds=3)
    with open(f"{train}/pubmedqa/train.jsonl") as f:
        pool = [json.loads(line) for line in f]
    shots_text = {r["query"] + " " + r["answer"]: r for r in pool}
    prompts = [p for p, _, _ in model.calls]
    assert len(prompts) == 3 * 5  # every record once per seed
    for prompt in prompts:
        blocks = prompt.split("\n\n")
        used = [b for b in blocks if b in shots_text]
        assert len(used) == 2, prompt
        query = prompt[len("\n\n".join(used)) + 2:]
        assert all(shots_text[u]["query"] != query for u in used)  # never the record itself (the leaked one)
    # The three seeds draw different shots; a rerun draws the same ones.
    assert len(set(prompts)) > 5
    again = EchoModel()
    _run(again, test, train, num_fewshot=2, fewshot_seeds=3)
    assert [p for p, _, _ in again.calls] == prompts
    # Mean and spread over the seeds; the report names the protocol.
    for m in ("mibe", "strict"):
        per_seed = np.array([s[m]["accuracy"] for s in result.per_seed])
        assert result.metrics_by_matching[m]["accuracy"] == pytest.approx(per_seed.mean())
        assert result.std_by_matching[m]["accuracy"] == pytest.approx(per_seed.std())
    assert result.protocol == "2-shot (mean ± std over 3 seeds), greedy"
    table = markdown_table(summary_dict([result], cfg, "echo"))
    assert "| pubmedqa | qa | 5 | 2-shot (mean ± std over 3 seeds), greedy | accuracy |" in table and " ± " in table


def test_fewshot_needs_its_train_split(dirs, tmp_path):
    test, _, _ = dirs
    with pytest.raises(FileNotFoundError, match="no train data for task 'pubmedqa'"):
        _run(EchoModel(), test, str(tmp_path), num_fewshot=1)
    with pytest.raises(ValueError, match="num_fewshot needs fewshot_dir"):
        EvalConfig(tasks=("pubmedqa",), data_dir=test, num_fewshot=1)


def test_self_consistency_is_the_majority_of_the_samples(dirs):
    test, train, _ = dirs
    model = EchoModel()
    cfg, result = _run(model, test, train, self_consistency=5, temperature=0.7, seed=4, matching="strict")
    assert result.protocol == "zero-shot, self-consistency (5 samples at T=0.7, majority vote)"
    samples = collections.defaultdict(list)
    for prompt, text, temperature in model.calls:
        assert temperature == 0.7
        samples[prompt].append(text)
    assert sorted(len(v) for v in samples.values()) == [5] * 5
    for e in result.examples:
        texts = samples[e.prompt]
        parsed = [t if t in ("yes", "no", "maybe") else None for t in texts]  # strict: exact labels only
        counts = collections.Counter(p for p in parsed if p is not None)
        top = max(counts.values()) if counts else 0
        want = next((p for p in parsed if p is not None and counts[p] == top), None)
        assert e.prediction == want and e.scores["votes"] == top
    # Deterministic under the seed, different under another.
    again = EchoModel()
    _run(again, test, train, self_consistency=5, temperature=0.7, seed=4, matching="strict")
    assert again.calls == model.calls
    other = EchoModel()
    _run(other, test, train, self_consistency=5, temperature=0.7, seed=5, matching="strict")
    assert other.calls != model.calls


def test_self_consistency_leaves_free_text_tasks_greedy(dirs):
    test, _, _ = dirs
    cfg = EvalConfig(tasks=("emrqa",), data_dir=test, self_consistency=3, temperature=1.0, progress=False)
    model = EchoModel(answers=("5 mg", "10 mg"))
    (result,) = evaluate(model, cfg)
    assert result.protocol == "zero-shot, greedy"
    assert {t for _, _, t in model.calls} == {0.0} and len(model.calls) == 5


def test_majority_rule():
    assert majority(["no", "yes", "yes", None, "no"]) == "no"  # tie: the first reached
    assert majority([None, None]) is None
    assert majority([[1, 2], [2], [1, 2]]) == [1, 2]
