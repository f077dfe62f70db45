#!/usr/bin/env python3
"""Tokenize a data config's raw sources into ArrayRecord shards laid out as TFDS datasets.

From a checkout: the same command as `mellama-prepare-corpus` (mellama_jax/commands/prepare_corpus.py).
"""
import sys

from mellama_jax.commands.prepare_corpus import main

if __name__ == "__main__":
    sys.exit(main())
