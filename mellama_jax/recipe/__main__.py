"""`python -m mellama_jax.recipe`: the `mellama-recipe` command (mellama_jax/commands/recipe.py)."""
import sys

from mellama_jax.commands.recipe import main

if __name__ == "__main__":
    sys.exit(main())
