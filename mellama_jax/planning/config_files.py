"""Loading a training config file for planning: `get_config()` from a Python file, a model preset, overrides.

The file format is the training engine's (ml_collections; see mellama_jax/train/config.py). Overrides are
`key.path=value` strings; values are parsed as Python literals when they are one (512, 1e-5, True, "x")
and kept as text otherwise. The result is validated against the training schema before it is returned.
"""
from __future__ import annotations

import ast
from typing import Optional, Sequence

import ml_collections

from mellama_jax.config import ConfigError, config_module


def _from_file(path: str) -> ml_collections.ConfigDict:
    return config_module(path).get_config()


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(cfg: ml_collections.ConfigDict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected KEY=VALUE, e.g. train.global_batch_size=512")
    key, text = assignment.split("=", 1)
    *parents, leaf = key.strip().split(".")
    node = cfg
    for name in parents:
        if name not in node:
            raise ConfigError(f"override {assignment!r}: config has no group {name!r}")
        node = node[name]
    if leaf not in node:
        raise ConfigError(f"override {assignment!r}: config has no field {key.strip()!r}")
    value = _parse_value(text)
    old = node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    node[leaf] = value


def load_config(path: Optional[str] = None, *, model: Optional[str] = None,
                overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The training ConfigDict: from `path` (or the schema defaults), with `model` preset and overrides."""
    from mellama_jax.train.config import TrainConfig, default_config, model_fields

    cfg = _from_file(path) if path else default_config()
    cfg = ml_collections.ConfigDict(cfg.to_dict())  # unlocked copy
    if model:
        # Keep the execution choices of the config (dtype, scan, remat, attention); replace the architecture.
        keep = {k: cfg.model[k] for k in ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention")}
        cfg.model = model_fields(model, **keep)
    for assignment in overrides:
        apply_override(cfg, assignment)
    # The step is compiled on abstract batches: no data is read, so the data source (and the files it
    # needs, such as the tokenizer) plays no part in a plan.
    cfg.data.kind = "synthetic"
    TrainConfig.from_config_dict(cfg)  # validate: unknown keys and bad values fail here, with their path
    return cfg
