"""Document classification: HoC (multi-label, 10 hallmarks of cancer) and MTSample (40 specialties)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

from mellama_jax.eval import metrics as M
from mellama_jax.eval.mibe import rules
from mellama_jax.eval.parsing import check_matching, match_labels
from mellama_jax.eval.records import EvalRecord, RecordError
from mellama_jax.eval.tasks.base import GOLD_MULTI_HOT, ChoiceTask, Example, Judgement, Task, no_prediction_rate

# In the order of Me-LLaMA's released HoC records: `gold` is a 0/1 vector over this list
# (src/preprocess_instruct.py HoC.choices; `[0,0,0,0,0,0,0,0,1,0]` = "cellular energetics").
HALLMARKS = (
    "sustaining proliferative signaling", "evading growth suppressors", "resisting cell death",
    "enabling replicative immortality", "inducing angiogenesis", "activating invasion and metastasis",
    "genomic instability and mutation", "tumor promoting inflammation", "cellular energetics",
    "avoiding immune destruction")
HOC_SEPARATOR = ";"  # the released `answer` lists the gold hallmarks separated by semicolons


@dataclasses.dataclass(frozen=True)
class MultiLabelTask(Task):
    """Any number of labels per example: multi-label macro-F1 (scikit-learn).

    `gold` is a 0/1 vector as long as `choices` (the released HoC form); a list of indices or labels is
    an error, never reinterpreted. Without `gold`, `answer` lists the labels separated by semicolons.
    When both are given they must agree.
    """
    family: str = "classification"
    primary_metric: str = "macro_f1"
    gold_format: str = GOLD_MULTI_HOT
    default_choices: tuple[str, ...] = ()

    def choices(self, record: EvalRecord) -> tuple[str, ...]:
        choices = record.choices or self.default_choices
        if not choices:
            raise RecordError(f"{record.where}: field 'choices': task {self.name} needs the label set")
        return choices

    def _answer_labels(self, record: EvalRecord, choices: tuple[str, ...]) -> list[int]:
        answer = record.answer if isinstance(record.answer, str) else HOC_SEPARATOR.join(record.answer)
        labels = [p.strip() for p in answer.strip().split(HOC_SEPARATOR) if p.strip()]
        unknown = [p for p in labels if p not in choices]
        if unknown:
            raise RecordError(f"{record.where}: field 'answer': {unknown} not among the choices {list(choices)}")
        return sorted({choices.index(p) for p in labels})

    def gold(self, record: EvalRecord) -> list[int]:
        choices = self.choices(record)
        if self.default_choices and choices != self.default_choices:
            raise RecordError(f"{record.where}: field 'choices': task {self.name} scores over its fixed label "
                              f"list {list(self.default_choices)}, got {list(choices)}")
        gold = record.gold
        if gold is None:
            return self._answer_labels(record, choices)
        if not (isinstance(gold, list) and len(gold) == len(choices)
                and all(isinstance(v, int) and not isinstance(v, bool) and v in (0, 1) for v in gold)):
            raise RecordError(f"{record.where}: field 'gold': task {self.name} expects a 0/1 vector of length "
                              f"{len(choices)} (one entry per choice), got {gold!r}")
        hot = [i for i, v in enumerate(gold) if v]
        if isinstance(record.answer, str) and record.answer.strip() and self._answer_labels(record, choices) != hot:
            raise RecordError(f"{record.where}: field 'answer': {record.answer!r} disagrees with 'gold' {gold}")
        return hot

    def judge(self, output: str, record: EvalRecord, gold: list[int], matching: str) -> Judgement:
        choices = self.choices(record)
        if check_matching(matching) == "mibe":
            found = [i for i, v in enumerate(rules.hoc_vector(output, choices)) if v]
            return Judgement(found or None, found == gold)
        found = match_labels(output, choices, "strict")
        prediction = None if found is None else list(found)
        return Judgement(prediction, prediction == gold)

    def aggregate(self, examples: Sequence[Example], matching: str) -> dict[str, float]:
        if check_matching(matching) == "mibe":
            # Vectors over the task's label set, all columns counted (the released records carry these choices).
            choices = self.default_choices
            vectors = [[[int(j in (idx or [])) for j in range(len(choices))] for idx in (e.gold, e.prediction)]
                       for e in examples]
            out = rules.hoc_metrics([g for g, _ in vectors], [p for _, p in vectors], choices)
            out["exact_set_accuracy"] = sum(bool(e.correct) for e in examples) / max(len(examples), 1)
            out["no_prediction_rate"] = no_prediction_rate(examples)
            return out
        num_labels = 1 + max([max(e.gold, default=-1) for e in examples]
                             + [max(e.prediction or [], default=-1) for e in examples] + [0])
        return {"macro_f1": M.multilabel_macro_f1([e.gold for e in examples], [e.prediction for e in examples],
                                                  num_labels),
                "exact_set_accuracy": sum(bool(e.correct) for e in examples) / max(len(examples), 1),
                "no_prediction_rate": no_prediction_rate(examples)}


HOC = MultiLabelTask(name="hoc", default_choices=HALLMARKS, released_as="HoC_test",
                     description="Hallmarks of Cancer: multi-label abstract classification (10 hallmarks)")
# MTSample's 40 specialty names come with the records (`choices`).
MTSAMPLE = ChoiceTask(name="mtsample", family="classification", primary_metric="macro_f1",
                      released_as="MTSample_test",
                      description="MTSamples: medical specialty of a transcription (40 classes)")

TASKS = (HOC, MTSAMPLE)
