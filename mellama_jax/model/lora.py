"""LoRA adapters, described from the base parameter table.

For a base kernel W with input dims I and output dims O (see ParamSpec.fan_in_dims), the adapter adds
    y += (alpha / rank) * dropout(x) @ A @ B,    A: I + (rank,),  B: (rank,) + O
A is initialised like PEFT (Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and
B at zero, so an untrained adapter leaves the model's output exactly unchanged. Adapters live in their own
Flax collection, "lora", so the base "params" can be frozen simply by not differentiating them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from mellama_jax.config import DTYPES, ModelConfig
from mellama_jax.config_groups import FieldError, typed
from mellama_jax.model import params as P

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """An adapter definition, and the config group `train.lora` (rank 0 there: full-parameter training)."""
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")  # in a config group: comma-separated names
    base_dtype: str = "float32"  # storage dtype of the frozen base while training the adapters

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise FieldError("lora", "rank", self.rank, "must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldError("lora", "dropout", self.dropout, "must be in [0, 1)")
        if not self.targets:
            raise FieldError("lora", "targets", "", "empty; name at least one of " + ", ".join(ALL_TARGETS))
        unknown = [t for t in self.targets if t not in ALL_TARGETS]
        if unknown:
            raise FieldError("lora", "targets", ",".join(self.targets), f"unknown module name(s) {unknown}; "
                             f"LLaMA modules are {','.join(ALL_TARGETS)}")
        if self.base_dtype not in DTYPES:
            raise FieldError("lora", "base_dtype", self.base_dtype, f"expected one of {DTYPES}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_group(cls, group: Mapping[str, Any] | None, where: str = "config.train.lora") -> "LoraConfig | None":
        """From a run config's `train.lora` group (or a stored one): None for rank 0 (full-parameter
        training). Errors name `where.<field>`."""
        if not group or group.get("rank", 0) == 0:
            if group:  # rank 0: the other fields are unused, but a typo in them is still an error
                typed(cls, {**dict(group), "rank": 1}, where)
            return None
        return typed(cls, group, where)

    @classmethod
    def group_defaults(cls) -> dict[str, Any]:
        """The `train.lora` group's defaults: these fields, rank 0 (off), targets comma-separated."""
        values = dataclasses.asdict(cls())
        return {**values, "rank": 0, "targets": ",".join(values["targets"])}


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    base: P.ParamSpec
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    a_axes: tuple[str, ...]
    b_axes: tuple[str, ...]


def lora_spec(base: P.ParamSpec, rank: int) -> LoraSpec:
    n = base.fan_in_dims
    return LoraSpec(base, base.shape[:n] + (rank,), (rank,) + base.shape[n:],
                    base.axes[:n] + ("lora_rank",), ("lora_rank",) + base.axes[n:])


def lora_specs(cfg: ModelConfig, lora: LoraConfig) -> dict[str, LoraSpec]:
    targets = P.lora_targets(cfg)
    return {name: lora_spec(targets[name], lora.rank) for name in lora.targets}


def init_a(key, shape, dtype, fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)


def iter_lora(cfg: ModelConfig, lora: LoraConfig, *, scanned: bool | None = None):
    """Leaves of the "lora" tree: (path, full shape, full axes, kind "a"/"b", LoraSpec)."""
    scanned = cfg.scan_layers if scanned is None else scanned
    L = cfg.num_layers
    for ls in lora_specs(cfg, lora).values():
        module_path = ls.base.path[:-1]
        for kind, shape, axes in (("a", ls.a_shape, ls.a_axes), ("b", ls.b_shape, ls.b_axes)):
            leaf = module_path + (f"lora_{kind}",)
            if scanned:
                yield ("layers",) + leaf, (L,) + shape, ("layers",) + axes, kind, ls
            else:
                for i in range(L):
                    yield (f"layers_{i}",) + leaf, shape, axes, kind, ls


def init_lora(cfg: ModelConfig, lora: LoraConfig, rng, *, scanned: bool | None = None, dtype="float32") -> dict:
    leaves = {}
    for path, shape, _, kind, ls in iter_lora(cfg, lora, scanned=scanned):
        if kind == "b":
            leaves[path] = jnp.zeros(shape, dtype)
        else:
            fan_in = math.prod(ls.base.shape[: ls.base.fan_in_dims])
            leaves[path] = init_a(jax.random.fold_in(rng, P._path_seed(path)), shape, dtype, fan_in)
    return P.tree_from_paths(leaves)


def lora_logical_axes(cfg: ModelConfig, lora: LoraConfig, *, scanned: bool | None = None) -> dict:
    return P.tree_from_paths({p: axes for p, _, axes, _, _ in iter_lora(cfg, lora, scanned=scanned)})


def merge_lora(cfg: ModelConfig, lora: LoraConfig, params: dict, adapters: dict, *, scanned: bool | None = None) -> dict:
    """Base params with W + scale * A @ B folded in (for a merged HF export).

    Both trees are checked against `cfg` first: adapters trained for another model (or a base of another
    size) raise a ValueError naming every mismatched leaf instead of failing inside a reshape.
    """
    P.check_params(cfg, params, scanned=scanned, source="merge_lora: base parameters")
    check_adapters(cfg, lora, adapters, scanned=scanned, source="merge_lora: adapters")
    flat = dict(P.flatten_tree(params))
    flat_ad = P.flatten_tree(adapters)
    for path, _, _, kind, ls in iter_lora(cfg, lora, scanned=scanned):
        if kind != "a":
            continue
        a = flat_ad[path]
        b = flat_ad[path[:-1] + ("lora_b",)]
        kpath = path[:-1] + ("kernel",)
        w = flat[kpath]
        n = ls.base.fan_in_dims
        lead = a.ndim - n - 1  # 1 when stacked over layers
        a2 = a.reshape(a.shape[:lead] + (-1, a.shape[-1]))
        b2 = b.reshape(b.shape[: lead + 1] + (-1,))
        delta = jnp.matmul(a2.astype(jnp.float32), b2.astype(jnp.float32)).reshape(w.shape)
        flat[kpath] = (w.astype(jnp.float32) + lora.scale * delta).astype(w.dtype)
    return P.tree_from_paths(flat)


def check_adapters(cfg: ModelConfig, lora: LoraConfig, adapters: dict, *, scanned: bool | None = None,
                   source: str = "adapters") -> None:
    """Raise a ValueError naming every missing, unexpected or mis-shaped adapter leaf for (cfg, lora)."""
    expected = {p: shape for p, shape, _, _, _ in iter_lora(cfg, lora, scanned=scanned)}
    got = {p: tuple(jnp.shape(v)) for p, v in P.flatten_tree(adapters).items()}
    problems = [f"missing {'/'.join(p)}" for p in sorted(set(expected) - set(got))]
    problems += [f"unexpected {'/'.join(p)}" for p in sorted(set(got) - set(expected))]
    problems += [f"{'/'.join(p)} has shape {got[p]}, expected {expected[p]} (rank {lora.rank})"
                 for p in sorted(set(got) & set(expected)) if got[p] != expected[p]]
    if problems:
        raise ValueError(f"{source}: LoRA adapters do not fit this model config: " + "; ".join(problems))
