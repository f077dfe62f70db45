#!/usr/bin/env python3
"""Export a mellama_jax model checkpoint as a Hugging Face LLaMA directory (sharded safetensors).

From a checkout: the same command as `mellama-convert-jax` (mellama_jax/commands/convert_jax_to_hf.py).
"""
import sys

from mellama_jax.commands.convert_jax_to_hf import main

if __name__ == "__main__":
    sys.exit(main())
