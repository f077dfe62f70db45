#!/usr/bin/env python3
"""Convert a Hugging Face LLaMA-2 directory into a mellama_jax model checkpoint (orbax), streaming.

From a checkout: the same command as `mellama-convert-hf` (mellama_jax/commands/convert_hf_to_jax.py).
"""
import sys

from mellama_jax.commands.convert_hf_to_jax import main

if __name__ == "__main__":
    sys.exit(main())
