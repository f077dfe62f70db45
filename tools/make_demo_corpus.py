#!/usr/bin/env python3
"""Write the demo's synthetic corpus, instruction sets and MIBE eval files (and optionally its tokenizer).

From a checkout: the same command as `mellama-make-demo-corpus` (mellama_jax/commands/make_demo_corpus.py).
"""
import sys

from mellama_jax.commands.make_demo_corpus import main

if __name__ == "__main__":
    sys.exit(main())
