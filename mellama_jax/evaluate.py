"""`python -m mellama_jax.evaluate`: the `mellama-evaluate` command (mellama_jax/commands/evaluate.py).

Only the `python -m` spelling lives here; the evaluation itself is the `eval/` package."""
import sys

from mellama_jax.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
