"""mellama-recipe --config configs/me_llama/recipe_13b.py --workdir DIR [--config.key=value ...] [--stages a,b]
[--force STAGE] [--dry_run]

The staged Me-LLaMA recipe (prepare → convert → pretrain → instruct → evaluate → export → report), resumable
stage by stage: the real recipe (configs/me_llama/recipe_13b.py: `--config.data.root` = the corpus sources,
`--config.init_from` = LLaMA-2's HF directory) or the demo (configs/demo.py). --dry_run prints every stage's
command without running anything.

`--config.init_from=DIR` (a Hugging Face LLaMA directory or a model checkpoint) starts pretraining from those
weights: the model architecture and tokenizer of every stage come from DIR unless overridden explicitly.
"""
from __future__ import annotations

import logging
import sys

from absl import flags
from ml_collections import config_flags

from mellama_jax import cli
from mellama_jax.recipe.driver import Recipe, command_line
from mellama_jax.train.init_from import command_line_keys
from mellama_jax.train.loop import TrainingError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Recipe config file: configs/me_llama/recipe_13b.py (the real recipe), configs/demo.py, ...")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: config.workdir).")
_STAGES = flags.DEFINE_string("stages", "", "Run only up to and including these stages (comma-separated).")
_FORCE = flags.DEFINE_string("force", "", "Run this stage (and every stage after it) again even if complete.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Check the inputs (base weights, tokenizer, corpus sources, "
                             "evaluation data) and print every stage's command; run and write nothing.")
flags.DEFINE_bool("debug", False, "Show tracebacks of errors.")
flags.mark_flags_as_required(["config"])


def main(argv=None) -> int:
    return cli.run(_main, argv, absl_flags=True, user_errors=(TrainingError,),
                   on_interrupt="rerun the same command to continue")


def _main(argv) -> int:
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = _CONFIG.value
    workdir = _WORKDIR.value or config.workdir
    recipe = Recipe(config, workdir, command=command_line(), explicit=command_line_keys(flags.FLAGS["config"]))
    if _DRY_RUN.value:
        for line in recipe.dry_run_lines():
            print(f"dry run: {line}")
        return 0
    summaries = recipe.run(only=tuple(s for s in _STAGES.value.split(",") if s), force=_FORCE.value or None)
    if "report" in summaries:
        print(f"done: {recipe.path('report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
