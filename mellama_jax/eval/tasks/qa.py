"""Question answering: PubMedQA (yes/no/maybe), MedQA (A–E), MedMCQA (A–D), and extractive EmrQA."""
from __future__ import annotations

import dataclasses
from typing import Sequence

from mellama_jax.eval import metrics as M
from mellama_jax.eval.mibe import rules
from mellama_jax.eval.parsing import check_matching, free_text_answer
from mellama_jax.eval.records import EvalRecord, RecordError
from mellama_jax.eval.tasks.base import ChoiceTask, Example, Judgement, Task, no_prediction_rate

PUBMEDQA = ChoiceTask(
    name="pubmedqa", family="qa", description="PubMedQA: yes/no/maybe answers to biomedical research questions",
    default_choices=("yes", "no", "maybe"), released_as="pubmedqa_test")
# MIBE's MedQA / MedMCQA choices are the option letters (the options themselves are in the query); records
# whose choices are option texts work too, and the label is the option's letter either way.
MEDQA = ChoiceTask(
    name="medqa", family="qa", description="MedQA (USMLE): one of options A–E", lettered=True,
    default_choices=("A", "B", "C", "D", "E"), released_as="medQA_test", mibe_lower_case=False)
MEDMCQA = ChoiceTask(
    name="medmcqa", family="qa", description="MedMCQA: one of options A–D", lettered=True,
    default_choices=("A", "B", "C", "D"), released_as="medMCQA_test", mibe_lower_case=False)


@dataclasses.dataclass(frozen=True)
class ExtractiveQATask(Task):
    """Free-text answers: strict = SQuAD exact match and token F1 (max over the acceptable answers);
    mibe = the reference's character-level EM/F1 on the whole output (eval/mibe/rules.py)."""
    family: str = "qa"
    primary_metric: str = "f1"

    def gold(self, record: EvalRecord) -> list[str]:
        answers = record.answer if isinstance(record.answer, list) else [record.answer]
        answers = [a for a in answers if a.strip()]
        if not answers:
            raise RecordError(f"{record.where}: task {self.name} needs a non-empty 'answer' "
                              "(a string or a list of acceptable strings)")
        return answers

    def judge(self, output: str, record: EvalRecord, gold: list[str], matching: str) -> Judgement:
        if check_matching(matching) == "mibe":
            # The released answer is one string; a list of answers takes the best, as strict does.
            em = max(rules.emrqa_exact_match(output, g) for g in gold)
            f1 = max(rules.emrqa_f1(output, g) for g in gold)
            return Judgement(output.strip() or None, em == 1.0, {"exact_match": em, "f1": f1})
        prediction = free_text_answer(output, matching) or None
        em = M.exact_match(prediction, gold)
        return Judgement(prediction, em == 1.0, {"exact_match": em, "f1": M.token_f1(prediction, gold)})

    def aggregate(self, examples: Sequence[Example], matching: str) -> dict[str, float]:
        n = max(len(examples), 1)
        return {"exact_match": sum(e.scores["exact_match"] for e in examples) / n,
                "f1": sum(e.scores["f1"] for e in examples) / n,
                "no_prediction_rate": no_prediction_rate(examples)}


EMRQA = ExtractiveQATask(name="emrqa", released_as="emrqa_test", description="EmrQA: answers extracted from clinical notes")

TASKS = (PUBMEDQA, MEDQA, MEDMCQA, EMRQA)
