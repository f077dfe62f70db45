"""`python -m mellama_jax.generate`: the `mellama-generate` command (mellama_jax/commands/generate.py)."""
import sys

from mellama_jax.commands.generate import main

if __name__ == "__main__":
    sys.exit(main())
