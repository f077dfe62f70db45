"""Me-LLaMA-70B-chat: LoRA instruction tuning of Me-LLaMA-70B (Me-LLaMA paper, docs/sources.md) on a TPU v5p-64 slice (32 chips).

The recipe and the unpublished choices are those of chat_13b_lora.py (LoRA r=16, alpha 32, dropout 0.05 on
all seven projections; 3 epochs, lr 1e-5, 214,595 samples; rows of 4096 tokens, loss on responses only).
Differences: global batch 64 rows (262k tokens; 2 sequences per chip) and full rematerialisation.
Sharding: the bf16 base (138 GB) FSDP-sharded over 32 chips = 4.3 GB/chip; 80 layers x 2 sequences x
4096 x 8192 bf16 block inputs kept by full remat = 10.7 GB/chip; adapters (0.30% of 70B: 207M) and their
AdamW state are a few MB per chip. The released 70B-chat tokenizer carries the llama-2-chat template: set
--config.data.mixture.instruct.template=llama2_chat to train with it instead of "me_llama".
Check the fit: `mellama-plan --config configs/me_llama/chat_70b_lora.py --topology v5p-64`.

    python -m mellama_jax.train --config configs/me_llama/chat_70b_lora.py --workdir gs://BUCKET/me-llama-70b-chat \
        --config.init_from=gs://BUCKET/me70b-hf --config.data.mixture.instruct.sources='gs://BUCKET/instructions/*.jsonl'
"""
from mellama_jax.config import sibling_config

# The slice this config is sized for, in Cloud's accelerator-type spelling (v5p-N counts TensorCores:
# 32 chips). mellama-plan plans it; tests/test_plan.py (make test-tpu) checks that it fits.
TOPOLOGY = "v5p-64"


def _chat_13b():
    return sibling_config(__file__, "chat_13b_lora.py")


def get_config():
    return _chat_13b().chat_config("llama2_70b", global_batch_size=64, remat_policy="full", checkpoint_every=100)
