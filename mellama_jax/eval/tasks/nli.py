"""Natural language inference: BioNLI and MedNLI (macro-F1)."""
from __future__ import annotations

from mellama_jax.eval.tasks.base import ChoiceTask

# The order of the choices is the mibe order (the first one found in the output wins).
MEDNLI = ChoiceTask(
    name="mednli", family="nli", primary_metric="macro_f1",
    description="MedNLI: entailment / contradiction / neutral between clinical sentences",
    default_choices=("entailment", "contradiction", "neutral"), released_as="MedNLI_test")
BIONLI = ChoiceTask(
    name="bionli", family="nli", primary_metric="macro_f1",
    description="BioNLI: entailment / contradiction of a biomedical conclusion",
    default_choices=("entailment", "contradiction"), released_as="BioNLI_test")

TASKS = (BIONLI, MEDNLI)
