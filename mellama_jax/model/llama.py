"""LLaMA-2 decoder in Flax (linen).

embed -> [scan over] Block(RMSNorm -> GQA attention -> residual -> RMSNorm -> SwiGLU -> residual) -> RMSNorm
-> lm_head. Parameters are declared from the table in params.py (shapes, logical axes, init); activations
carry logical axis names through `nn.with_logical_constraint`. No mesh axis is named here: the rules in
`mellama_jax.parallel` decide what the logical names mean on a given mesh.

One call serves training (no cache: full sequences, packed segments, selectable attention backend) and
decoding (a KV cache holding only the kv heads, written at `cache_index`).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from mellama_jax.config import ModelConfig
from mellama_jax.model import params as P
from mellama_jax.model.attention import apply_rotary, cached_attention, get_attention, rotary_tables
from mellama_jax.model.lora import LoraConfig, init_a, lora_spec
from mellama_jax.model.remat import policy as remat_policy

BATCH_LENGTH_EMBED = ("activation_batch", "activation_length", "activation_embed")
BATCH_LENGTH_HEADS = ("activation_batch", "activation_length", "activation_heads", "activation_head_dim")
BATCH_LENGTH_KV = ("activation_batch", "activation_length", "activation_kv_heads", "activation_head_dim")
BATCH_LENGTH_MLP = ("activation_batch", "activation_length", "activation_mlp")
BATCH_LENGTH_VOCAB = ("activation_batch", "activation_length", "activation_vocab")

constrain = nn.with_logical_constraint


def _spec(cfg: ModelConfig, path: P.Path) -> P.ParamSpec:
    table = {**P.layer_specs(cfg), **P.top_specs(cfg)}
    return table[path]


def declare(module: nn.Module, cfg: ModelConfig, path: P.Path):
    """Declare the parameter `path` of the table in `module` (its leaf name is path[-1])."""
    spec = _spec(cfg, path)
    init = nn.with_logical_partitioning(P.initializer(spec, cfg), spec.axes)
    return module.param(path[-1], init, spec.shape, jnp.dtype(cfg.param_dtype))


class RMSNorm(nn.Module):
    cfg: ModelConfig
    spec_path: P.Path

    @nn.compact
    def __call__(self, x):
        scale = declare(self, self.cfg, self.spec_path)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
        # As transformers: normalise in fp32, cast back, then scale.
        return scale.astype(jnp.dtype(self.cfg.dtype)) * normed.astype(jnp.dtype(self.cfg.dtype))


def flat_matmul(x: jax.Array, kernel: jax.Array, fan_in_dims: int) -> jax.Array:
    """x [..., *fan_in] @ kernel [*fan_in, *fan_out] as one 2-D matmul [N, fan_in] @ [fan_in, fan_out].

    The same product as a dot_general over the trailing/leading dims, but with a single contracting dim on
    each side and the batch dims folded into one row dim (all reshapes are free, row-major bitcasts). That
    matters for the backward pass: the weight gradient is then x^T @ dy over one row dim, which XLA runs as
    one matmul, while with [B, T] rows (two contracting dims) XLA CPU first copies dy into a transposed
    layout — for the LM head that is the whole [B*T, vocab] gradient on every step.
    """
    lead = x.shape[:x.ndim - fan_in_dims]
    fan_out = kernel.shape[fan_in_dims:]
    rows = math.prod(lead)
    fan_in = math.prod(kernel.shape[:fan_in_dims])
    y = jnp.dot(x.reshape(rows, fan_in), kernel.reshape(fan_in, math.prod(fan_out)))
    return y.reshape(*lead, *fan_out)


class Linear(nn.Module):
    """A bias-free projection contracting the last `fan_in_dims` dims of x with the kernel's first ones."""
    cfg: ModelConfig
    spec_path: P.Path
    lora: Optional[LoraConfig] = None

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        spec = _spec(self.cfg, self.spec_path)
        dtype = jnp.dtype(self.cfg.dtype)
        kernel = declare(self, self.cfg, self.spec_path).astype(dtype)
        x = x.astype(dtype)
        y = flat_matmul(x, kernel, spec.fan_in_dims)
        if self.lora is not None and spec.lora_name in self.lora.targets:
            y = y + self._lora(x, spec, deterministic)
        return y

    def _lora(self, x, spec, deterministic):
        ls = lora_spec(spec, self.lora.rank)
        fan_in = 1
        for d in spec.shape[: spec.fan_in_dims]:
            fan_in *= d
        a = self.variable("lora", "lora_a", lambda: init_a(self.make_rng("params"), ls.a_shape, jnp.float32, fan_in))
        b = self.variable("lora", "lora_b", lambda: jnp.zeros(ls.b_shape, jnp.float32))
        dtype = x.dtype
        if self.lora.dropout > 0.0:
            x = nn.Dropout(self.lora.dropout)(x, deterministic=deterministic)
        # 2-D matmuls like the base projection (see flat_matmul): the adapter gradients then need no
        # transposed copies of the activations or of dy.
        h = flat_matmul(x, a.value.astype(dtype), spec.fan_in_dims)
        y = flat_matmul(h, b.value.astype(dtype), 1)
        return (self.lora.scale * y).astype(dtype)


class Attention(nn.Module):
    cfg: ModelConfig
    lora: Optional[LoraConfig] = None

    @nn.compact
    def __call__(self, x, positions, segment_ids, cache=None, cache_index=None, kv_segment_ids=None,
                 deterministic=True):
        cfg = self.cfg
        proj = lambda name: Linear(cfg, ("attn", name, "kernel"), self.lora, name=name)
        q = constrain(proj("q_proj")(x, deterministic), BATCH_LENGTH_HEADS)
        k = constrain(proj("k_proj")(x, deterministic), BATCH_LENGTH_KV)
        v = constrain(proj("v_proj")(x, deterministic), BATCH_LENGTH_KV)
        cos, sin = rotary_tables(positions, cfg.head_dim, cfg.rope_theta)
        q = checkpoint_name(apply_rotary(q, cos, sin), "query_proj")
        k = checkpoint_name(apply_rotary(k, cos, sin), "key_proj")
        v = checkpoint_name(v, "value_proj")

        if cache is None:
            attend = get_attention(cfg.attention)
            out = attend(q, k, v, segment_ids, segment_ids, 0)
            new_cache = None
        else:
            # Decoding: write this step's k/v into the kv-head-major cache [B, KV, S, D], attend over all of it.
            ck, cv = cache
            start = (0, 0, cache_index, 0)
            ck = jax.lax.dynamic_update_slice(ck, jnp.swapaxes(k, 1, 2).astype(ck.dtype), start)
            cv = jax.lax.dynamic_update_slice(cv, jnp.swapaxes(v, 1, 2).astype(cv.dtype), start)
            out = cached_attention(q, ck.astype(q.dtype), cv.astype(q.dtype), segment_ids, kv_segment_ids,
                                   cache_index)
            new_cache = (ck, cv)
        out = checkpoint_name(constrain(out, BATCH_LENGTH_HEADS), "attention_out")
        out = proj("o_proj")(out, deterministic)
        return checkpoint_name(constrain(out, BATCH_LENGTH_EMBED), "out_proj"), new_cache


class MLP(nn.Module):
    cfg: ModelConfig
    lora: Optional[LoraConfig] = None

    @nn.compact
    def __call__(self, x, deterministic=True):
        proj = lambda name: Linear(self.cfg, ("mlp", name, "kernel"), self.lora, name=name)
        gate = checkpoint_name(constrain(proj("gate_proj")(x, deterministic), BATCH_LENGTH_MLP), "mlp_gate")
        up = checkpoint_name(constrain(proj("up_proj")(x, deterministic), BATCH_LENGTH_MLP), "mlp_up")
        out = proj("down_proj")(nn.silu(gate) * up, deterministic)
        return checkpoint_name(constrain(out, BATCH_LENGTH_EMBED), "mlp_out")


class Block(nn.Module):
    cfg: ModelConfig
    lora: Optional[LoraConfig] = None

    @nn.compact
    def __call__(self, x, positions, segment_ids, cache, cache_index, kv_segment_ids, deterministic):
        cfg = self.cfg
        h, new_cache = Attention(cfg, self.lora, name="attn")(
            RMSNorm(cfg, ("attn_norm", "scale"), name="attn_norm")(x),
            positions, segment_ids, cache, cache_index, kv_segment_ids, deterministic)
        x = x + h
        x = x + MLP(cfg, self.lora, name="mlp")(RMSNorm(cfg, ("mlp_norm", "scale"), name="mlp_norm")(x), deterministic)
        return constrain(x, BATCH_LENGTH_EMBED), new_cache


class Transformer(nn.Module):
    """LLaMA-2 causal LM.

    tokens, positions, segment_ids: int32 [B, T]. positions default to 0..T-1 and segment ids to 1.
    cache: None (training / scoring) or the per-layer (k, v) [B, KV, S, D] pairs — stacked on a leading
    layer axis when scanned, a list when not — with `cache_index` (int32 scalar: where this call's tokens
    go) and `kv_segment_ids` [B, S] (segment ids of every cache slot, this call's included).
    Returns (float32 logits [B, T, V], new cache or None).
    """
    cfg: ModelConfig
    lora: Optional[LoraConfig] = None

    @nn.compact
    def __call__(self, tokens, positions=None, segment_ids=None, *, cache=None, cache_index=None,
                 kv_segment_ids=None, deterministic: bool = True, return_hidden: bool = False):
        cfg = self.cfg
        B, T = tokens.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        if segment_ids is None:
            segment_ids = jnp.ones((B, T), jnp.int32)
        x = _Embed(cfg, name="embed")(tokens)
        x = constrain(x, BATCH_LENGTH_EMBED)

        block = Block
        use_remat, policy = remat_policy(cfg.remat_policy)
        if use_remat and cache is None:
            block = nn.remat(Block, policy=policy, prevent_cse=not cfg.scan_layers, static_argnums=(7,))

        if cfg.scan_layers:
            scanned = nn.scan(
                block,
                variable_axes={"params": 0, "lora": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, new_cache = scanned(cfg, self.lora, name="layers")(
                x, positions, segment_ids, cache, cache_index, kv_segment_ids, deterministic)
        else:
            new_cache = [] if cache is not None else None
            for i in range(cfg.num_layers):
                layer_cache = cache[i] if cache is not None else None
                x, c = block(cfg, self.lora, name=f"layers_{i}")(
                    x, positions, segment_ids, layer_cache, cache_index, kv_segment_ids, deterministic)
                if cache is not None:
                    new_cache.append(c)

        x = RMSNorm(cfg, ("final_norm", "scale"), name="final_norm")(x)
        if return_hidden:
            return x, new_cache
        logits = Linear(cfg, ("lm_head", "kernel"), name="lm_head")(x)
        logits = constrain(logits.astype(jnp.float32), BATCH_LENGTH_VOCAB)
        return logits, new_cache


class _Embed(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens):
        table = declare(self, self.cfg, ("embed", "embedding"))
        return jnp.take(table, tokens, axis=0).astype(jnp.dtype(self.cfg.dtype))


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: Any = None, *, scanned: bool | None = None):
    """An empty KV cache, (k, v) of [batch, kv_heads, max_len, head_dim] per layer: only the kv heads are
    stored (GQA), kv-head-major so that every (row, kv head) reads one contiguous [length, head_dim] block —
    the attention products over the cache then need no transposed copy of it at each decode step."""
    dtype = jnp.dtype(dtype or cfg.dtype)
    scanned = cfg.scan_layers if scanned is None else scanned
    shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
    if scanned:
        z = jnp.zeros((cfg.num_layers,) + shape, dtype)
        return (z, z)
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.num_layers)]
