"""Me-LLaMA-13B continual pretraining of LLaMA-2-13B (Me-LLaMA paper, docs/sources.md) on a TPU v5p-256 slice (128 chips).

Recipe: AdamW β 0.9/0.95, lr 8e-6, weight decay 1e-5, cosine with 5% warmup, bf16 compute (fp32 master),
one epoch over 129B tokens of the 15:1:4 biomedical:clinical:general mixture. Not published by Me-LLaMA:
sequence length (LLaMA-2's 4096 here), global batch (512 x 4096 = 2.1M tokens, LLaMA-2's scale) and
clipping (1.0). 129e9 / (512 * 4096) = 61,513 steps.

Sharding: FSDP over all 128 chips (13B x 16 bytes of params + Adam + grads = 1.6 GiB/chip); 4 sequences
per chip; remat keeps q/k/v and the attention output projection (save_dot_except_mlp). Check the fit before a run with
the AOT planner (mellama-plan) on the target topology.
Data, attached by flag (configs/data/me_llama_mix.py `prepared_mixture`): the corpus mellama-prepare-corpus
wrote, local or gs://, with every component (biomedical, clinical, general; weights 15:1:4 by tokens) and
its held-out split. Held-out loss every 1000 steps; MIBE tasks during training with --config.eval.tasks and
--config.eval.task_data_dir. --dry_run checks that the corpus is finished and holds every component.
Run:  python -m mellama_jax.train --config configs/me_llama/pretrain_13b.py --workdir gs://BUCKET/me-llama-13b \
      --config.init_from=gs://BUCKET/llama2-13b --config.data.mixture.prepared_dir=gs://BUCKET/corpus/me_llama
(the tokenizer comes with init_from; --config.data.tokenizer=PATH names another)
"""
from mellama_jax.config import sibling_config
from mellama_jax.train.config import default_config, model_fields

# The slice this config is sized for, in Cloud's accelerator-type spelling (v5p-N counts TensorCores:
# 128 chips). mellama-plan plans it; tests/test_plan.py (make test-tpu) checks that it fits.
TOPOLOGY = "v5p-256"

TOTAL_TOKENS = 129_000_000_000


def get_config():
    c = default_config()
    c.model = model_fields("llama2_13b", dtype="bfloat16", param_dtype="float32", scan_layers=True,
                           remat_policy="save_dot_except_mlp", attention="splash")
    c.init_from = ""  # converted LLaMA-2-13B (mellama-convert-hf); set on the command line
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor, c.mesh.dcn_data = 1, -1, 1, 1
    c.train.seq_len = 4096
    c.train.global_batch_size = 512
    c.train.micro_batches = 1
    c.train.steps = TOTAL_TOKENS // (c.train.global_batch_size * c.train.seq_len)
    c.optim.learning_rate = 8e-6
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.05
    c.optim.b1, c.optim.b2 = 0.9, 0.95
    c.optim.weight_decay = 1e-5
    c.optim.clip_norm = 1.0
    c.checkpoint.every_steps = 500
    c.checkpoint.keep = 3
    c.eval.every_steps = 1000
    c.eval.batches = 8
    c.log.every_steps = 10
    c.log.peak_flops_per_device = 459e12  # TPU v5p bf16 peak per chip
    c.data.kind = "mixture"
    c.data.tokenizer = ""
    c.data.mixture = sibling_config(__file__, "../data/me_llama_mix.py").prepared_mixture()
    return c
