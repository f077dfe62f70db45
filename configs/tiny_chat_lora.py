"""LoRA instruction tuning of a tiny model on the demo instruction set: trains in seconds on a CPU.

    mellama-make-demo-corpus --out_dir runs/demo/data --tokenizer_vocab 1024
    python -m mellama_jax.train --config configs/tiny_chat_lora.py:runs/demo/data --workdir runs/tiny_chat_lora \
        [--config.init_from=MODEL_CHECKPOINT_OR_HF_DIR]
    mellama-convert-jax --ckpt_dir runs/tiny_chat_lora --out_dir runs/tiny_chat_hf_base \
        --peft_dir runs/tiny_chat_peft          # or: --out_dir runs/tiny_chat_hf_merged --merge_lora

The argument after ":" is the demo data directory (instruct/*.jsonl, tokenizer/tokenizer.model). Without
init_from the frozen base is a random model (reproducible from train.seed) — enough to see the adapters
learn the response format; point init_from at a pretrained tiny model (e.g. the demo recipe's
pretrain/model) for a meaningful chat model. configs/tiny_chat_full.py is the same run training all weights.
"""
import os

from mellama_jax.config import sibling_config
from mellama_jax.train.config import default_config, model_fields


def demo_data(root: str):
    """configs/data/demo_mix.py (its `instruct` group reads the demo conversation + Alpaca files)."""
    return sibling_config(__file__, "data/demo_mix.py").get_config(root)


def tiny_chat(root: str):
    """Shared by the LoRA and the full fine-tuning tiny configs."""
    c = default_config()
    c.model = model_fields("tiny", vocab_size=1024, max_position_embeddings=256)
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.train.steps = 40
    c.train.seq_len = 256  # the longest demo conversations (~220 tokens) fit a row whole
    c.train.global_batch_size = 8
    c.optim.warmup_ratio = 0.05
    c.optim.b1, c.optim.b2 = 0.9, 0.999
    c.optim.weight_decay = 0.0
    c.checkpoint.every_steps = 20
    c.checkpoint.keep = 2
    c.eval.every_steps = 20
    c.eval.batches = 1
    c.log.every_steps = 5
    c.data.kind = "sft"
    c.data.tokenizer = os.path.join(root, "tokenizer", "tokenizer.model")
    c.data.mixture = demo_data(root)
    c.data.mixture.instruct.template = "me_llama"
    return c


def get_config(root: str = "runs/demo/data"):
    c = tiny_chat(root)
    c.train.lora.rank = 8
    c.train.lora.alpha = 16.0
    c.train.lora.dropout = 0.05
    c.train.lora.targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    c.optim.learning_rate = 1e-2  # adapters on a tiny model; the 13B/70B recipe uses 1e-5
    return c
