"""Loaders for the MIBE tasks in this directory (lm-eval's `!function mibe_data.NAME`): see
mellama_jax.eval.lm_eval_adapter.mibe_dataset for where the data is looked for."""
from mellama_jax.eval.lm_eval_adapter import mibe_dataset


def medqa(**kwargs):
    return mibe_dataset("medqa", **kwargs)
