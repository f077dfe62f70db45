"""Me-LLaMA-70B continual pretraining of LLaMA-2-70B (Me-LLaMA paper, docs/sources.md) on a TPU v5p-512 slice (256 chips).

Same recipe as pretrain_13b.py (lr 8e-6, β 0.9/0.95, wd 1e-5, cosine, 5% warmup, 129B tokens, seq 4096,
global batch 512). Sharding: FSDP over all 256 chips — 70B x 16 bytes of params + Adam + grads = 4.4 GiB per
chip — with MaxText's save_dot_except_mlpwi remat (q/k/v, out_proj and the MLP output kept, the MLP's two
wide inputs recomputed): `mellama-plan --sweep --micro_batch 2` on v5p-512 picks it as the least recompute that
fits (46.0 GiB/chip, 1.28x the model FLOPs; full remat 25.5 GiB at 1.33x; minimal needs 109 GiB). Across several
slices set mesh.dcn_data to the slice count (data axis over DCN,
only the gradient all-reduce crosses it) and mesh.data to a multiple of it. Verify with mellama-plan.
"""
from mellama_jax.config import sibling_config
from mellama_jax.train.config import model_fields

# The slice this config is sized for, in Cloud's accelerator-type spelling (v5p-N counts TensorCores:
# 256 chips). mellama-plan plans it; tests/test_plan.py (make test-tpu) checks that it fits.
TOPOLOGY = "v5p-512"


def get_config():
    c = sibling_config(__file__, "pretrain_13b.py").get_config()  # the recipe: optimizer, data, steps, logging
    c.model = model_fields("llama2_70b", dtype="bfloat16", param_dtype="float32", scan_layers=True,
                           remat_policy="save_dot_except_mlpwi", attention="splash")
    c.checkpoint.every_steps = 250  # a 70B step costs ~5x a 13B one: keep the work lost to a preemption alike
    return c
