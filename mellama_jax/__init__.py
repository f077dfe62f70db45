"""mellama_jax: Me-LLaMA (LLaMA-2 continual pretraining, LoRA instruction tuning, medical evaluation and
Hugging Face conversion) in JAX/Flax.

    import mellama_jax
    model = mellama_jax.load("path/to/hf_or_checkpoint_or_workdir")
    logits = model.logits([[1, 450, 4486]])

The public names below are imported on first use, so `import mellama_jax` (and `mellama_jax.config`)
stays cheap and never pulls in torch or transformers.
"""
from __future__ import annotations

import importlib

from mellama_jax.libtpu_env import quiet_libtpu_without_tpu

__version__ = "0.1.0"

quiet_libtpu_without_tpu()  # before anything imports JAX: no libtpu errors on machines without a TPU

_LAZY = {
    "load": "mellama_jax.api",
    "Model": "mellama_jax.api",
    "load_model_config": "mellama_jax.api",
    "ModelConfig": "mellama_jax.config",
    "preset": "mellama_jax.config",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mellama_jax' has no attribute {name!r}")


def __dir__():
    return __all__
