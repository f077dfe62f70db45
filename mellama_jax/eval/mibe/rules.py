"""Me-LLaMA's own scoring rules (`--matching mibe`), rule for rule, written from reading the reference.

Reference: BIDS-Xu-Lab/Me-LLaMA `src/tasks/vital_measure.py` (cited below as VM:<line>, at commit 08c893f of
that repository). docs/evaluation.md lists every rule with its line and says where it departs from a sound
metric; `--matching strict` (eval/parsing.py + eval/metrics.py) is the corrected scorer.

Nothing here is tuned to be "better": these functions reproduce the reference's verdicts, including its
quirks (case-sensitive letters, "yes" found inside "yes/no", character-level EmrQA F1).
"""
from __future__ import annotations

import functools
import string
import warnings
from typing import NamedTuple, Sequence

import numpy as np
from sklearn.metrics import f1_score

MISSING = "missing"  # the reference's label for "no choice found" (VM:121-122, VM:673-674)


# ---------------------------------------------------------------- single-label choice (VM:103-136)
def choice_key(choice: str, lower_case: bool) -> str:
    """How a choice (and the gold) is compared: lower-cased unless the task sets LOWER_CASE = False."""
    return choice.lower() if lower_case else choice


def first_choice_found(output: str, choices: Sequence[str], lower_case: bool) -> int | None:
    """Index of the first choice, in list order, that occurs as a substring of the stripped output.

    VM:107-109 strip (and lower-case when LOWER_CASE), VM:115-120 walk `choices` in order and stop at the
    first substring hit; None is the reference's "missing" (VM:121-122).
    """
    text = output.strip()
    if lower_case:
        text = text.lower()
    for i, choice in enumerate(choices):
        if choice_key(choice, lower_case) in text:
            return i
    return None


def exactly_one_choice_found(output: str, choices: Sequence[str]) -> int | None:
    """DDI2013: the one choice found (case-sensitive) in the stripped output; None when 0 or >= 2 are found.

    VM:667-676: no lower-casing; every choice is tested; anything but exactly one hit is "missing".
    """
    text = output.strip()
    hits = [i for i, choice in enumerate(choices) if choice in text]
    return hits[0] if len(hits) == 1 else None


def classification_metrics(golds: Sequence[str], preds: Sequence[str | None]) -> dict[str, float]:
    """acc, missing rate, weighted and macro F1 as the reference aggregates them (VM:124-181).

    `golds`/`preds` are compared as strings (VM:124); None becomes "missing" (VM:121-122). Both F1s average
    over the classes present in the gold labels only (`labels=list(set(golds))`, VM:151/159): a predicted
    class absent from gold adds no column, and "missing" only lowers the recall of the gold class.
    """
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold labels but {len(preds)} predictions")
    if not golds:
        return {"accuracy": 0.0, "missing": 0.0, "weighted_f1": 0.0, "macro_f1": 0.0}
    y_pred = [MISSING if p is None else p for p in preds]
    labels = sorted(set(golds))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's zero-division warnings, as the reference gets them
        weighted = f1_score(list(golds), y_pred, average="weighted", labels=labels)
        macro = f1_score(list(golds), y_pred, average="macro", labels=labels)
    return {"accuracy": float(np.mean([g == p for g, p in zip(golds, y_pred)])),
            "missing": float(np.mean([p == MISSING for p in y_pred])),
            "weighted_f1": float(weighted), "macro_f1": float(macro)}


# ---------------------------------------------------------------- HoC multi-label (VM:693-741)
def hoc_vector(output: str, choices: Sequence[str]) -> list[int]:
    """0/1 per choice: the choice occurs (case-sensitive) in the stripped output (VM:699-704)."""
    text = output.strip()
    return [int(choice in text) for choice in choices]


def hoc_metrics(gold_vectors: Sequence[Sequence[int]], pred_vectors: Sequence[Sequence[int]],
                choices: Sequence[str]) -> dict[str, float]:
    """Macro F1 over all label columns (VM:730-734) and each label's binary F1 (VM:708-709, 722-728).

    The reference calls `f1_score(preds, golds, average='macro')` with the arguments swapped (VM:734); F1 is
    symmetric in that swap, so the number is the same. Every column counts, also one absent from both gold
    and predictions (F1 0 there, sklearn's zero-division value). It declares a `micro_f1` (VM:719) that it
    never computes; neither do we.
    """
    golds = np.asarray(gold_vectors, dtype=np.int64).reshape(len(gold_vectors), len(choices))
    preds = np.asarray(pred_vectors, dtype=np.int64).reshape(len(pred_vectors), len(choices))
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["macro_f1"] = float(f1_score(preds, golds, average="macro"))
        for j, choice in enumerate(choices):
            out[f"f1[{choice}]"] = float(f1_score(golds[:, j], preds[:, j], average="binary"))
    return out


# ---------------------------------------------------------------- EmrQA (VM:586-625)
_PUNCT = frozenset(string.punctuation)


def emrqa_normalize(text: str) -> str:
    """lower → drop ASCII punctuation *and put a space between every remaining character* → collapse
    whitespace (VM:590-599). Words disappear: "chest pain" becomes "c h e s t p a i n"."""
    spaced = " ".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(spaced.split())


def emrqa_exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised character sequences are equal (VM:601-605)."""
    return float(emrqa_normalize(prediction) == emrqa_normalize(gold))


def emrqa_f1(prediction: str, gold: str) -> float:
    """F1 over the *sets* of normalised tokens — single characters (VM:613-625)."""
    pred_tokens, gold_tokens = emrqa_normalize(prediction).split(), emrqa_normalize(gold).split()
    if not pred_tokens or not gold_tokens:  # VM:617-618
        return float(pred_tokens == gold_tokens)
    common = set(pred_tokens) & set(gold_tokens)  # VM:619, a set: repeats do not count
    if not common:
        return 0.0
    precision, recall = len(common) / len(pred_tokens), len(common) / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------- ROUGE (VM:400, 462-477)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# evaluate's "rouge" scores these four by default, in this order; the bootstrap draws follow the order, so the
# fourth is computed too (and kept in the per-example scores) although the reference reports only three.
_EVALUATE_ROUGE_TYPES = ROUGE_TYPES + ("rougeLsum",)


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer  # noqa: PLC0415 - module-level import would load nltk for every eval import
    return rouge_scorer.RougeScorer(list(_EVALUATE_ROUGE_TYPES), use_stemmer=False)


def rouge_per_example(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L/Lsum F-measures as `evaluate.load("rouge")` computes them: rouge-score without stemming."""
    return {k: v.fmeasure for k, v in _rouge_scorer().score(reference, prediction).items()}


class _F(NamedTuple):
    fmeasure: float


def rouge_bootstrap_median(per_example: Sequence[dict[str, float]], seed: int) -> dict[str, float]:
    """ROUGE-1/2/L as the reference reports them: rouge-score's BootstrapAggregator (1000 resamples, its
    defaults, as `evaluate`'s rouge uses it) over the per-example scores, the median (`mid`) F-measure.

    The reference draws from NumPy's global generator unseeded, so its numbers move by ~1e-4 between runs;
    here the draws are seeded with `seed` (the run's --seed) and the global generator's state is restored
    afterwards. The aggregator resamples examples, never columns, so feeding only the F-measure gives the
    F-measure medians it would give with precision and recall beside them.
    """
    from rouge_score import scoring  # noqa: PLC0415 - see rouge_per_example
    aggregator = scoring.BootstrapAggregator()
    for scores in per_example:
        aggregator.add_scores({k: _F(scores[k]) for k in _EVALUATE_ROUGE_TYPES})
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        result = aggregator.aggregate()
    finally:
        np.random.set_state(state)
    return {k: float(result[k].mid.fmeasure) for k in ROUGE_TYPES}
