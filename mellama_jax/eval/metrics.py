"""Metric functions of the medical benchmark, built on the libraries the field reports with.

scikit-learn (accuracy, macro-F1, multi-label macro-F1), seqeval (entity F1), rouge-score (ROUGE-1/2/L);
exact match and token F1 follow the SQuAD evaluation script. All values are fractions in [0, 1].

"No prediction parsed" (a `None` prediction) is always wrong. For single-label macro-F1 it becomes the
label NO_PREDICTION, which is *not* one of the averaged classes: it counts as a missed example of its gold
class (lowering that class's recall) but never adds a phantom class of its own. The averaged classes are
the labels that occur in the gold answers or the parsed predictions — scikit-learn's own default label
set, minus the sentinel. Multi-label macro-F1 averages over the same kind of label set.
"""
from __future__ import annotations

import collections
import functools
import warnings
from typing import Hashable, Sequence

import numpy as np
from seqeval import metrics as seqeval_metrics
from sklearn.metrics import f1_score

from mellama_jax.eval.parsing import normalize_answer

NO_PREDICTION = "<no prediction>"


def _with_sentinel(preds: Sequence[Hashable | None]) -> list:
    return [NO_PREDICTION if p is None else p for p in preds]


def accuracy(golds: Sequence[Hashable], preds: Sequence[Hashable | None]) -> float:
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold labels but {len(preds)} predictions")
    if not golds:
        return 0.0
    return float(np.mean([p is not None and p == g for g, p in zip(golds, preds)]))


def averaged_labels(golds: Sequence[Hashable], preds: Sequence[Hashable | None]) -> list:
    """The classes macro-F1 averages over: those seen in gold or parsed predictions (never the sentinel)."""
    seen = {g for g in golds} | {p for p in preds if p is not None}
    seen.discard(NO_PREDICTION)
    return sorted(seen, key=str)


def macro_f1(golds: Sequence[Hashable], preds: Sequence[Hashable | None]) -> float:
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold labels but {len(preds)} predictions")
    if not golds:
        return 0.0
    labels = averaged_labels(golds, preds)
    return float(f1_score(list(golds), _with_sentinel(preds), labels=labels, average="macro", zero_division=0))


def multilabel_macro_f1(golds: Sequence[Sequence[int]], preds: Sequence[Sequence[int] | None],
                        num_labels: int) -> float:
    """Macro-F1 over label columns seen in gold or predictions; an unparsed prediction predicts nothing."""
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold label sets but {len(preds)} predictions")
    y_true = np.zeros((len(golds), num_labels), np.int64)
    y_pred = np.zeros_like(y_true)
    for i, (g, p) in enumerate(zip(golds, preds)):
        y_true[i, list(g)] = 1
        if p is not None:
            y_pred[i, list(p)] = 1
    columns = [j for j in range(num_labels) if y_true[:, j].any() or y_pred[:, j].any()]
    if not columns:
        return 0.0
    return float(f1_score(y_true, y_pred, labels=columns, average="macro", zero_division=0))


def exact_match(pred: str | None, golds: Sequence[str]) -> float:
    if pred is None:
        return 0.0
    return float(max(normalize_answer(pred) == normalize_answer(g) for g in golds))


def token_f1(pred: str | None, golds: Sequence[str]) -> float:
    if pred is None:
        return 0.0
    return float(max(_token_f1(normalize_answer(pred).split(), normalize_answer(g).split()) for g in golds))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def entity_scores(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str] | None]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 (seqeval, conlleval rules); unparsed = no entities."""
    y_true = [list(g) for g in gold_tags]
    y_pred = [list(p) if p is not None else ["O"] * len(g) for g, p in zip(gold_tags, pred_tags)]
    for i, (g, p) in enumerate(zip(y_true, y_pred)):
        if len(g) != len(p):
            raise ValueError(f"example {i}: {len(g)} gold tags but {len(p)} predicted tags")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns when a side has no entities at all
        return {"precision": float(seqeval_metrics.precision_score(y_true, y_pred, zero_division=0)),
                "recall": float(seqeval_metrics.recall_score(y_true, y_pred, zero_division=0)),
                "f1": float(seqeval_metrics.f1_score(y_true, y_pred, zero_division=0))}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_per_example(pred: str | None, reference: str) -> dict[str, float]:
    """F-measures of ROUGE-1/2/L (rouge-score, Porter stemming as in the summarization literature)."""
    return {k: v.fmeasure for k, v in _rouge_scorer().score(reference, pred or "").items()}


def rouge(preds: Sequence[str | None], references: Sequence[str]) -> dict[str, float]:
    """Mean per-example ROUGE F-measures."""
    if len(preds) != len(references):
        raise ValueError(f"{len(references)} references but {len(preds)} predictions")
    if not references:
        return {k: 0.0 for k in ROUGE_TYPES}
    rows = [rouge_per_example(p, r) for p, r in zip(preds, references)]
    return {k: float(np.mean([row[k] for row in rows])) for k in ROUGE_TYPES}


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer  # noqa: PLC0415 - loads nltk; needed only for summarization metrics
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def top_k_accuracy(hit_ranks: Sequence[int | None], ks: Sequence[int]) -> dict[str, float]:
    """Fraction of examples whose first correct candidate is ranked <= k (ranks are 1-based; None = miss)."""
    if not hit_ranks:
        return {f"top{k}_accuracy": 0.0 for k in ks}
    return {f"top{k}_accuracy": float(np.mean([r is not None and r <= k for r in hit_ranks])) for k in ks}
