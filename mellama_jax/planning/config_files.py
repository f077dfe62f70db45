"""Loading a training config file for planning: `get_config()` from a Python file, a model preset, overrides.

The file format is the training engine's (ml_collections; see mellama_jax/train/config.py). Overrides are
`key.path=value` strings (the planner's `--config.x=y`), parsed as Python literals when they are one (512, 1e-5,
True, "x") and kept as text otherwise, then applied through the schema's own `apply_overrides`, so an
unknown key fails exactly as a `--config.<key>` flag of the training CLI does.
"""
from __future__ import annotations

import ast
from typing import Optional, Sequence

import ml_collections

from mellama_jax.config import ConfigError, config_module
from mellama_jax.train.config import TrainConfig, apply_overrides, default_config, model_fields

# Model fields that are execution choices: a `model` preset given to the planner keeps the config's values.
EXECUTION_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention")


def parse_override(assignment: str) -> tuple[str, object]:
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected KEY=VALUE, e.g. train.global_batch_size=512")
    key, text = assignment.split("=", 1)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    return key.strip(), value


def file_config(path: Optional[str] = None) -> ml_collections.ConfigDict:
    """The config as the training CLI loads `--config path` with no overrides (the schema defaults without one)."""
    return config_module(path).get_config() if path else default_config()


def load_config(path: Optional[str] = None, *, model: Optional[str] = None,
                overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The training ConfigDict: from `path` (or the schema defaults), with `model` preset and overrides."""
    cfg = file_config(path)
    if model:
        # Keep the execution choices of the config (dtype, scan, remat, attention); replace the architecture.
        cfg.model = model_fields(model, **{k: cfg.model[k] for k in EXECUTION_FIELDS})
    apply_overrides(cfg, dict(parse_override(a) for a in overrides))
    # The step is compiled on abstract batches: no data is read, so the data source (and the files it
    # needs, such as the tokenizer) plays no part in a plan.
    cfg.data.kind = "synthetic"
    TrainConfig.from_config_dict(cfg)  # validate: unknown keys and bad values fail here, with their path
    return cfg
