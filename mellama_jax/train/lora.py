"""LoRA instruction tuning as a `Trainable`: the adapters train, the base model is frozen.

`LoraTrainable` plugs into the same train step, optimizer, checkpoints and loop as full-parameter training
(train/state.py). What differs is which trees those see:

* trainable (`TrainState.params`): the Flax "lora" collection — lora_a / lora_b next to every adapted
  kernel (model/lora.py) — in float32. Gradients, the optimizer state (AdamW mu and nu) and the weight
  decay exist for these leaves only; the base is never differentiated.
* frozen (`TrainState.frozen`): the base parameters, optionally stored in bfloat16 (`base_dtype`) — a frozen
  copy needs no fp32 master, which halves the largest buffer of a LoRA run.

Sharding. The base is sharded exactly like full training (FSDP over `embed`, tensor parallelism over heads
and MLP columns). Each adapter follows the kernel it adapts, through `lora_logical_axes`: A's fan-in dims
and B's fan-out dims carry the base kernel's logical names and `lora_rank` is never sharded. So x @ A
contracts the same (gathered) dims as x @ W, the rank-sized intermediate stays replicated over `tensor`,
and @ B produces heads/MLP columns split exactly like the base projection's output — no extra resharding of
activations; the optimizer state of the adapters is FSDP-sharded like the adapters.

The base is not stored in training checkpoints: the run's config records where it came from (`init_from`,
a model checkpoint or HF directory; or, when empty, a random base reproducible from `train.seed`), and both
resume and `checkpoints.rundir.load_training_params` reload it from there (`checkpoints.lora_base.load_lora_base`).

Dropout. With lora.dropout > 0 the train step asks `apply_rngs(step)` for a dropout key; it is derived
from (seed, step), so a resumed run draws the same masks as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

import jax
import jax.numpy as jnp

from mellama_jax.checkpoints.lora_base import load_lora_base
from mellama_jax.config import DTYPES, ConfigError, ModelConfig
from mellama_jax.model import params as P
from mellama_jax.model.llama import Transformer
from mellama_jax.model.lora import LoraConfig, init_lora, iter_lora, lora_logical_axes

log = logging.getLogger(__name__)

# Folded into the run seed so the dropout stream is independent of the parameter initialisation.
_DROPOUT_SALT = 0x1D0


@dataclasses.dataclass(frozen=True)
class LoraTrainable:
    """Adapters trainable (fp32), base frozen (`base_dtype`); see the module docstring."""
    model_cfg: ModelConfig
    lora: LoraConfig
    init_from: str = ""  # the base: a model checkpoint or HF directory; "" = random base from `seed`
    base_dtype: str = "float32"
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.lora, LoraConfig):
            raise ConfigError(f"LoraTrainable.lora must be a LoraConfig, got {type(self.lora).__name__}")
        if self.base_dtype not in DTYPES:
            raise ConfigError(f"train.lora.base_dtype={self.base_dtype!r}; expected one of {DTYPES}")

    @classmethod
    def from_train_config(cls, cfg) -> "LoraTrainable":
        """From a TrainConfig whose train.lora is set (train.lora_base_dtype, init_from, train.seed)."""
        if cfg.train.lora is None:
            raise ConfigError("train.lora.rank is 0: this run trains all parameters, not LoRA adapters")
        return cls(cfg.model, cfg.train.lora, init_from=cfg.init_from,
                   base_dtype=getattr(cfg.train, "lora_base_dtype", "float32"), seed=cfg.train.seed)

    # ------------------------------------------------------------------ the Trainable protocol
    def module(self) -> Transformer:
        return Transformer(self.model_cfg, self.lora)

    def init_trainable(self, rng: jax.Array) -> dict:
        # A: PEFT's Kaiming-uniform, B: zeros — the untrained adapter leaves the base's logits unchanged.
        return init_lora(self.model_cfg, self.lora, rng, dtype=jnp.float32)

    def abstract_trainable(self) -> dict:
        return P.tree_from_paths({path: jax.ShapeDtypeStruct(shape, jnp.float32)
                                  for path, shape, _, _, _ in iter_lora(self.model_cfg, self.lora)})

    def trainable_axes(self) -> dict:
        return lora_logical_axes(self.model_cfg, self.lora)

    def abstract_frozen(self) -> dict:
        return P.abstract_params(self.model_cfg, dtype=self.base_dtype)

    def frozen_axes(self) -> dict:
        return P.logical_axes(self.model_cfg)

    def variables(self, params: Any, frozen: Any) -> dict:
        return {"params": frozen, "lora": params}

    # ------------------------------------------------------------------ LoRA specifics
    @property
    def dropout_rate(self) -> float:
        return self.lora.dropout

    def apply_rngs(self, step: jax.Array) -> Optional[dict]:
        """Flax rngs for one training step's forward pass: a dropout key from (seed, step), or None."""
        if self.lora.dropout <= 0.0:
            return None
        key = jax.random.fold_in(jax.random.key(self.seed), _DROPOUT_SALT)
        return {"dropout": jax.random.fold_in(key, step)}

    def load_frozen(self, shardings: Any) -> dict:
        """The frozen base, placed directly on `shardings` (the layout's `frozen` shardings)."""
        if not self.init_from:
            log.warning("LoRA on a randomly initialised base (init_from is empty; base = init_params(seed=%d)): "
                        "only meaningful for smoke tests — set init_from to a pretrained model", self.seed)
        try:
            return load_lora_base(self.model_cfg, self.init_from, seed=self.seed, dtype=self.base_dtype,
                                  shardings=shardings)
        except ValueError as e:  # CheckpointError / HFCheckpointError: name the config field too
            raise ConfigError(f"init_from={self.init_from}: cannot load the LoRA base: {e}") from e

    def num_trainable(self) -> int:
        return sum(int(x.size) for x in jax.tree.leaves(self.abstract_trainable()))
