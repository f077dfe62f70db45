"""A training workdir -> a model checkpoint directory (what `mellama_jax.load`, evaluation and the HF export
in convert/export.py read)."""
from __future__ import annotations

from mellama_jax.checkpoints.model_dir import save_model_checkpoint
from mellama_jax.checkpoints.run_record import run_of
from mellama_jax.checkpoints.rundir import load_training_params


def export_model_checkpoint(workdir: str, out_dir: str, *, step: int | None = None,
                            tokenizer_dir: str | None = None, overwrite: bool = False) -> str:
    """Write the trained parameters of `workdir` (latest complete step unless `step`) as a model checkpoint
    directory (model_config.json + params/) that `mellama_jax.load` and the HF exporter read."""
    cfg, params, extras = load_training_params(workdir, step=step)
    return save_model_checkpoint(out_dir, cfg, params, tokenizer_dir=tokenizer_dir or extras["tokenizer_dir"],
                                      lora_cfg=extras["lora_config"], adapters=extras["adapters"],
                                      overwrite=overwrite, training_run=run_of(extras))
