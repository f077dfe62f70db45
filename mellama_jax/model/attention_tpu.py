"""`splash` attention backend: the Pallas TPU splash-attention kernel behind the common attention contract.

Same function as `attention.xla_attention` (see attention.py): query t, at key index q_offset + t, sees key s
iff s <= q_offset + t and both carry the same segment id; query head h reads kv head h // (H // KV).

How the contract is mapped onto the kernel:
* GQA: the kernel's multi-query variant (one kv head shared by a group of query heads) is vmapped over the
  kv heads and the batch, so kv heads are never repeated in memory.
* Causality is a static `CausalMask` (its block sparsity is computed once, at trace time, so fully masked
  blocks are skipped); segment ids go in as the kernel's `SegmentIds` and are and-ed with it.
* The kernel tiles sequences in blocks of 128-512. Other lengths are padded at the end: padded keys lie in
  every real query's future and padded queries get their own segment id, so padding never changes a real
  row and no padded row is empty (the kernel needs every row to see at least one key).
* Keys after the last query (s >= q_offset + T) can never be seen; they are cut off before the kernel.
* Sharding: a Pallas kernel is opaque to the SPMD partitioner, so under a mesh it runs inside `shard_map`,
  batch and heads split as the logical-axis rules of `mellama_jax.parallel` say (no mesh axis is named
  here). The sequence is never split (the kernel needs whole key sequences).
* A traced `q_offset` (the decode loop's cache index) cannot define a static mask; those calls use the XLA
  reference, which is what decoding uses on every platform anyway.

`interpret=None` runs the kernel compiled for TPU when the computation targets TPU (the mesh in context, or
the default backend) and in Pallas interpret mode elsewhere, so the kernel's numerics can be checked on CPU.
"""
from __future__ import annotations

import functools
import operator
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_kernel
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.interpreters import pxla
from jax.sharding import PartitionSpec

from mellama_jax.model.attention import xla_attention
from mellama_jax.parallel.rules import logical_to_spec

# Lane width of the TPU vector unit: the kernel's kv blocks must be multiples of it.
_LANES = 128
# Preferred block sizes, largest first (512 is what MaxText and the kernel authors use for long sequences).
_BLOCK_CHOICES = (512, 256, 128)
# Segment id given to padded positions; real segment ids are >= 0.
_PAD_SEGMENT = -1


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _block_for(length: int) -> int:
    return next(b for b in _BLOCK_CHOICES if length % b == 0)


def _static_offset(q_offset) -> Optional[int]:
    """q_offset as a Python int, or None if it is only known at run time (a tracer)."""
    if isinstance(q_offset, jax.core.Tracer):
        return None
    try:
        return operator.index(q_offset)
    except TypeError:
        return int(np.asarray(q_offset))


@functools.lru_cache(maxsize=64)
def _make_kernel(group: int, q_len: int, kv_len: int, offset: int, interpret: bool):
    """The multi-query splash kernel for `group` query heads sharing one kv head, causal with `offset`."""
    block_q, block_kv = _block_for(q_len), _block_for(kv_len)
    blocks = splash_kernel.BlockSizes(
        block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv,
        block_q_dkv=block_q, block_kv_dkv=block_kv, block_kv_dkv_compute=block_kv,
        block_q_dq=block_q, block_kv_dq=block_kv)
    mask = splash_mask.MultiHeadMask([splash_mask.CausalMask((q_len, kv_len), offset=offset)] * group)
    # The kernel holds its block-sparsity tables as arrays; build them as concrete constants even when
    # called while tracing, so the cached kernel never captures a tracer.
    with jax.ensure_compile_time_eval():
        return splash_kernel.make_splash_mqa(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1,
                                             interpret=interpret)


def _context_mesh():
    """The mesh the surrounding computation is being built for, or None.

    `jax.set_mesh` publishes an abstract mesh; the older `with mesh:` context (which
    some code paths may still enter) only keeps the physical one.
    """
    abstract = jax.sharding.get_abstract_mesh()
    if not abstract.empty:
        return abstract
    physical = pxla.thread_resources.env.physical_mesh
    return None if physical.empty else physical


def _mesh_platform(mesh) -> str:
    if mesh is None:
        return jax.default_backend()
    if isinstance(mesh, jax.sharding.AbstractMesh):
        return mesh.abstract_device.platform if mesh.abstract_device is not None else jax.default_backend()
    return mesh.devices.flat[0].platform


def _at_default_precision(fn):
    """`fn` traced at default matmul precision, forward and backward (its custom VJP traces its backward
    kernels when differentiated, outside any `with` around the forward call).

    Mosaic has no fp32-contraction matmul for bf16 operands, so a process-wide "highest" precision
    (jax_default_matmul_precision) would make the kernel fail to compile; below fp32 the kernel's own
    precision (bf16 operands, fp32 accumulation) is the only one there is.
    """
    default = lambda: jax.default_matmul_precision("default")

    @jax.custom_vjp
    def scoped(*args):
        with default():
            return fn(*args)

    def forward(*args):
        with default():
            out, pullback = jax.vjp(fn, *args)
        return out, pullback

    def backward(pullback, cotangent):
        with default():
            return pullback(cotangent)

    scoped.defvjp(forward, backward)
    return scoped


def _local_splash(q5, k, v, q_seg, kv_seg, *, offset: int, interpret: bool):
    """Splash attention on unsharded (or per-shard) arrays.

    q5 [B, T, KV, G, D] (already scaled), k/v [B, S, KV, D], segment ids [B, T] / [B, S]; S == offset + T.
    """
    B, T, KV, G, D = q5.shape
    S = k.shape[1]
    t_pad = _round_up(T, _LANES)
    # Each padded query q_offset + t (t >= T) must see the padded key at the same index: pad keys by the
    # same amount, then up to a whole block.
    s_pad = _round_up(S + (t_pad - T), _LANES)
    if t_pad != T:
        q5 = jnp.pad(q5, ((0, 0), (0, t_pad - T), (0, 0), (0, 0), (0, 0)))
        q_seg = jnp.pad(q_seg, ((0, 0), (0, t_pad - T)), constant_values=_PAD_SEGMENT)
    if s_pad != S:
        k = jnp.pad(k, ((0, 0), (0, s_pad - S), (0, 0), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, s_pad - S), (0, 0), (0, 0)))
        kv_seg = jnp.pad(kv_seg, ((0, 0), (0, s_pad - S)), constant_values=_PAD_SEGMENT)

    kernel = _make_kernel(G, t_pad, s_pad, offset, interpret)
    qh = jnp.transpose(q5, (0, 2, 3, 1, 4))  # [B, KV, G, T, D]
    kh = jnp.transpose(k, (0, 2, 1, 3))  # [B, KV, S, D]
    vh = jnp.transpose(v, (0, 2, 1, 3))

    def one_sequence(q_b, k_b, v_b, q_seg_b, kv_seg_b):
        ids = splash_kernel.SegmentIds(q=q_seg_b, kv=kv_seg_b)
        per_kv_head = lambda qg, kk, vv: kernel(qg, kk, vv, segment_ids=ids)
        return jax.vmap(per_kv_head)(q_b, k_b, v_b)  # [KV, G, T, D]

    run = lambda *a: jax.vmap(one_sequence)(*a)
    if q5.dtype != jnp.float32:
        run = _at_default_precision(run)
    out = run(qh, kh, vh, q_seg.astype(jnp.int32), kv_seg.astype(jnp.int32))
    out = jnp.transpose(out, (0, 3, 1, 2, 4))  # [B, T, KV, G, D]
    return out[:, :T]


def _shard_specs(mesh, B: int, KV: int, G: int):
    """shard_map specs: batch as the rules shard activations; kv heads if they divide, else query groups."""

    batch = logical_to_spec(("activation_batch",), (B,), mesh)[0]
    kv = logical_to_spec(("activation_kv_heads",), (KV,), mesh)[0]
    group = None if kv is not None else logical_to_spec(("activation_heads",), (G,), mesh)[0]
    q_spec = PartitionSpec(batch, None, kv, group, None)
    kv_spec = PartitionSpec(batch, None, kv, None)
    seg_spec = PartitionSpec(batch, None)
    return q_spec, kv_spec, seg_spec


def splash_attention(q, k, v, q_segment_ids, kv_segment_ids, q_offset=0, *, interpret: Optional[bool] = None):
    """Causal, segment-masked GQA attention with the Pallas TPU splash kernel.

    q [B, T, H, D], k/v [B, S, KV, D], q_segment_ids [B, T], kv_segment_ids [B, S] -> [B, T, H, D].
    `interpret`: None = compiled kernel when targeting TPU, interpret mode otherwise; True/False force it.
    """
    B, T, H, D = q.shape
    S, KV = k.shape[1], k.shape[2]
    if k.shape != (B, S, KV, D) or v.shape != k.shape:
        raise ValueError(f"splash_attention: k {k.shape} and v {v.shape} must both be [B={B}, S, KV, D={D}]")
    if H % KV:
        raise ValueError(f"splash_attention: {H} query heads are not a multiple of {KV} kv heads")
    if q_segment_ids.shape != (B, T) or kv_segment_ids.shape != (B, S):
        raise ValueError(f"splash_attention: segment ids {q_segment_ids.shape} / {kv_segment_ids.shape} must be "
                         f"[B, T]=({B}, {T}) / [B, S]=({B}, {S})")
    offset = _static_offset(q_offset)
    if offset is None:
        return xla_attention(q, k, v, q_segment_ids, kv_segment_ids, q_offset)
    if offset < 0 or offset + T > S:
        raise ValueError(f"splash_attention: queries at key indices [{offset}, {offset + T}) do not fit in {S} keys")
    # Keys after the last query are in every query's future: drop them rather than mask them.
    visible = offset + T
    k, v, kv_segment_ids = k[:, :visible], v[:, :visible], kv_segment_ids[:, :visible]

    mesh = _context_mesh()
    if interpret is None:
        interpret = _mesh_platform(mesh) != "tpu"
    G = H // KV
    # Scale q (in f32, then back) instead of the scores: the kernel takes raw logits.
    q5 = (q.astype(jnp.float32) * (D ** -0.5)).astype(q.dtype).reshape(B, T, KV, G, D)
    local = functools.partial(_local_splash, offset=offset, interpret=interpret)
    if mesh is None or mesh.size == 1:
        out = local(q5, k, v, q_segment_ids, kv_segment_ids)
    else:
        q_spec, kv_spec, seg_spec = _shard_specs(mesh, B, KV, G)
        out = jax.shard_map(local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, seg_spec, seg_spec),
                            out_specs=q_spec, check_vma=False)(q5, k, v, q_segment_ids, kv_segment_ids)
    return out.reshape(B, T, H, D).astype(q.dtype)
