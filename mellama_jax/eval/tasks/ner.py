"""2010 i2b2 concept extraction (problem / treatment / test) in the inline span format.

The record's `answer` is the sentence with its entities marked (`<problem>chest pain</problem>`), the
model is asked to reproduce the sentence with the same markup, and both are scored as BIO tags with seqeval.
strict: over the gold sentence's whitespace tokens, malformed markup = no prediction (eval/spans.py); mibe:
Me-LLaMA's HTML → BIO reading and token alignment, where the type is a tag's `class` (eval/mibe/ner.py).
`<span class="problem">…</span>` and `<problem>…</problem>` both mark a problem for strict. `choices`, when
given, lists the entity types.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from mellama_jax.eval import metrics as M
from mellama_jax.eval.mibe import ner as mibe_ner
from mellama_jax.eval.parsing import check_matching
from mellama_jax.eval.records import EvalRecord, RecordError
from mellama_jax.eval.spans import SpanError, gold_bio, predicted_bio
from mellama_jax.eval.tasks.base import Example, Judgement, ScoringOptions, Task, no_prediction_rate


@dataclasses.dataclass(frozen=True)
class SpanNERTask(Task):
    family: str = "ner"
    primary_metric: str = "entity_f1"
    entity_types: tuple[str, ...] = ()
    spacy_model: str | None = None  # mibe's tokenizer (ScoringOptions.spacy_model); None = spacy.blank("en")

    def configured(self, options: ScoringOptions) -> "SpanNERTask":
        return dataclasses.replace(self, spacy_model=options.spacy_model)

    def types(self, record: EvalRecord) -> tuple[str, ...]:
        return record.choices or self.entity_types

    def gold(self, record: EvalRecord) -> dict:
        if not isinstance(record.answer, str) or not record.answer.strip():
            raise RecordError(f"{record.where}: task {self.name} needs 'answer': the sentence with its entities "
                              "marked like <problem>chest pain</problem>")
        try:
            tokens, tags = gold_bio(record.answer, self.types(record))
        except SpanError as e:
            raise RecordError(f"{record.where}: bad span markup in 'answer': {e}") from e
        return {"tokens": tokens, "tags": tags}

    def judge(self, output: str, record: EvalRecord, gold: dict, matching: str) -> Judgement:
        if check_matching(matching) == "mibe":
            # The reference re-reads both sides and aligns them; the prediction is the aligned tag pair.
            pred_tags, gold_tags = mibe_ner.aligned_tags(output, record.answer, self.spacy_model)
            return Judgement({"pred": pred_tags, "gold": gold_tags}, pred_tags == gold_tags)
        tags = predicted_bio(output, gold["tokens"], self.types(record), strict=True)
        if tags is None:
            return Judgement(None, False)
        return Judgement(tags, tags == gold["tags"])

    def aggregate(self, examples: Sequence[Example], matching: str) -> dict[str, float]:
        if check_matching(matching) == "mibe":
            scores = mibe_ner.entity_scores([(e.prediction["pred"], e.prediction["gold"]) for e in examples])
            return {"entity_f1": scores["f1"], "entity_precision": scores["precision"],
                    "entity_recall": scores["recall"], "no_prediction_rate": 0.0}
        scores = M.entity_scores([e.gold["tags"] for e in examples], [e.prediction for e in examples])
        return {"entity_f1": scores["f1"], "entity_precision": scores["precision"],
                "entity_recall": scores["recall"], "no_prediction_rate": no_prediction_rate(examples)}


I2B2_2010 = SpanNERTask(name="i2b2", aliases=("i2b2_2010",), entity_types=("problem", "treatment", "test"),
                        description="2010 i2b2/VA concepts: problem, treatment, test (entity F1)")

TASKS = (I2B2_2010,)
