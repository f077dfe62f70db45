"""Summarization: PubMed article → abstract, MIMIC-CXR findings → impression (ROUGE-1/2/L, rouge-score).

The whole output (whitespace-trimmed) is the summary under both matching modes; there is no "correct".
An empty output counts as "no prediction" and scores 0. strict: rouge-score with Porter stemming; mibe: without
(what Me-LLaMA's `evaluate.load("rouge")` computes), averaged per example (docs/evaluation.md).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from mellama_jax.eval import metrics as M
from mellama_jax.eval import mibe
from mellama_jax.eval.parsing import check_matching
from mellama_jax.eval.records import EvalRecord, RecordError
from mellama_jax.eval.tasks.base import Example, Judgement, Task, no_prediction_rate


@dataclasses.dataclass(frozen=True)
class SummarizationTask(Task):
    family: str = "summarization"
    primary_metric: str = "rougeL"

    def gold(self, record: EvalRecord) -> str:
        if not isinstance(record.answer, str) or not record.answer.strip():
            raise RecordError(f"{record.where}: task {self.name} needs the reference summary in 'answer'")
        return record.answer

    def judge(self, output: str, record: EvalRecord, gold: str, matching: str) -> Judgement:
        summary = output.strip() or None
        if check_matching(matching) == "mibe":  # evaluate's "rouge": no stemming (eval/mibe.py)
            return Judgement(summary, None, mibe.rouge_per_example(output, gold))
        return Judgement(summary, None, M.rouge_per_example(summary, gold))

    def aggregate(self, examples: Sequence[Example], matching: str) -> dict[str, float]:
        n = max(len(examples), 1)
        out = {k: sum(e.scores[k] for e in examples) / n for k in M.ROUGE_TYPES}
        out["no_prediction_rate"] = no_prediction_rate(examples)
        return out


PUBMED_SUM = SummarizationTask(name="pubmed_sum", aliases=("pubmed", "pubmedsum"), released_as="PubmedSumm_test",
                               description="PubMed: article to abstract")
MIMIC_CXR = SummarizationTask(name="mimic_cxr", aliases=("mimiccxr", "mimic-cxr"), released_as="MIMIC_SUM_test",
                              description="MIMIC-CXR: radiology findings to impression")

TASKS = (PUBMED_SUM, MIMIC_CXR)
