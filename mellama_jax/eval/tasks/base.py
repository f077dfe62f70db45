"""What every evaluation task provides, and the single-label multiple-choice family most tasks share.

A task turns a record into a prompt and a gold answer (`gold`), judges one model output (`judge`:
prediction, correct, per-example scores) and aggregates judged examples into metrics (`aggregate`).
The runner (eval/runner.py) does the rest: decoding, batching, the report.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Sequence

from mellama_jax.eval import metrics as M
from mellama_jax.eval.mibe import rules
from mellama_jax.eval.parsing import check_matching, match_choice_strict
from mellama_jax.eval.records import EvalRecord, RecordError


@dataclasses.dataclass(frozen=True)
class Judgement:
    prediction: Any  # JSON-able; None = no prediction parsed
    correct: bool | None  # None where "correct" has no meaning (summaries)
    scores: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Example:
    """One evaluated example: what the per-example JSONL holds."""
    id: str
    where: str
    prompt: str
    output: str
    prediction: Any
    gold: Any
    correct: bool | None
    scores: dict[str, float]
    truncated: bool = False  # the prompt was cut to fit the context window
    # The same output judged under the other matching mode: {"matching", "prediction", "correct", "scores"}.
    other: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# What a task's `gold` field holds (declared per task; a record that does not fit is an error, never a guess).
GOLD_INDEX = "index"  # an integer index into `choices`
GOLD_MULTI_HOT = "multi_hot"  # a 0/1 vector as long as `choices` (HoC)
GOLD_NONE = "none"  # `gold` is unused; `answer` is the target


@dataclasses.dataclass(frozen=True)
class ScoringOptions:
    """A run's settings that change how some tasks score (the runner applies them with Task.configured)."""
    seed: int = 0  # summaries: seeds the ROUGE bootstrap of `mibe` (the reference leaves it unseeded)
    bertscore_model: str | None = None  # summaries: a local model directory for BERTScore; None = not computed
    bertscore_num_layers: int | None = None  # its layer; None = bert_score's layer for the reference's model
    bartscore_model: str | None = None  # summaries: a local bart-large-cnn directory for BARTScore; None = not computed
    bartscore_weights: str | None = None  # the bart_score.pth state dict the reference loads into it
    spacy_model: str | None = None  # NER `mibe`: an installed spaCy model (name or path); None = spacy.blank("en")


@dataclasses.dataclass(frozen=True)
class Task(abc.ABC):
    name: str
    family: str
    primary_metric: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    released_as: str = ""  # Me-LLaMA's Hugging Face dataset name (clinicalnlplab/<this>), "" if none
    gold_format: str = GOLD_NONE

    @property
    def file_names(self) -> tuple[str, ...]:
        """Names the task's records are looked up under in a data directory (records.find_task_file)."""
        return self.aliases + ((self.released_as,) if self.released_as else ())

    def configured(self, options: ScoringOptions) -> "Task":
        """This task with the run's scoring options applied; most tasks take none."""
        return self

    def prompt(self, record: EvalRecord) -> str:
        """The zero-shot prompt: MIBE queries already carry their instruction, so the query as is."""
        return record.query

    @abc.abstractmethod
    def gold(self, record: EvalRecord) -> Any:
        """The JSON-able gold answer of a record; RecordError naming record.where when it is unusable."""

    @abc.abstractmethod
    def judge(self, output: str, record: EvalRecord, gold: Any, matching: str) -> Judgement:
        """The verdict on one output under `matching` ("mibe": the reference rule, "strict": ours)."""

    @abc.abstractmethod
    def aggregate(self, examples: Sequence[Example], matching: str) -> dict[str, float]:
        """Metrics of examples judged under `matching` (the reference aggregates differently: eval/mibe/rules.py)."""

    def candidates(self, record: EvalRecord) -> list[str] | None:
        """Continuations for log-likelihood scoring; None where the task is not multiple choice."""
        return None

    def judge_choice_index(self, index: int, record: EvalRecord, gold: Any) -> Judgement:
        raise NotImplementedError(f"task {self.name} cannot be scored by log-likelihood")


def no_prediction_rate(examples: Sequence[Example]) -> float:
    return sum(e.prediction is None for e in examples) / len(examples) if examples else 0.0


@dataclasses.dataclass(frozen=True)
class ChoiceTask(Task):
    """Single-label multiple choice: accuracy and macro-F1.

    `choices` in the record are the answer strings the model may say; `gold` is an index into them (absent
    `gold`, `answer` must equal one of them). `default_choices` fill in records without choices. For
    lettered tasks (MedQA, MedMCQA) the class label is the option letter, since option texts differ per
    question. Under mibe, `mibe_lower_case` and `mibe_exactly_one` select the reference's rule
    (eval/mibe/rules.py).
    """
    primary_metric: str = "accuracy"
    gold_format: str = GOLD_INDEX
    default_choices: tuple[str, ...] = ()
    lettered: bool = False
    mibe_lower_case: bool = True  # vital_measure.py Classification.LOWER_CASE (False for MedQA/MedMCQA)
    mibe_exactly_one: bool = False  # DDI2013's rule: exactly one label in the output

    def choices(self, record: EvalRecord) -> tuple[str, ...]:
        choices = record.choices or self.default_choices
        if len(choices) < 2:
            raise RecordError(f"{record.where}: field 'choices': task {self.name} needs at least two, "
                              f"got {list(choices)}")
        return choices

    def label(self, index: int, choices: Sequence[str]) -> str:
        return chr(ord("A") + index) if self.lettered else choices[index]

    def gold_index(self, record: EvalRecord) -> int:
        choices = self.choices(record)
        gold = record.gold
        if gold is None:
            if isinstance(record.answer, str) and record.answer in choices:
                return choices.index(record.answer)
            raise RecordError(f"{record.where}: field 'gold' is missing and 'answer'={record.answer!r} is not one "
                              f"of the choices {list(choices)}")
        if not isinstance(gold, int):
            raise RecordError(f"{record.where}: field 'gold': task {self.name} expects an integer index into "
                              f"'choices', got {gold!r}")
        if not 0 <= gold < len(choices):
            raise RecordError(f"{record.where}: field 'gold': {gold} is out of range for {len(choices)} choices")
        if isinstance(record.answer, str) and record.answer and record.answer != choices[gold]:
            raise RecordError(f"{record.where}: field 'answer': {record.answer!r} disagrees with "
                              f"choices[gold]={choices[gold]!r}")
        return gold

    def gold(self, record: EvalRecord) -> str:
        return self.label(self.gold_index(record), self.choices(record))

    def judge(self, output: str, record: EvalRecord, gold: str, matching: str) -> Judgement:
        choices = self.choices(record)
        if check_matching(matching) == "strict":
            return self.judge_choice_index(match_choice_strict(output, choices, lettered=self.lettered), record,
                                           gold)
        if self.mibe_exactly_one:
            index = rules.exactly_one_choice_found(output, choices)
        else:
            index = rules.first_choice_found(output, choices, self.mibe_lower_case)
        prediction = None if index is None else self.label(index, choices)
        # The reference compares the found choice with choices[gold] as strings, lower-cased when the task
        # lower-cases (vital_measure.py:104-124).
        key = (lambda c: c) if self.mibe_exactly_one else (lambda c: rules.choice_key(c, self.mibe_lower_case))
        correct = index is not None and key(choices[index]) == key(choices[self.gold_index(record)])
        return Judgement(prediction, correct)

    def judge_choice_index(self, index: int | None, record: EvalRecord, gold: str) -> Judgement:
        prediction = None if index is None else self.label(index, self.choices(record))
        return Judgement(prediction, prediction == gold)

    def aggregate(self, examples: Sequence[Example], matching: str) -> dict[str, float]:
        golds = [e.gold for e in examples]
        preds = [e.prediction for e in examples]
        if check_matching(matching) == "mibe":
            out = rules.classification_metrics(golds, preds)
            out["no_prediction_rate"] = out["missing"]
            return out
        return {"accuracy": M.accuracy(golds, preds), "macro_f1": M.macro_f1(golds, preds),
                "no_prediction_rate": no_prediction_rate(examples)}

    def candidates(self, record: EvalRecord) -> list[str]:
        return list(self.choices(record))
