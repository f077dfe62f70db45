"""The command lines a recipe report prints: each runs as printed and reproduces the stage's numbers."""
from __future__ import annotations

import os
import shlex

from mellama_jax.recipe.stages import stage_dir

EVALUATED = {"base": "pretrain", "tuned": "instruct"}  # evaluation name -> the stage whose model it scores


def evaluate_command(recipe, name: str, out_dir: str) -> str:
    """`python -m mellama_jax.evaluate` with every setting the recipe's evaluate stage used for `name`."""
    e = recipe.c.evaluate
    args = ["python", "-m", "mellama_jax.evaluate",
            "--model", os.path.join(stage_dir(recipe.workdir, EVALUATED[name]), "model"),
            "--tasks", e.tasks, "--data_dir", recipe.data_path(e.data_dir) if e.data_dir else os.path.join(recipe.data_root, "eval"),
            "--out_dir", out_dir, "--template", e.template, "--matching", e.matching,
            "--max_new_tokens", str(e.max_new_tokens), "--batch_size", str(e.batch_size)]
    if e.limit:
        args += ["--limit", str(e.limit)]
    return " ".join(shlex.quote(a) for a in args)
