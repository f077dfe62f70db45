"""The few-row decode kernel (model.few_row_matmul) against numpy, and where generation uses it.

Greedy parity with transformers through the kernel is covered by test_generate.py (its batches of 3-4
prompts decode through it on CPU); here the product itself, on shapes that exercise the kernel's edges
(rows not a multiple of 4, K not a multiple of 8, one panel, an odd number of panels).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hf_fixtures import make_hf_model
from mellama_jax.config import ModelConfig
from mellama_jax.convert.mapping import params_from_hf
from mellama_jax.generate import DecodeSpec, decode_fn, left_pad, pack_stop_sequences
from mellama_jax.generate.decode import packed_kernels, uses_few_row_kernel
from mellama_jax.model import few_row_matmul as F
from mellama_jax.model import params as P

pytestmark = pytest.mark.skipif(not F.available(), reason=f"few-row kernel unavailable: {F.unavailable_reason()}")


@pytest.mark.parametrize("m,k,n", [(1, 64, 16), (3, 100, 48), (4, 512, 1376), (5, 1376, 512), (8, 512, 4096),
                                   (13, 37, 80), (16, 256, 2000 * 16)])
def test_kernel_equals_numpy(m, k, n):
    rng = np.random.default_rng(m * 1000 + k)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32)
    got = np.asarray(jax.jit(lambda x, w: F.matmul(x, F.pack(w)))(x, w))
    ref = x.astype(np.float64) @ w.astype(np.float64)
    # An fp32 sum of k rounded terms: error within about sqrt(k) ulps of the sum of the terms' magnitudes
    # (2x margin). A wrong panel, row or column is off by O(1).
    bound = 2 * np.sqrt(k) * np.finfo(np.float32).eps * (np.abs(x).astype(np.float64) @ np.abs(w))
    assert np.all(np.abs(got - ref) <= bound), np.max(np.abs(got - ref) / bound)


def test_kernel_packed_once_and_reused_inside_a_loop():
    """Packed once outside, used at every step of a while loop (as the decode loop does)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64), dtype=np.float32) / 8
    x = rng.standard_normal((6, 64), dtype=np.float32)

    def run(x, w):
        packed = F.pack(w)
        return jax.lax.fori_loop(0, 5, lambda i, h: jnp.tanh(F.matmul(h, packed)), x)

    ref = x.astype(np.float64)
    for _ in range(5):
        ref = np.tanh(ref @ w)
    np.testing.assert_allclose(np.asarray(jax.jit(run)(x, w)), ref, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_gqa():
    """A tiny random transformers model's config and scanned params."""
    hf = make_hf_model(seed=0, num_key_value_heads=2)
    cfg = ModelConfig.from_hf_config(hf.config)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    return cfg, params_from_hf(cfg, state.__getitem__, scanned=True)


def test_packed_kernels_cover_the_projections_and_lm_head(tiny_gqa):
    cfg, params = tiny_gqa
    packed = P.flatten_tree(packed_kernels(cfg, P.unstack_layers(params, cfg.num_layers)))
    names = {path[-2] for path in packed}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"}
    q = packed[("layers_0", "attn", "q_proj", "kernel")]
    assert q.shape == (cfg.num_heads * cfg.head_dim // F.PANEL, cfg.hidden_size, F.PANEL)


def test_decode_uses_the_kernel_for_a_few_rows_only(tiny_gqa, monkeypatch):
    cfg, params = tiny_gqa
    stop_ids, stop_lens = pack_stop_sequences([])

    def custom_calls(batch):
        spec = DecodeSpec(cfg=cfg, batch=batch, prompt_len=8, max_new_tokens=3)
        tokens, mask = left_pad([[1, 5, 9]], batch, 8)
        text = decode_fn(spec).lower(params, None, tokens, mask, jax.random.key(0), np.int32(-1),
                                     stop_ids, stop_lens).as_text()
        return text.count(F.TARGET), uses_few_row_kernel(spec)

    # 7 projections x 2 layers + the LM head inside the loop.
    assert custom_calls(4) == (7 * cfg.num_layers + 1, True)
    assert custom_calls(1) == (0, False)  # one row: XLA's matrix-vector product streams at bandwidth already
    assert custom_calls(32) == (0, False)
    monkeypatch.setenv("MELLAMA_JAX_FEW_ROW_KERNEL", "0")
    decode_fn.cache_clear()
    try:
        assert custom_calls(4) == (0, False)
    finally:
        decode_fn.cache_clear()
