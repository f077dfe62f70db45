"""`python -m mellama_jax.train`: the `mellama-train` command (mellama_jax/commands/train.py)."""
import sys

from mellama_jax.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
