"""Rotary embeddings and attention kernels.

Every backend computes the same function:

    attend(q [B,T,H,D], k [B,S,KV,D], v [B,S,KV,D], q_segment_ids [B,T], kv_segment_ids [B,S],
           q_offset) -> [B,T,H,D]

Query t (at key index q_offset + t) sees key s iff s <= q_offset + t and both carry the same segment id.
Segment ids separate packed documents (training) and mark left padding (generation, segment 0); causality
is by index, positions only drive RoPE. Query head h reads kv head h // (H // KV), as in transformers.

Backends are chosen by `ModelConfig.attention` and imported lazily so that `xla` needs nothing beyond
jax: `splash` (Pallas TPU kernel) lives in attention_tpu.py and `cudnn` in attention_gpu.py.
"""
from __future__ import annotations

import importlib
from typing import Callable

import jax
import jax.numpy as jnp

# Large negative instead of -inf: a fully masked row (padding) then gives uniform weights, not NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def rotary_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [B, T, 1, head_dim] in float32 for the rotate_half RoPE layout (HF checkpoints)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """rotate_half RoPE: dimension i is paired with i + D/2."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    out = x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin
    return out.astype(x.dtype)


def attention_mask(q_segment_ids, kv_segment_ids, q_offset) -> jax.Array:
    """Boolean [B, T, S]: causal by index and same segment."""
    T, S = q_segment_ids.shape[1], kv_segment_ids.shape[1]
    q_idx = q_offset + jnp.arange(T)[:, None]
    k_idx = jnp.arange(S)[None, :]
    causal = k_idx <= q_idx
    same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    return causal[None] & same


def xla_attention(q, k, v, q_segment_ids, kv_segment_ids, q_offset=0) -> jax.Array:
    """Reference attention in plain XLA ops (k, v [B, S, KV, D]); runs everywhere."""
    B, T, H, D = q.shape
    KV = k.shape[2]
    qg = q.reshape(B, T, KV, H // KV, D)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * (D ** -0.5)
    mask = attention_mask(q_segment_ids, kv_segment_ids, q_offset)
    scores = jnp.where(mask[:, None, None], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(B, T, H, D)


def cached_attention(q, k, v, q_segment_ids, kv_segment_ids, q_offset) -> jax.Array:
    """The same function over a kv-head-major decode cache (k, v [B, KV, S, D], model.llama.init_cache).

    Both products read the cache in place as batched matmuls over (batch, kv head): the scores are computed
    as K @ q^T ([S, D] @ [D, T*G], the cache block as the left operand in its stored layout), then
    probs @ V. Written as q @ K^T, XLA:CPU would transpose every layer's K cache at every decode step.
    """
    B, T, H, D = q.shape
    KV = k.shape[1]
    G = H // KV
    # q^T per (batch, kv head): [B, KV, D, T*G] — tiny, unlike the cache.
    qt = q.reshape(B, T, KV, G, D).transpose(0, 2, 4, 1, 3).reshape(B, KV, D, T * G)
    scores = jax.lax.dot_general(k, qt, (((3,), (2,)), ((0, 1), (0, 1))),
                                 preferred_element_type=jnp.float32) * (D ** -0.5)  # [B, KV, S, T*G]
    mask = attention_mask(q_segment_ids, kv_segment_ids, q_offset)  # [B, T, S]
    mask = jnp.repeat(jnp.swapaxes(mask, 1, 2), G, axis=2)[:, None]  # [B, 1, S, T*G], column t*G + g
    scores = jnp.where(mask, scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=2).astype(v.dtype)
    out = jax.lax.dot_general(probs, v, (((2,), (2,)), ((0, 1), (0, 1))))  # [B, KV, T*G, D]
    return out.reshape(B, KV, T, G, D).transpose(0, 2, 1, 3, 4).reshape(B, T, H, D)


# name -> "module:function"; imported on first use.
_BACKENDS = {
    "xla": "mellama_jax.model.attention:xla_attention",
    "splash": "mellama_jax.model.attention_tpu:splash_attention",
    "cudnn": "mellama_jax.model.attention_gpu:cudnn_attention",
}


def get_attention(name: str) -> Callable:
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected one of {sorted(_BACKENDS)}")
    module, fn = _BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"attention backend {name!r} is not available here: {e}") from e
