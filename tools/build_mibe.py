#!/usr/bin/env python3
"""Build a MIBE test set from a dataset's original distribution, with Me-LLaMA's prompt templates.

From a checkout: the same command as `mellama-build-mibe` (mellama_jax/commands/build_mibe.py).
"""
import sys

from mellama_jax.commands.build_mibe import main

if __name__ == "__main__":
    sys.exit(main())
