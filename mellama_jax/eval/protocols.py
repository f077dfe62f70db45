"""Evaluation protocols beyond zero-shot greedy decoding, as MEDITRON reports them.

* Few-shot (`num_fewshot` k, `fewshot_seeds` N): each test record's prompt is preceded by k solved
  examples drawn from the task's *train* split (a directory the user passes, read like the test data), each
  rendered as its `query` followed by its answer and a blank line. Shots are drawn per record with a
  generator seeded by (seed, task, record index), never the record itself (same `query`), so a run is
  reproducible and every record sees different shots. The whole task runs once per seed; the report gives
  each metric's mean and standard deviation over the seeds.
* Self-consistency (`self_consistency` n, `temperature` t): every multiple-choice record is decoded n times
  by sampling at temperature t (decode seeds derived from `seed`); each sample is judged, and the most
  frequent parsed prediction wins (ties: the one reached first; unparsed samples do not vote). Tasks that
  are not single-answer multiple choice keep greedy decoding, and the report says so.

The report (eval/report.py) names the protocol of every number (`TaskResult.protocol`).
"""
from __future__ import annotations

import collections
import logging
import random
from typing import Any, Hashable, Sequence

from mellama_jax.eval.records import EvalRecord
from mellama_jax.eval.tasks.base import ChoiceTask, Task

log = logging.getLogger(__name__)

SHOT_SEPARATOR = "\n\n"


def shot_answer(task: Task, record: EvalRecord) -> str:
    """The solved answer of a shot: the gold choice of choice tasks, otherwise the record's `answer`."""
    if isinstance(task, ChoiceTask):
        return task.choices(record)[task.gold_index(record)]
    return record.answer if isinstance(record.answer, str) else record.answer[0]


def draw_shots(pool: Sequence[EvalRecord], k: int, *, seed: int, task: str, index: int,
               exclude_query: str) -> list[EvalRecord]:
    """k distinct pool records for test record `index` (never one with the same query), reproducibly."""
    candidates = [r for r in pool if r.query != exclude_query]
    if len(candidates) < k:
        raise ValueError(f"task {task}: {k}-shot needs {k} train records besides the test record, the train split "
                         f"has {len(candidates)}")
    return random.Random(f"{seed}:{task}:{index}").sample(candidates, k)


def fewshot_prompt(task: Task, record: EvalRecord, shots: Sequence[EvalRecord]) -> str:
    parts = [f"{s.query} {shot_answer(task, s)}".rstrip() for s in shots]
    return SHOT_SEPARATOR.join(parts + [task.prompt(record)])


def check_leakage(task: str, pool: Sequence[EvalRecord], records: Sequence[EvalRecord], pool_file: str) -> None:
    """Warn when train records repeat test queries (Me-LLaMA's MedQA/MedMCQA "train" splits are the test set)."""
    test_queries = {r.query for r in records}
    shared = sum(r.query in test_queries for r in pool)
    if shared:
        log.warning("%s: %d of %d few-shot train records repeat a test query (%s); they are never used as shots "
                    "for that same record, but the split overlaps the test set", task, shared, len(pool), pool_file)


def majority(predictions: Sequence[Any]) -> Any:
    """The most frequent parsed prediction (None = unparsed, does not vote); ties go to the first reached."""
    votes = collections.Counter()
    first_seen: dict[Hashable, int] = {}
    for i, p in enumerate(predictions):
        if p is None:
            continue
        key = _hashable(p)
        votes[key] += 1
        first_seen.setdefault(key, i)
    if not votes:
        return None
    best = max(votes, key=lambda k: (votes[k], -first_seen[k]))
    return predictions[first_seen[best]]


def _hashable(x: Any) -> Hashable:
    if isinstance(x, list):
        return tuple(_hashable(v) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    return x


def describe(num_fewshot: int, fewshot_seeds: int, self_consistency: int, temperature: float,
             mode: str, applies_self_consistency: bool) -> str:
    """One line naming how a task's numbers were produced."""
    shots = f"{num_fewshot}-shot (mean ± std over {fewshot_seeds} seeds)" if num_fewshot else "zero-shot"
    if mode == "loglik":
        how = "log-likelihood choice"
    elif self_consistency > 1 and applies_self_consistency:
        how = f"self-consistency ({self_consistency} samples at T={temperature:g}, majority vote)"
    else:
        how = "greedy"
    return f"{shots}, {how}"
