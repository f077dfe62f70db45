"""Inference planning: jitted generation of Me-LLaMA's 70B and 13B compiled for TPU topologies ahead of time.

The per-chip weights must be the model's bytes over the chips that split them (the compiler's own figure,
checked against the parameter count) and the KV cache is sized from its shape. One compile per model (CI's TPU
job is long already): the largest batch is the extrapolation from that compile (`max_batch_checks=0`)."""
import pytest

from mellama_jax.config import preset
from mellama_jax.libtpu_env import libtpu_available
from mellama_jax.model import params as P
from mellama_jax.planning.inference import default_mesh, larger_topologies, plan_generate
from mellama_jax.planning.topology import parse_topology

needs_libtpu = pytest.mark.skipif(not libtpu_available(), reason="libtpu not installed (pip install -e '.[tpu]')")


def test_default_mesh_and_where_to_look_when_nothing_fits():
    mesh = default_mesh(preset("llama2_13b"), 16)
    assert (mesh.data, mesh.fsdp, mesh.tensor) == (2, 1, 8)  # 40 heads: 8 divides them, 16 does not
    assert larger_topologies(parse_topology("v5e-8")) == ["v5e-16", "v5e-32", "v5e-64"]
    assert larger_topologies(parse_topology("v5p-16"), doublings=1) == ["v5p-32"]  # v5p counts cores


@pytest.mark.tpu
@needs_libtpu
def test_70b_generation_fits_a_v5p_topology():
    cfg = preset("llama2_70b")
    plan = plan_generate(cfg, "v5p-16", batch=16, prompt_len=1024, new_tokens=256, max_batch_checks=0)
    print(plan.summary())  # the figures docs/planning.md quotes (pytest -s)
    assert plan.fits, plan.summary()
    assert plan.mesh == {"data": 1, "fsdp": 1, "tensor": 8}  # 64 heads over the 8 chips
    weights = P.count_params(cfg) * 2 / 8  # bf16, every weight split 8 ways (8 kv heads: one per chip)
    assert abs(plan.weight_bytes - weights) / weights < 0.01, plan.summary()
    assert plan.total_bytes <= plan.hbm_bytes and plan.tokens_per_s > 0


@pytest.mark.tpu
@needs_libtpu
def test_13b_generation_on_v5e_8_and_its_largest_batch():
    cfg = preset("llama2_13b")
    plan = plan_generate(cfg, "v5e-8", batch=8, prompt_len=512, new_tokens=128, max_batch_checks=0)
    print(plan.summary())
    assert plan.fits, plan.summary()
    assert plan.mesh == {"data": 1, "fsdp": 1, "tensor": 8}  # 40 heads: 5 per chip
    weights = P.count_params(cfg) * 2 / 8
    assert abs(plan.weight_bytes - weights) / weights < 0.01, plan.summary()
    assert plan.max_batch >= 16 and plan.max_batch % 2 == 0 and not plan.max_batch_compiled, plan.summary()
    assert plan.total_bytes <= plan.hbm_bytes and plan.tokens_per_s > 0
    # K and V, 40 layers, 8 rows (one replica), 640 slots, 40 heads over tensor 8, head_dim 128, bf16
    assert plan.cache_bytes == 2 * 40 * 8 * (512 + 128) * (40 // 8) * 128 * 2
