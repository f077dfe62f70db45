"""Summarization: PubMed article → abstract, MIMIC-CXR findings → impression (ROUGE-1/2/L, rouge-score).

The whole output (whitespace-trimmed) is the summary under both matching modes; there is no "correct".
An empty output counts as "no prediction" and scores 0. strict: rouge-score with Porter stemming, the mean over
examples; mibe: without stemming, the median of rouge-score's bootstrap as Me-LLaMA's `evaluate.load("rouge")`
reports it, seeded by the run's --seed (docs/evaluation.md). With --bertscore_model / --bartscore_model, both
also report the reference's `bert_score_f1` (eval/bertscore.py) / `bart_score` (eval/bartscore.py).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

from mellama_jax.eval import bartscore, bertscore
from mellama_jax.eval import metrics as M
from mellama_jax.eval.mibe import rules
from mellama_jax.eval.parsing import check_matching
from mellama_jax.eval.records import EvalRecord, RecordError
from mellama_jax.eval.tasks.base import Example, Judgement, ScoringOptions, Task, no_prediction_rate


@dataclasses.dataclass(frozen=True)
class SummarizationTask(Task):
    family: str = "summarization"
    primary_metric: str = "rougeL"
    rouge_seed: int = 0  # seeds mibe's bootstrap (ScoringOptions.seed)
    bertscore_model: str | None = None
    bertscore_num_layers: int | None = None
    bartscore_model: str | None = None
    bartscore_weights: str | None = None

    def configured(self, options: ScoringOptions) -> "SummarizationTask":
        return dataclasses.replace(self, rouge_seed=options.seed, bertscore_model=options.bertscore_model,
                                   bertscore_num_layers=options.bertscore_num_layers,
                                   bartscore_model=options.bartscore_model,
                                   bartscore_weights=options.bartscore_weights)

    def gold(self, record: EvalRecord) -> str:
        if not isinstance(record.answer, str) or not record.answer.strip():
            raise RecordError(f"{record.where}: task {self.name} needs the reference summary in 'answer'")
        return record.answer

    def judge(self, output: str, record: EvalRecord, gold: str, matching: str) -> Judgement:
        summary = output.strip() or None
        if check_matching(matching) == "mibe":  # evaluate's "rouge": no stemming (eval/mibe/rules.py)
            return Judgement(summary, None, rules.rouge_per_example(output, gold))
        return Judgement(summary, None, M.rouge_per_example(summary, gold))

    def aggregate(self, examples: Sequence[Example], matching: str) -> dict[str, float]:
        if check_matching(matching) == "mibe" and examples:
            out = rules.rouge_bootstrap_median([e.scores for e in examples], seed=self.rouge_seed)
        else:
            n = max(len(examples), 1)
            out = {k: sum(e.scores[k] for e in examples) / n for k in M.ROUGE_TYPES}
        if self.bertscore_model:
            # Both matchings score the raw output, as the reference does (VM:432-435): one number, computed once.
            out["bert_score_f1"] = _bertscore_f1(tuple(e.output for e in examples), tuple(e.gold for e in examples),
                                                 self.bertscore_model, self.bertscore_num_layers)
        if self.bartscore_model:
            out["bart_score"] = _bartscore(tuple(e.output for e in examples), tuple(e.gold for e in examples),
                                           self.bartscore_model, self.bartscore_weights)
        out["no_prediction_rate"] = no_prediction_rate(examples)
        return out


@functools.lru_cache(maxsize=2)
def _bertscore_f1(outputs: tuple[str, ...], golds: tuple[str, ...], model: str, num_layers: int | None) -> float:
    return bertscore.bertscore_f1(outputs, golds, model, num_layers)


@functools.lru_cache(maxsize=2)
def _bartscore(outputs: tuple[str, ...], golds: tuple[str, ...], model: str, weights: str | None) -> float:
    return bartscore.bartscore(outputs, golds, model, weights)


PUBMED_SUM = SummarizationTask(name="pubmed_sum", aliases=("pubmed", "pubmedsum"), released_as="PubmedSumm_test",
                               description="PubMed: article to abstract")
MIMIC_CXR = SummarizationTask(name="mimic_cxr", aliases=("mimiccxr", "mimic-cxr"), released_as="MIMIC_SUM_test",
                              description="MIMIC-CXR: radiology findings to impression")

TASKS = (PUBMED_SUM, MIMIC_CXR)
