"""Me-LLaMA-13B-chat: LoRA instruction tuning of Me-LLaMA-13B (Me-LLaMA paper, docs/sources.md) on a TPU v5p-16 slice (8 chips).

Published recipe: LoRA, 3 epochs, learning rate 1e-5, 214,595 instruction samples (general, medical QA,
summarization, relation extraction, MIMIC tasks; Me-LLaMA conversation format), 8 x H100.
Not published, chosen here (and why):
* rank 16, alpha 32 (scale 2), dropout 0.05, all seven projections q/k/v/o/gate/up/down — the QLoRA /
  PEFT convention for LLaMA instruction tuning; adapters are 0.48% of the 13B parameters.
* AdamW β 0.9/0.999 (transformers Trainer defaults, which the Me-LLaMA code base uses), no weight decay,
  cosine schedule with 3% warmup, gradient clipping 1.0.
* Rows of 4096 tokens (LLaMA-2's context) packed from whole conversations, loss on responses only;
  prompts truncated to 3,500 tokens as in Me-LLaMA's preprocessing; the "me_llama" template
  ("Human: \\n…\\n\\nAssistant: \\n").
* Global batch 32 rows (131k tokens). Steps: 3 epochs x 214,595 samples x MEAN_SAMPLE_TOKENS / tokens per
  step. MEAN_SAMPLE_TOKENS = 640 is an estimate (short QA next to 3,500-token MIMIC notes): the loader's
  stats (tokens per row, padding) on your copy of the data give the real number — adjust train.steps.
Sharding: the bf16 base (26 GB) FSDP-sharded over 8 chips (3.3 GB/chip), adapters and their AdamW state
sharded like the kernels they adapt (lora_rank replicated), 4 sequences per chip with
save_dot_except_mlp remat. Check the fit with `mellama-plan --config configs/me_llama/chat_13b_lora.py
--topology v5p-16`.

Data, attached by flag (configs/data/me_llama_mix.py `instructions`): instruction files of any layout, a
path or glob (several comma-separated), local or gs://; --dry_run checks that they match files.
Run (base = Me-LLaMA-13B or LLaMA-2-13B converted with mellama-convert-hf, or an HF directory; the
tokenizer comes with it):
    python -m mellama_jax.train --config configs/me_llama/chat_13b_lora.py --workdir gs://BUCKET/me-llama-13b-chat \
        --config.init_from=gs://BUCKET/me13b-hf --config.data.mixture.instruct.sources='gs://BUCKET/instructions/*.jsonl'
Export: mellama-convert-jax --ckpt_dir WORKDIR --out_dir hf/base --peft_dir hf/adapter
        (PEFT adapter + its base) or --out_dir hf/merged --merge_lora (one merged model).
"""
import math

from mellama_jax.config import sibling_config
from mellama_jax.train.config import default_config, model_fields

# The slice this config is sized for, in Cloud's accelerator-type spelling (v5p-N counts TensorCores:
# 8 chips). mellama-plan plans it; tests/test_plan.py (make test-tpu) checks that it fits.
TOPOLOGY = "v5p-16"

SAMPLES = 214_595
EPOCHS = 3
MEAN_SAMPLE_TOKENS = 640  # estimate; see the docstring
ALL_PROJECTIONS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def chat_config(preset: str, *, global_batch_size: int, remat_policy: str, checkpoint_every: int):
    """The Me-LLaMA-chat LoRA recipe for one model size (chat_70b_lora.py reuses it)."""
    c = default_config()
    c.model = model_fields(preset, dtype="bfloat16", param_dtype="float32", scan_layers=True,
                           remat_policy=remat_policy, attention="splash")
    c.init_from = ""  # the pretrained Me-LLaMA model: set on the command line
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor, c.mesh.dcn_data = 1, -1, 1, 1
    c.train.seq_len = 4096
    c.train.global_batch_size = global_batch_size
    c.train.micro_batches = 1
    c.train.steps = math.ceil(EPOCHS * SAMPLES * MEAN_SAMPLE_TOKENS / (global_batch_size * c.train.seq_len))
    c.train.lora.rank = 16
    c.train.lora.alpha = 32.0
    c.train.lora.dropout = 0.05
    c.train.lora.targets = ALL_PROJECTIONS
    c.train.lora.base_dtype = "bfloat16"  # frozen: no fp32 master copy needed
    c.optim.learning_rate = 1e-5
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.03
    c.optim.b1, c.optim.b2 = 0.9, 0.999
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0
    c.checkpoint.every_steps = checkpoint_every
    c.checkpoint.keep = 3
    c.eval.every_steps = 200
    c.eval.batches = 4
    c.log.every_steps = 10
    c.log.peak_flops_per_device = 459e12  # TPU v5p bf16 peak per chip
    c.data.kind = "sft"
    c.data.tokenizer = ""  # the base model's tokenizer.model: set on the command line
    # Me-LLaMA template, prompts cut to 3,500 tokens, conversations longer than a row truncated.
    c.data.mixture = sibling_config(__file__, "../data/me_llama_mix.py").instructions()
    return c


def get_config():
    return chat_config("llama2_13b", global_batch_size=32, remat_policy="save_dot_except_mlp",
                       checkpoint_every=200)
