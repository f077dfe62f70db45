"""Full fine-tuning (every weight trained) of a tiny model on the demo instruction set, in seconds on a CPU.

    mellama-make-demo-corpus --out_dir runs/demo/data --tokenizer_vocab 1024
    python -m mellama_jax.train --config configs/tiny_chat_full.py:runs/demo/data --workdir runs/tiny_chat_full

Same data, model and schedule as configs/tiny_chat_lora.py, with train.lora.rank = 0 (no adapters).
"""
from mellama_jax.config import sibling_config


def _tiny_chat_lora():
    return sibling_config(__file__, "tiny_chat_lora.py")


def get_config(root: str = "runs/demo/data"):
    c = _tiny_chat_lora().tiny_chat(root)
    c.train.lora.rank = 0  # full-parameter training
    c.optim.learning_rate = 3e-3
    return c
