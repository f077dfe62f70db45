"""Diagnosis from a case description (NEJM-style case challenges): top-k accuracy.

Me-LLaMA did not publish its protocol (and its scorer has no diagnosis task, so "mibe" here is our loose
variant, not a reference rule); ours, fixed so results are comparable run to run:

1. Prompt: the record's `query` (the case) followed by DIAGNOSIS_INSTRUCTION, which asks for the
   `max_k` most likely diagnoses, most likely first, one per numbered line.
2. Candidates: the numbered / bulleted lines of the output in order (parsing.ranked_items); without any
   list markers the first line is read as a comma/semicolon-separated list. Only the first `max_k` count.
3. Gold: `answer` — the final diagnosis, or a list of accepted names (synonyms). With `choices` and an
   integer `gold`, choices[gold] is the diagnosis and `answer` may add synonyms.
4. A candidate is correct when, after SQuAD normalisation (lower case, no punctuation or articles), it
   equals an accepted name (strict), or contains one (mibe). The example's rank is the position of the
   first correct candidate; top-k accuracy is the fraction of examples with rank <= k, for k in `ks`.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from mellama_jax.eval import metrics as M
from mellama_jax.eval.parsing import normalize_answer, ranked_items
from mellama_jax.eval.records import EvalRecord, RecordError
from mellama_jax.eval.tasks.base import Example, Judgement, Task, no_prediction_rate

DIAGNOSIS_INSTRUCTION = ("\n\nList the {k} most likely diagnoses for this case, most likely first, "
                         "one per line, numbered 1 to {k}. Give only the diagnosis names.")


def first_hit(candidates: Sequence[str], accepted: Sequence[str], matching: str) -> int | None:
    """1-based rank of the first candidate naming an accepted diagnosis, or None."""
    names = [normalize_answer(a) for a in accepted]
    names = [n for n in names if n]
    for rank, cand in enumerate(candidates, start=1):
        c = normalize_answer(cand)
        if not c:
            continue
        if matching == "strict" and c in names:
            return rank
        if matching == "mibe" and any(f" {n} " in f" {c} " for n in names):
            return rank
    return None


@dataclasses.dataclass(frozen=True)
class DiagnosisTask(Task):
    family: str = "diagnosis"
    primary_metric: str = "top1_accuracy"
    max_k: int = 5
    ks: tuple[int, ...] = (1, 3, 5)

    def prompt(self, record: EvalRecord) -> str:
        return record.query + DIAGNOSIS_INSTRUCTION.format(k=self.max_k)

    def gold(self, record: EvalRecord) -> list[str]:
        accepted = list(record.answer) if isinstance(record.answer, list) else [record.answer]
        if record.choices and isinstance(record.gold, int):
            if not 0 <= record.gold < len(record.choices):
                raise RecordError(f"{record.where}: 'gold'={record.gold} is out of range for "
                                  f"{len(record.choices)} choices")
            accepted.insert(0, record.choices[record.gold])
        accepted = [a for a in accepted if a.strip()]
        if not accepted:
            raise RecordError(f"{record.where}: task {self.name} needs the diagnosis in 'answer' "
                              "(or 'choices' with an integer 'gold')")
        return accepted

    def judge(self, output: str, record: EvalRecord, gold: list[str], matching: str) -> Judgement:
        candidates = ranked_items(output, matching)[: self.max_k]
        if not candidates:
            return Judgement(None, False, {"rank": 0})
        rank = first_hit(candidates, gold, matching)
        # rank 0 = not found among the candidates (JSON has no None-friendly ints for averaging).
        return Judgement(candidates, rank == 1, {"rank": rank or 0})

    def aggregate(self, examples: Sequence[Example], matching: str) -> dict[str, float]:
        ranks = [e.scores["rank"] or None for e in examples]
        out = M.top_k_accuracy(ranks, self.ks)
        out["no_prediction_rate"] = no_prediction_rate(examples)
        return out


DIAGNOSIS = DiagnosisTask(name="diagnosis", aliases=("nejm",),
                          description="Diagnosis from case reports (top-k accuracy; protocol in tasks/diagnosis.py)")

TASKS = (DIAGNOSIS,)
