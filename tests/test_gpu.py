"""On an NVIDIA GPU (`make test-gpu`): the cuDNN attention kernel and the model against their references.

CPU runs cover the `cudnn` backend's mask construction only (test_attention_backends.py runs its wrapper with
implementation="xla"); the fused kernel itself, the model's numerics on a GPU and a training run with the
kernel need a GPU. Every test here is marked `gpu` and skipped, with that reason, on a machine without one.
References: `xla_attention` (our reference attention, itself checked against transformers on CPU),
transformers' LlamaForCausalLM in torch, and the same training run with `attention="xla"`.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_fixtures import hf_logits, make_hf_model

import mellama_jax
from mellama_jax.data.synthetic import SyntheticSource
from mellama_jax.generate import generate
from mellama_jax.model.attention import xla_attention
from mellama_jax.model.attention_gpu import cudnn_attention
from mellama_jax.train.batches import global_batch
from mellama_jax.train.config import TrainConfig, default_config, model_fields
from mellama_jax.train.loop import build_engine
from mellama_jax.train.state import init_state


def _gpus() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _gpus(), reason="no GPU: JAX sees none (make test-gpu on a GPU machine)")]


def _packed_qkv(seed, B, T, S, H, KV, D, dtype):
    r = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(r.normal(size=s), dtype) for s in ((B, T, H, D), (B, S, KV, D), (B, S, KV, D)))
    # Row 0: three documents packed; row 1: padding (segment 0) then one document.
    kv_seg = np.stack([np.searchsorted([S // 4, S // 2], np.arange(S), side="right") + 1,
                       np.where(np.arange(S) < S // 8, 0, 1)]).astype(np.int32)[:B]
    return q, k, v, jnp.asarray(kv_seg)


@pytest.mark.parametrize("T,S,offset", [(256, 256, 0), (128, 256, 128)])
def test_cudnn_kernel_forward_and_gradients_match_xla_attention(T, S, offset):
    """bf16 inputs through the fused kernel vs the reference in fp32 on the same (bf16-rounded) inputs.
    offset != 0 is a chunk after a prefix (the mask path that folds causality into the boolean mask)."""
    B, H, KV, D = 2, 8, 2, 128
    q, k, v, kv_seg = _packed_qkv(0, B, T, S, H, KV, D, jnp.bfloat16)
    q_seg = kv_seg[:, offset:offset + T]
    probe = jnp.asarray(np.random.default_rng(1).normal(size=(B, T, H, D)), jnp.float32)

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v, q_seg, kv_seg, offset).astype(jnp.float32) * probe)

    fused = jax.jit(jax.value_and_grad(lambda q, k, v: loss(cudnn_attention, q, k, v), argnums=(0, 1, 2)))
    ref = jax.jit(jax.value_and_grad(lambda q, k, v: loss(xla_attention, q, k, v), argnums=(0, 1, 2)))
    (got_loss, got_grads) = fused(q, k, v)
    (ref_loss, ref_grads) = ref(*(x.astype(jnp.float32) for x in (q, k, v)))
    hlo = fused.lower(q, k, v).compile().as_text()
    assert "cudnn" in hlo.lower(), "the cuDNN fused attention custom call is not in the compiled step"
    out = jax.jit(lambda q, k, v: cudnn_attention(q, k, v, q_seg, kv_seg, offset))(q, k, v).astype(jnp.float32)
    ref_out = xla_attention(*(x.astype(jnp.float32) for x in (q, k, v)), q_seg, kv_seg, offset)
    # bf16 output: 8 bits of mantissa, values of order 1.
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=2e-2, rtol=2e-2)
    np.testing.assert_allclose(float(got_loss), float(ref_loss), rtol=2e-2, atol=1.0)
    for g, r in zip(got_grads, ref_grads):
        g, r = np.asarray(g.astype(jnp.float32)), np.asarray(r)
        # Relative to the gradient's scale: bf16 accumulation in the backward kernel.
        assert np.max(np.abs(g - r)) <= 3e-2 * np.max(np.abs(r)), np.max(np.abs(g - r)) / np.max(np.abs(r))


@pytest.fixture(scope="module")
def hf_gqa(tmp_path_factory):
    hf_dir = str(tmp_path_factory.mktemp("hf_gpu"))
    torch_model = make_hf_model(hf_dir, seed=3, num_attention_heads=4, num_key_value_heads=2)
    return hf_dir, torch_model


def test_model_logits_on_gpu_match_transformers(hf_gqa):
    hf_dir, torch_model = hf_gqa
    tokens = np.random.RandomState(0).randint(0, torch_model.config.vocab_size, size=(2, 16))
    model = mellama_jax.load(hf_dir)
    assert jax.tree.leaves(model.params)[0].devices() <= set(_gpus())
    np.testing.assert_allclose(model.logits(tokens), hf_logits(torch_model, tokens), rtol=0, atol=1e-4)


def test_greedy_decode_on_gpu_equals_transformers(hf_gqa):
    import torch
    hf_dir, torch_model = hf_gqa
    model = mellama_jax.load(hf_dir)
    prompts = [[1, 5, 9, 17, 33], [1, 70, 3], [1, 100, 101, 102, 103, 104, 105]]
    refs = []
    for p in prompts:
        with torch.no_grad():
            out = torch_model.generate(torch.as_tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                                       pad_token_id=0)
        refs.append(out[0, len(p):].tolist())
    assert generate(model.config, model.params, prompts, max_new_tokens=12, eos_id=-1) == refs


def _losses(attention: str, steps: int = 6) -> list[float]:
    c = default_config()
    c.model = model_fields("tiny", dtype="bfloat16", attention=attention, head_dim=64, num_heads=4,
                           num_kv_heads=2, hidden_size=256)
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1  # every device on fsdp (one on a single GPU)
    c.train.seq_len, c.train.global_batch_size, c.train.steps = 128, 8, steps
    c.optim.learning_rate, c.optim.warmup_ratio = 3e-3, 0.0
    cfg = TrainConfig.from_config_dict(c)
    engine = build_engine(cfg)
    state = init_state(engine.trainable, engine.tx, engine.layout, jax.random.key(0))
    src = SyntheticSource(cfg.data.synthetic, vocab_size=cfg.model.vocab_size, seq_len=128, global_batch_size=8)
    losses = []
    for i in range(steps):
        state, metrics = engine.train_step(state, global_batch(src.make_batch(i), engine.mesh, 8))
        losses.append(float(metrics["loss"]))
    return losses


def test_training_with_cudnn_attention_follows_the_xla_run():
    fused, ref = _losses("cudnn"), _losses("xla")
    assert fused[-1] < fused[0], fused
    np.testing.assert_allclose(fused, ref, rtol=2e-2)
