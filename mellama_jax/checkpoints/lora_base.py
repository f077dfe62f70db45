"""The frozen base of a LoRA run, rebuilt from the reference its config records (`init_from`).

LoRA runs checkpoint only their adapters; resuming (train/lora.py) and reading the run
(`checkpoints.rundir.load_training_params`) both rebuild the base here: from a model checkpoint directory,
a Hugging Face directory (through convert.hf, the one place that reads safetensors), or the run's seed.
"""
from __future__ import annotations

import jax
import numpy as np

from mellama_jax import paths
from mellama_jax.checkpoints.errors import CheckpointError
from mellama_jax.checkpoints.fileio import read_json
from mellama_jax.checkpoints.model_dir import MODEL_CONFIG, PARAMS_DIR, is_model_checkpoint, load_model_checkpoint, read_model_config
from mellama_jax.config import ModelConfig
from mellama_jax.convert import hf
from mellama_jax.model import params as P

# Model fields that must agree between a LoRA run and its base (execution choices such as dtype may differ).
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                       "head_dim", "rms_norm_eps", "rope_theta")
# Folded into the run seed for a random LoRA base, so the base does not reuse the adapters' init stream.
RANDOM_BASE_SALT = 0xBA5E



def architecture_differences(a: ModelConfig, b: ModelConfig) -> dict[str, tuple]:
    """{field: (a's value, b's value)} for every architecture field on which the two configs differ."""
    return {f: (getattr(a, f), getattr(b, f)) for f in ARCHITECTURE_FIELDS if getattr(a, f) != getattr(b, f)}


def load_lora_base(cfg: ModelConfig, init_from: str, *, seed: int = 0, dtype="float32",
                   shardings: dict | None = None) -> dict:
    """The frozen base of a LoRA run, rebuilt from the reference its config records.

    init_from: a model checkpoint directory (restored straight onto `shardings`), a Hugging Face directory
        (read on the host, then placed), or "" for a random base: `init_params` with the run's `seed`, which
        is reproducible bit for bit (the same on any mesh: JAX's partitionable threefry).
    The base must have `cfg`'s architecture (else CheckpointError naming the fields); it is returned in
    `cfg.scan_layers` layout and `dtype`.
    """
    dtype = np.dtype(dtype).name
    if not init_from:
        key = jax.random.fold_in(jax.random.key(seed), RANDOM_BASE_SALT)
        init = lambda k: P.init_params(cfg, k, dtype=dtype)
        return (jax.jit(init) if shardings is None else jax.jit(init, out_shardings=shardings))(key)
    path = paths.as_str(init_from, what="init_from")
    if is_model_checkpoint(path):
        src_cfg = read_model_config(path)
    elif hf.is_hf_dir(path):
        src_cfg = ModelConfig.from_hf_config(read_json(paths.join(path, hf.CONFIG)))
    else:
        raise CheckpointError(f"{path}: the LoRA base (init_from) is neither a model checkpoint directory "
                              f"({MODEL_CONFIG} + {PARAMS_DIR}/) nor a Hugging Face directory")
    diff = architecture_differences(src_cfg, cfg)
    if diff:
        raise CheckpointError(f"{path}: the LoRA base has another architecture than the run's model config "
                              f"(field: (base, run)) {diff}; adapters cannot be applied to or merged into it")
    if is_model_checkpoint(path):
        _, params, extras = load_model_checkpoint(path, shardings=shardings, dtype=dtype, scan_layers=cfg.scan_layers)
        if extras["adapters"] is not None:
            raise CheckpointError(f"{path}: the LoRA base itself carries LoRA adapters; export it merged first "
                                  f"(mellama_jax.load / convert_jax_to_hf.py --merge_lora) and train on that")
    else:
        with paths.local_copy(path) as local:  # gs://: downloaded first (safetensors are memory-mapped)
            _, params = hf.load_hf_params(local, dtype=dtype, scan_layers=cfg.scan_layers)
        if shardings is not None:
            params = jax.device_put(params, shardings)
    return params
