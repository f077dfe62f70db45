"""Relation extraction: DDI2013 drug–drug interaction type (5 classes, macro-F1)."""
from __future__ import annotations

from mellama_jax.eval.tasks.base import ChoiceTask

# The five DDIExtraction 2013 classes in the order of Me-LLaMA's released records
# (src/preprocess_instruct.py DDI2013.choices); records carrying their own `choices` win.
DDI2013 = ChoiceTask(
    name="ddi2013", family="re", primary_metric="macro_f1", released_as="DDI2013_test", mibe_exactly_one=True,
    description="DDI2013: interaction type between two marked drugs (5 classes)",
    default_choices=("DDI-effect", "DDI-mechanism", "DDI-advise", "DDI-false", "DDI-int"))

TASKS = (DDI2013,)
