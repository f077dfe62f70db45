"""The parameter table: every LLaMA-2 parameter described once.

Each `ParamSpec` gives a parameter's per-layer shape, logical axes, initializer and its Hugging Face
tensor name and layout. Everything else is derived from this table:

* the Flax modules declare their parameters by looking themselves up here (`declare`),
* `init_params` builds a (possibly sharded) parameter tree without tracing the model,
* `abstract_params` gives `ShapeDtypeStruct`s for ahead-of-time compilation and restore targets,
* `logical_axes` feeds `mellama_jax.parallel` which maps logical names to mesh axes,
* `mellama_jax.convert` maps HF tensors in and out with `to_hf` / `from_hf`.

Tree layout. Scanned models stack per-layer parameters on a leading "layers" axis under `layers/`;
unscanned models hold `layers_0/ … layers_{L-1}/`. `stack_layers` / `unstack_layers` switch between them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mellama_jax.config import ModelConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    path: Path  # path inside one block (per_layer) or from the root
    shape: tuple[int, ...]  # per-layer shape
    axes: tuple[str, ...]  # logical axis names, one per dim of `shape`
    init: str  # "normal" (std = initializer_range) | "ones"
    hf_name: str  # HF tensor name; "{layer}" is replaced by the layer index
    hf_layout: str  # "linear": HF stores [out, in] (torch Linear); "plain": same layout as ours
    fan_in_dims: int = 1  # for "linear": how many leading dims of `shape` are the input dims
    per_layer: bool = True
    lora_name: str | None = None  # PEFT target-module name, for parameters LoRA can adapt

    @property
    def hf_shape(self) -> tuple[int, ...]:
        if self.hf_layout == "plain":
            return self.shape
        fan_in = math.prod(self.shape[: self.fan_in_dims])
        return (math.prod(self.shape[self.fan_in_dims:]), fan_in)


def _specs(cfg: ModelConfig) -> list[ParamSpec]:
    E, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    H, KV, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    pre = "model.layers.{layer}."
    return [
        ParamSpec(("embed", "embedding"), (V, E), ("vocab", "embed"), "normal",
                  "model.embed_tokens.weight", "plain", per_layer=False),
        ParamSpec(("attn_norm", "scale"), (E,), ("norm",), "ones", pre + "input_layernorm.weight", "plain"),
        ParamSpec(("attn", "q_proj", "kernel"), (E, H, D), ("embed", "heads", "head_dim"), "normal",
                  pre + "self_attn.q_proj.weight", "linear", 1, lora_name="q_proj"),
        ParamSpec(("attn", "k_proj", "kernel"), (E, KV, D), ("embed", "kv_heads", "head_dim"), "normal",
                  pre + "self_attn.k_proj.weight", "linear", 1, lora_name="k_proj"),
        ParamSpec(("attn", "v_proj", "kernel"), (E, KV, D), ("embed", "kv_heads", "head_dim"), "normal",
                  pre + "self_attn.v_proj.weight", "linear", 1, lora_name="v_proj"),
        ParamSpec(("attn", "o_proj", "kernel"), (H, D, E), ("heads", "head_dim", "embed"), "normal",
                  pre + "self_attn.o_proj.weight", "linear", 2, lora_name="o_proj"),
        ParamSpec(("mlp_norm", "scale"), (E,), ("norm",), "ones", pre + "post_attention_layernorm.weight", "plain"),
        ParamSpec(("mlp", "gate_proj", "kernel"), (E, F), ("embed", "mlp"), "normal",
                  pre + "mlp.gate_proj.weight", "linear", 1, lora_name="gate_proj"),
        ParamSpec(("mlp", "up_proj", "kernel"), (E, F), ("embed", "mlp"), "normal",
                  pre + "mlp.up_proj.weight", "linear", 1, lora_name="up_proj"),
        ParamSpec(("mlp", "down_proj", "kernel"), (F, E), ("mlp", "embed"), "normal",
                  pre + "mlp.down_proj.weight", "linear", 1, lora_name="down_proj"),
        ParamSpec(("final_norm", "scale"), (E,), ("norm",), "ones", "model.norm.weight", "plain", per_layer=False),
        ParamSpec(("lm_head", "kernel"), (E, V), ("embed", "vocab"), "normal", "lm_head.weight", "linear", 1,
                  per_layer=False),
    ]


def layer_specs(cfg: ModelConfig) -> dict[Path, ParamSpec]:
    """Specs of one decoder block, keyed by their path inside the block."""
    return {s.path: s for s in _specs(cfg) if s.per_layer}


def top_specs(cfg: ModelConfig) -> dict[Path, ParamSpec]:
    return {s.path: s for s in _specs(cfg) if not s.per_layer}


def lora_targets(cfg: ModelConfig) -> dict[str, ParamSpec]:
    """PEFT module name ("q_proj", …) -> the spec of the kernel it adapts."""
    return {s.lora_name: s for s in _specs(cfg) if s.lora_name}


def iter_params(cfg: ModelConfig, *, scanned: bool | None = None) -> Iterator[tuple[Path, tuple[int, ...], tuple[str, ...], ParamSpec]]:
    """Every leaf of the full parameter tree: (tree path, full shape, full logical axes, spec)."""
    scanned = cfg.scan_layers if scanned is None else scanned
    L = cfg.num_layers
    for spec in _specs(cfg):
        if not spec.per_layer:
            yield spec.path, spec.shape, spec.axes, spec
        elif scanned:
            yield ("layers",) + spec.path, (L,) + spec.shape, ("layers",) + spec.axes, spec
        else:
            for i in range(L):
                yield (f"layers_{i}",) + spec.path, spec.shape, spec.axes, spec


def count_params(cfg: ModelConfig) -> int:
    """Exact parameter count, from the table (so it cannot drift from it)."""
    return sum(math.prod(shape) for _, shape, _, _ in iter_params(cfg, scanned=True))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training model FLOPs per token (forward + backward = 3 x forward), attention scores included.

    6 * N for the matmuls against parameters (embedding lookup excluded, LM head included), plus the
    attention scores QK^T and AV counted causally: half of the 12 * L * T * H * D a full T x T score matrix
    would take, i.e. 6 * L * T * H * D. This is MaxText's convention (calculate_tflops_training_per_device
    halves causal attention) and Megatron-LM's, so the MFU in metrics.jsonl (train/loop.py) and the planner
    is comparable with theirs; the older PaLM convention (full matrix) reads higher for the same speed.
    """
    n_matmul = count_params(cfg) - cfg.vocab_size * cfg.hidden_size
    causal_attn = 6 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim
    return 6.0 * n_matmul + causal_attn


# ---------------------------------------------------------------- tree helpers
def tree_from_paths(items: dict[Path, object]) -> dict:
    root: dict = {}
    for path, value in items.items():
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return root


def flatten_tree(tree: dict, prefix: Path = ()) -> dict[Path, object]:
    out: dict[Path, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_tree(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def logical_axes(cfg: ModelConfig, *, scanned: bool | None = None) -> dict:
    """The parameter tree with a tuple of logical axis names at every leaf."""
    return tree_from_paths({p: axes for p, _, axes, _ in iter_params(cfg, scanned=scanned)})


def abstract_params(cfg: ModelConfig, *, scanned: bool | None = None, dtype=None,
                    shardings: dict | None = None) -> dict:
    """`ShapeDtypeStruct`s of the parameter tree (optionally carrying shardings), for AOT and restore."""
    dtype = jnp.dtype(dtype or cfg.param_dtype)
    flat_sh = flatten_tree(shardings) if shardings is not None else {}
    return tree_from_paths({
        p: jax.ShapeDtypeStruct(shape, dtype, sharding=flat_sh.get(p))
        for p, shape, _, _ in iter_params(cfg, scanned=scanned)})


def initializer(spec: ParamSpec, cfg: ModelConfig) -> Callable:
    if spec.init == "ones":
        return lambda key, shape, dtype: jnp.ones(shape, dtype)
    if spec.init == "normal":
        std = cfg.initializer_range
        return lambda key, shape, dtype: (std * jax.random.normal(key, shape, jnp.float32)).astype(dtype)
    raise ValueError(f"unknown initializer {spec.init!r} for {'/'.join(spec.path)}")


def init_params(cfg: ModelConfig, rng: jax.Array, *, scanned: bool | None = None, dtype=None) -> dict:
    """Random parameters (HF's LLaMA init: normal(0, initializer_range), norms at one).

    Each leaf's key is folded from its path, so the values do not depend on the order of the table.
    Wrap in `jax.jit(..., out_shardings=...)` to create the parameters directly sharded.
    """
    dtype = jnp.dtype(dtype or cfg.param_dtype)
    leaves = {}
    for path, shape, _, spec in iter_params(cfg, scanned=scanned):
        key = jax.random.fold_in(rng, _path_seed(path))
        leaves[path] = initializer(spec, cfg)(key, shape, dtype)
    return tree_from_paths(leaves)


def _path_seed(path: Path) -> int:
    # A stable (not Python-hash-randomised) 31-bit seed per path.
    h = 0
    for ch in "/".join(path):
        h = (h * 131 + ord(ch)) % (2**31 - 1)
    return h


def stack_layers(params: dict, num_layers: int) -> dict:
    """Unscanned (`layers_i/…`) -> scanned (`layers/…` with a leading layer axis)."""
    out = {k: v for k, v in params.items() if not k.startswith("layers_")}
    per_layer = [params[f"layers_{i}"] for i in range(num_layers)]
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    return out


def unstack_layers(params: dict, num_layers: int) -> dict:
    """Scanned -> unscanned; used for decoding, where a Python loop over layers beats a scan on CPU."""
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
    return out


def check_params(cfg: ModelConfig, params: dict, *, scanned: bool | None = None, source: str = "params") -> None:
    """Raise a ValueError naming every missing, unexpected or mis-shaped parameter."""
    expected = {p: shape for p, shape, _, _ in iter_params(cfg, scanned=scanned)}
    got = {p: tuple(np.shape(v)) for p, v in flatten_tree(params).items()}
    problems = []
    for p in sorted(set(expected) - set(got)):
        problems.append(f"missing {'/'.join(p)}")
    for p in sorted(set(got) - set(expected)):
        problems.append(f"unexpected {'/'.join(p)}")
    for p in sorted(set(got) & set(expected)):
        if got[p] != expected[p]:
            problems.append(f"{'/'.join(p)} has shape {got[p]}, expected {expected[p]}")
    if problems:
        raise ValueError(f"{source}: parameters do not match the model config: " + "; ".join(problems))
