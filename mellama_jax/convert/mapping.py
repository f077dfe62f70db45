"""Tensor-level mapping between Hugging Face LLaMA state dicts and our parameter tree.

Derived entirely from the parameter table (model/params.py): HF torch Linear weights are [out, in];
ours are [in..., out...] (q: [embed, heads, head_dim], o: [heads, head_dim, embed]). HF checkpoints
already store q/k rows in the rotate_half RoPE order, so no permutation is needed (docs/sources.md, "Rotary layout").

These functions work one tensor at a time so the streaming converters (hf.py) never hold the whole
model twice.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from mellama_jax.config import ModelConfig
from mellama_jax.model import params as P


def hf_tensor_names(cfg: ModelConfig) -> list[str]:
    """Every tensor name a LLaMA HF checkpoint of this config holds, in model order."""
    names = []
    for spec in P._specs(cfg):
        if spec.per_layer:
            names.extend(spec.hf_name.format(layer=i) for i in range(cfg.num_layers))
        else:
            names.append(spec.hf_name)
    return names


def from_hf_tensor(spec: P.ParamSpec, tensor: np.ndarray, name: str = "") -> np.ndarray:
    """One HF tensor -> our per-layer layout. Raises ValueError naming the tensor on a shape mismatch."""
    if tuple(tensor.shape) != spec.hf_shape:
        raise ValueError(f"tensor {name or spec.hf_name} has shape {tuple(tensor.shape)}, "
                         f"expected {spec.hf_shape} for this config")
    if spec.hf_layout == "plain":
        return tensor
    return np.ascontiguousarray(tensor.T).reshape(spec.shape)


def to_hf_tensor(spec: P.ParamSpec, value: np.ndarray) -> np.ndarray:
    """One of our per-layer tensors -> the HF layout."""
    if spec.hf_layout == "plain":
        return np.asarray(value)
    fan_in = int(np.prod(spec.shape[: spec.fan_in_dims]))
    return np.ascontiguousarray(np.asarray(value).reshape(fan_in, -1).T)


def params_from_hf(cfg: ModelConfig, get_tensor: Callable[[str], np.ndarray], *, dtype=None,
                   scanned: bool | None = None, on_tensor: Callable[[str], None] | None = None,
                   place: Callable[[P.Path, np.ndarray], object] | None = None) -> dict:
    """Build our parameter tree by asking `get_tensor(hf_name)` for one tensor at a time.

    Per-layer tensors are written straight into a preallocated stacked array, so peak memory is the
    output being built plus one tensor. `place(path, leaf)` (e.g. onto a mesh) receives each leaf as soon as
    it is complete and its result is kept instead of the host array: unscanned, host memory then holds one
    tensor at a time; scanned, one stacked leaf.
    """
    scanned = cfg.scan_layers if scanned is None else scanned
    leaves: dict[P.Path, np.ndarray] = {}
    if place is not None:
        leaves = _Placing(place)
    for spec in P._specs(cfg):
        out_dtype = np.dtype(dtype) if dtype is not None else None
        if not spec.per_layer:
            t = from_hf_tensor(spec, get_tensor(spec.hf_name), spec.hf_name)
            leaves[spec.path] = t.astype(out_dtype or t.dtype, copy=False)
            if on_tensor:
                on_tensor(spec.hf_name)
            continue
        stacked = None
        for i in range(cfg.num_layers):
            name = spec.hf_name.format(layer=i)
            t = from_hf_tensor(spec, get_tensor(name), name)
            if scanned:
                if stacked is None:
                    stacked = np.empty((cfg.num_layers,) + spec.shape, out_dtype or t.dtype)
                stacked[i] = t
            else:
                leaves[(f"layers_{i}",) + spec.path] = t.astype(out_dtype or t.dtype, copy=False)
            if on_tensor:
                on_tensor(name)
        if scanned:
            leaves[("layers",) + spec.path] = stacked
    return P.tree_from_paths(leaves)


class _Placing(dict):
    """A dict that hands every value to `place` as it is stored (and keeps what `place` returns)."""

    def __init__(self, place):
        super().__init__()
        self._place = place

    def __setitem__(self, path, value):
        super().__setitem__(path, self._place(path, value))
