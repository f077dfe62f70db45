"""BERTScore of summaries as Me-LLaMA's scorer computes it (vital_measure.py VM:479-494), offline only.

The reference calls `evaluate.load("evaluate-metric/bertscore").compute(predictions, references,
model_type="bert-base-multilingual-cased")` and reports the mean F1 over examples. `evaluate` wraps the
`bert-score` package's `BERTScorer` with its defaults: layer `model2layers[model_type]` (9 for that model), no
idf weighting, no baseline rescaling, batch size 64. We call the same `BERTScorer` with the same settings, on a
model *directory the user gives* (`--bertscore_model`): nothing is downloaded, and without it BERTScore is not
computed (the report says so). bert-score and torch are optional (the `bertscore` extra), imported on first use.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

REFERENCE_MODEL = "bert-base-multilingual-cased"  # VM:486


def _bert_score():
    try:
        import bert_score  # noqa: PLC0415 - optional and slow (torch): only summaries with --bertscore_model need it
    except ImportError as e:
        raise ImportError("BERTScore needs the bert-score package, as Me-LLaMA's scorer does: "
                          "pip install 'mellama_jax[bertscore]'") from e
    return bert_score


def reference_num_layers() -> int:
    """The layer bert_score (hence the reference) takes for bert-base-multilingual-cased."""
    return int(_bert_score().utils.model2layers[REFERENCE_MODEL])


@functools.lru_cache(maxsize=1)
def _scorer(model_dir: str, num_layers: int):
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"--bertscore_model {model_dir}: not a directory; give a local copy of "
                                f"{REFERENCE_MODEL} (nothing is downloaded)")
    return _bert_score().BERTScorer(model_type=model_dir, num_layers=num_layers)


def bertscore_f1(predictions: Sequence[str], references: Sequence[str], model_dir: str,
                 num_layers: int | None = None) -> float:
    """Mean BERTScore F1 of predictions against references (VM:492-494), with bert_score's defaults."""
    if not predictions:
        return 0.0
    layers = reference_num_layers() if num_layers is None else num_layers
    _, _, f1 = _scorer(model_dir, layers).score(list(predictions), list(references))
    return float(f1.mean())
