"""The `splash` (Pallas TPU) and `cudnn` attention backends against the `xla` reference.

On CPU, splash runs in Pallas interpret mode: the same kernel code (block-sparse causal mask, segment ids,
online softmax, the dq/dkv backward kernels) that runs on TPU. The cuDNN wrapper is run with
implementation="xla", which exercises its mask construction; the cuDNN kernel itself needs a GPU. Marked
`tpu`: the splash kernel compiled by the TPU compiler for fake TPU devices (libtpu, no TPU).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mellama_jax.model.attention import cached_attention, get_attention, xla_attention
from mellama_jax.model.attention_gpu import cudnn_attention
from mellama_jax.model.attention_tpu import splash_attention
from mellama_jax.parallel import MeshConfig, activation_sharding, make_mesh
from mellama_jax.planning.topology import libtpu_available

needs_libtpu = pytest.mark.skipif(not libtpu_available(), reason="libtpu not installed (pip install -e '.[tpu]')")


def _qkv(seed, B, T, S, H, KV, D):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.normal(size=(B, T, H, D)), jnp.float32)
    k = jnp.asarray(r.normal(size=(B, S, KV, D)), jnp.float32)
    v = jnp.asarray(r.normal(size=(B, S, KV, D)), jnp.float32)
    return q, k, v


@pytest.mark.parametrize("B, T, S, H, KV, offset", [(2, 1, 20, 8, 4, 7), (3, 5, 12, 4, 2, 3), (1, 1, 9, 4, 4, 8)])
def test_cached_attention_over_a_kv_major_cache_equals_the_reference(B, T, S, H, KV, offset):
    """The decode path's attention (cache [B, KV, S, D], K as the left operand) is the reference function:
    GQA and MHA, one and several queries, segment ids including padding (0)."""
    q, k, v = _qkv(3, B, T, S, H, KV, 16)
    r = np.random.default_rng(4)
    q_seg = jnp.asarray(r.integers(0, 3, (B, T)), jnp.int32)
    kv_seg = jnp.asarray(r.integers(0, 3, (B, S)), jnp.int32)
    want = xla_attention(q, k, v, q_seg, kv_seg, offset)
    got = cached_attention(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), q_seg, kv_seg, offset)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def _packed_segments(B, T, seed=0):
    """Rows of several documents of random lengths, some ending in padding (segment 0)."""
    r = np.random.default_rng(seed)
    seg = np.zeros((B, T), np.int32)
    for b in range(B):
        t, doc = 0, 1
        end = T - int(r.integers(0, T // 4))
        while t < end:
            n = int(r.integers(3, T // 2))
            seg[b, t:min(t + n, end)] = doc
            t, doc = t + n, doc + 1
    return jnp.asarray(seg)


_xla = jax.jit(xla_attention, static_argnums=5)


def _close(a, b, tol=2e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


def test_splash_matches_xla_gqa_packed_unaligned_length():
    # T=100: not a multiple of the kernel's 128-wide blocks, so the padding path is exercised too.
    B, T, H, KV, D = 2, 100, 4, 2, 32
    q, k, v = _qkv(0, B, T, T, H, KV, D)
    seg = _packed_segments(B, T)
    assert len(np.unique(np.asarray(seg))) > 3
    _close(jax.jit(splash_attention)(q, k, v, seg, seg), _xla(q, k, v, seg, seg))


def test_splash_static_offset_chunk_matches_xla():
    # 40 queries at key indices 60..99 of a 160-slot cache: keys >= 100 exist but are in every query's future.
    B, T, S, H, KV, D, off = 1, 40, 160, 4, 1, 16, 60
    q, k, v = _qkv(1, B, T, S, H, KV, D)
    kv_seg = jnp.asarray(np.where(np.arange(S) < 20, 1, 2)[None].astype(np.int32))
    q_seg = kv_seg[:, off:off + T]
    _close(splash_attention(q, k, v, q_seg, kv_seg, off), _xla(q, k, v, q_seg, kv_seg, off))


def test_splash_traced_offset_uses_reference():
    B, T, S, H, KV, D = 1, 4, 32, 2, 2, 8
    q, k, v = _qkv(2, B, T, S, H, KV, D)
    seg_kv = jnp.ones((B, S), jnp.int32)
    seg_q = jnp.ones((B, T), jnp.int32)
    f = jax.jit(lambda off: splash_attention(q, k, v, seg_q, seg_kv, off))
    _close(f(jnp.int32(9)), _xla(q, k, v, seg_q, seg_kv, 9))


def test_splash_gradients_match_xla():
    B, T, H, KV, D = 1, 128, 2, 1, 8
    q, k, v = _qkv(3, B, T, T, H, KV, D)
    seg = _packed_segments(B, T, seed=3)
    w = jnp.asarray(np.random.default_rng(4).normal(size=(B, T, H, D)), jnp.float32)
    loss = lambda attend: lambda q, k, v: jnp.sum(attend(q, k, v, seg, seg) * w)
    got = jax.jit(jax.grad(loss(splash_attention), argnums=(0, 1, 2)))(q, k, v)
    want = jax.jit(jax.grad(loss(xla_attention), argnums=(0, 1, 2)))(q, k, v)
    for g, r in zip(got, want):
        _close(g, r, tol=1e-4)


def test_splash_sharded_on_mesh_matches_xla():
    """Under a mesh the kernel runs in shard_map: batch over data x fsdp, kv heads over tensor."""
    B, T, H, KV, D = 4, 128, 4, 2, 16
    q, k, v = _qkv(5, B, T, T, H, KV, D)
    seg = _packed_segments(B, T, seed=5)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    with activation_sharding(mesh):
        got = jax.jit(splash_attention)(q, k, v, seg, seg)
    _close(got, _xla(q, k, v, seg, seg))


def test_backends_are_chosen_by_config_name():
    assert get_attention("splash") is splash_attention
    assert get_attention("cudnn") is cudnn_attention
    assert get_attention("xla") is xla_attention


@pytest.mark.parametrize("T,S,offset", [(64, 64, 0), (16, 48, 0), (16, 48, 20)])
def test_cudnn_wrapper_masking_matches_xla(T, S, offset):
    B, H, KV, D = 2, 8, 2, 16
    q, k, v = _qkv(6, B, T, S, H, KV, D)
    kv_seg = jnp.asarray(np.stack([np.where(np.arange(S) < S // 3, 1, 2), np.where(np.arange(S) < 5, 0, 1)])
                         .astype(np.int32))
    start = offset if offset else 0
    q_seg = kv_seg[:, start:start + T]
    got = jax.jit(cudnn_attention, static_argnums=5, static_argnames="implementation")(
        q, k, v, q_seg, kv_seg, offset, implementation="xla")
    _close(got, _xla(q, k, v, q_seg, kv_seg, offset))
    if offset:  # a traced offset takes the general mask path
        traced = jax.jit(lambda o: cudnn_attention(q, k, v, q_seg, kv_seg, o, implementation="xla"))(offset)
        _close(traced, _xla(q, k, v, q_seg, kv_seg, offset))


def test_backend_shape_errors_are_clear():
    q, k, v = _qkv(7, 1, 8, 8, 3, 2, 8)
    seg = jnp.ones((1, 8), jnp.int32)
    with pytest.raises(ValueError, match="not a multiple"):
        splash_attention(q, k, v, seg, seg)
    with pytest.raises(ValueError, match="not a multiple"):
        cudnn_attention(q, k, v, seg, seg, implementation="xla")


@pytest.mark.tpu
@needs_libtpu
def test_splash_compiles_for_tpu():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as Spec

    from mellama_jax.planning.topology import fake_devices, parse_topology

    mesh = make_mesh(MeshConfig(fsdp=2, tensor=2), devices=fake_devices(parse_topology("v5e:2x2")))
    B, T, H, KV, D = 4, 512, 8, 2, 128
    sh = lambda *spec: NamedSharding(mesh, Spec(*spec))
    batch = ("data", "fsdp")
    args = (jax.ShapeDtypeStruct((B, T, H, D), jnp.bfloat16, sharding=sh(batch, None, "tensor")),
            jax.ShapeDtypeStruct((B, T, KV, D), jnp.bfloat16, sharding=sh(batch, None, "tensor")),
            jax.ShapeDtypeStruct((B, T, KV, D), jnp.bfloat16, sharding=sh(batch, None, "tensor")),
            jax.ShapeDtypeStruct((B, T), jnp.int32, sharding=sh(batch)))

    def grads(q, k, v, seg):
        f = lambda q, k, v: splash_attention(q, k, v, seg, seg).astype(jnp.float32).sum()
        return jax.grad(f, argnums=(0, 1, 2))(q, k, v)

    with activation_sharding(mesh):
        lowered = jax.jit(grads).lower(*args)
    text = lowered.as_text()
    # Forward, dq and dkv kernels, compiled by Mosaic (not interpreted).
    assert text.count("tpu_custom_call") == 3
    compiled = lowered.compile()
    assert compiled.memory_analysis().temp_size_in_bytes > 0
