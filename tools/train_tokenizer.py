#!/usr/bin/env python3
"""Train a LLaMA-2-style sentencepiece tokenizer (BPE, byte fallback, split digits, whitespace kept).

From a checkout: the same command as `mellama-train-tokenizer` (mellama_jax/commands/train_tokenizer.py).
"""
import sys

from mellama_jax.commands.train_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
