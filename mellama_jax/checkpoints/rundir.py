"""Reading a training workdir (written by mellama_jax.train), and `load_checkpoint` for any of our directories.

`checkpoints/<step>/` is an orbax CheckpointManager step with items `state` = {"params", "opt_state", "step"}
and `config` (JSON). Only `state/params` is read here (an orbax partial restore), so the optimizer state is
never loaded to serve a model. LoRA runs store the adapters as `state/params` and not the frozen base: the
run config names the base (`init_from`), which is reloaded from there (`load_lora_base`).
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mellama_jax import paths
from mellama_jax.checkpoints.errors import CheckpointDamaged, CheckpointError
from mellama_jax.checkpoints.fileio import has_tokenizer, read_json
from mellama_jax.checkpoints.integrity import damage_of, quiet_failed_restores, step_damage
from mellama_jax.checkpoints.lora_base import load_lora_base
from mellama_jax.checkpoints.model_dir import (
    MODEL_CONFIG,
    PARAMS_DIR,
    TOKENIZER_DIR,
    check_stored_shapes,
    is_model_checkpoint,
    load_model_checkpoint,
    relayout_checkpoint,
    with_shardings,
)
from mellama_jax.checkpoints.run_record import chat_template_name
from mellama_jax.config import ConfigError, ModelConfig
from mellama_jax.model import params as P
from mellama_jax.model.lora import LoraConfig, iter_lora

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"  # inside a training workdir
WORKDIR_MODEL_CONFIG = MODEL_CONFIG  # fallback location of the model config inside a training workdir


# ---------------------------------------------------------------- training workdir
def is_training_workdir(path: str | os.PathLike) -> bool:
    return (paths.resolve(path) / CHECKPOINTS_DIR).is_dir()


def _workdir_configs(workdir: str, manager, step: int):
    """(ModelConfig, LoraConfig or None, run config dict) of a training run.

    Read from the step's `config` item (the run's config: a "model" group of ModelConfig fields, where
    and "train.lora" with rank 0 meaning full-parameter training), else from
    workdir/model_config.json (then the run config is {}).
    """
    step_dir = paths.join(workdir, CHECKPOINTS_DIR, str(step))
    if (paths.resolve(step_dir) / "config").is_dir():
        run_cfg = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
        model = run_cfg.get("model") if isinstance(run_cfg, dict) else None
        if isinstance(model, dict):
            cfg = ModelConfig.from_dict(model, source=f"{step_dir}/config['model']")
            return cfg, _lora_from_run_config(run_cfg, f"{step_dir}/config"), run_cfg
    fallback = paths.join(workdir, WORKDIR_MODEL_CONFIG)
    if paths.resolve(fallback).is_file():
        return ModelConfig.from_dict(read_json(fallback), source=fallback), None, {}
    raise CheckpointError(f"{workdir}: cannot find the model config: expected a 'model' group in "
                          f"{step_dir}/config or a {fallback}")


def _run_lora_group(run_cfg: dict) -> dict | None:
    train = run_cfg.get("train") if isinstance(run_cfg, dict) else None
    lora = train.get("lora") if isinstance(train, dict) else None
    return lora if isinstance(lora, dict) else None


def _lora_from_run_config(run_cfg: dict, source: str):
    lora = _run_lora_group(run_cfg)
    if lora is None or not lora.get("rank"):
        return None
    try:
        return LoraConfig.from_group(lora)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: train.lora is not a valid LoRA config ({e})") from e


def _stored_top_keys(state_dir: str) -> set[str]:
    """Top-level keys of the PyTree stored in an orbax item directory (from its metadata only)."""
    with ocp.PyTreeCheckpointer() as ckptr:
        metadata = ckptr.metadata(state_dir)
    metadata = getattr(metadata, "item_metadata", metadata)
    return set(dict(getattr(metadata, "tree", metadata)))


def _restore_step(workdir: str, manager, step: int, shardings, dtype):
    """(cfg, lora_cfg, run_cfg, restored, target dtype) of one step; CheckpointDamaged names a damaged file."""
    step_dir = paths.join(workdir, CHECKPOINTS_DIR, str(step))
    damage = step_damage(step, step_dir)
    if damage is not None:
        raise damage
    quiet_failed_restores()
    try:
        cfg, lora_cfg, run_cfg = _workdir_configs(workdir, manager, step)
        state_dir = paths.join(step_dir, "state")
        if lora_cfg is None:
            target_dtype = np.dtype(dtype or cfg.param_dtype).name
            abstract = {"params": with_shardings(P.abstract_params(cfg, dtype=target_dtype), shardings, cfg)}
        else:
            # LoRA runs train the adapters ("params") on top of a frozen base.
            target_dtype = np.dtype(dtype or _run_lora_group(run_cfg).get("base_dtype") or cfg.param_dtype).name
            adapters = P.tree_from_paths({p: jax.ShapeDtypeStruct(shape, np.float32)
                                          for p, shape, _, _, _ in iter_lora(cfg, lora_cfg)})
            abstract = {"params": adapters}
            if "frozen" in _stored_top_keys(state_dir):
                abstract["frozen"] = with_shardings(P.abstract_params(cfg, dtype=target_dtype), shardings, cfg)
        check_stored_shapes(state_dir, abstract)
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract), partial_restore=True)))
    except (CheckpointError, ConfigError):
        raise
    except Exception as e:  # noqa: BLE001 - TensorStore read errors reach us as bare Exception
        damage = damage_of(step, step_dir, e)
        if damage is not None:
            raise damage from e
        if isinstance(e, (ValueError, KeyError, FileNotFoundError)):
            raise CheckpointError(f"{step_dir}/state: cannot restore the parameters for this model "
                                  f"config ({e})") from e
        raise
    return cfg, lora_cfg, run_cfg, restored, target_dtype


def load_training_params(workdir: str | os.PathLike, *, step: int | None = None, shardings: dict | None = None,
                         dtype=None) -> tuple[ModelConfig, dict, dict[str, Any]]:
    """Restore the model parameters of a training checkpoint (latest complete step unless `step`).

    The newest step whose files are intact (checkpoints.integrity) is read: a damaged newer one is logged,
    naming the file, and skipped (not moved: reading changes nothing); with an explicit `step`, its damage is
    the error (CheckpointDamaged, naming the step and file).
    Only `state/params` is read (orbax partial restore; the optimizer state stays on disk). LoRA runs store
    the adapters as `state/params` and no base: the base is rebuilt from the reference in the run's config
    (`init_from`, or the seed of a random base; `load_lora_base`) in the run's `train.lora.base_dtype`
    unless `dtype`; a checkpoint that does store `state/frozen` uses that instead. Returns (cfg, params,
    extras) like `load_model_checkpoint` (for LoRA runs params is the base and extras["adapters"] the
    adapters, fp32 host arrays); extras["step"] is the step restored and extras["tokenizer_dir"] the
    workdir's `tokenizer/` when the run saved one there.
    """
    workdir = paths.as_str(workdir, what="workdir")
    ckpt_root = paths.join(workdir, CHECKPOINTS_DIR)
    if not paths.resolve(ckpt_root).is_dir():
        raise CheckpointError(f"{workdir}: not a training workdir (no {CHECKPOINTS_DIR}/ directory)")
    manager = ocp.CheckpointManager(ckpt_root, options=ocp.CheckpointManagerOptions(read_only=True),
                                    item_names=("state", "config"))
    try:
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"{ckpt_root}: no complete checkpoint step")
        if step is not None and step not in steps:
            raise CheckpointError(f"{ckpt_root}: no checkpoint for step {step}; available steps: {sorted(steps)}")
        damaged = []
        for candidate in [step] if step is not None else steps:
            try:
                cfg, lora_cfg, run_cfg, restored, target_dtype = _restore_step(workdir, manager, candidate,
                                                                               shardings, dtype)
            except CheckpointDamaged as d:
                if step is not None:
                    raise
                damaged.append(d)
                log.error("CHECKPOINT DAMAGED: %s (trying the previous step)", d)
                continue
            step = candidate
            break
        else:
            raise CheckpointError(f"{ckpt_root}: every checkpoint is damaged:\n  " + "\n  ".join(map(str, damaged)))
    finally:
        manager.close()
    cfg = cfg.replace(param_dtype=target_dtype)
    tok_dir = paths.join(workdir, TOKENIZER_DIR)
    extras = {"path": workdir, "step": int(step), "lora_config": lora_cfg, "adapters": None, "base": None,
              "run_config": run_cfg,
              "prompt_template": trained_template(run_cfg),
              "tokenizer_dir": tok_dir if paths.resolve(tok_dir).is_dir() and has_tokenizer(tok_dir) else None}
    if lora_cfg is None:
        return cfg, restored.state["params"], extras
    extras["adapters"] = restored.state["params"]
    if "frozen" in restored.state:
        return cfg, restored.state["frozen"], extras
    init_from = run_cfg.get("init_from") or ""
    seed = int((run_cfg.get("train") or {}).get("seed", 0))
    extras["base"] = init_from or f"random (seed {seed})"
    try:
        base = load_lora_base(cfg, init_from, seed=seed, dtype=target_dtype,
                              shardings=shardings(cfg) if callable(shardings) else shardings)
    except (CheckpointError, OSError) as e:
        raise CheckpointError(f"{workdir}: LoRA run (step {step}) stores adapters only; its base "
                              f"init_from={init_from!r} cannot be loaded: {e}") from e
    if extras["tokenizer_dir"] is None and init_from and (paths.resolve(init_from) / TOKENIZER_DIR).is_dir():
        extras["tokenizer_dir"] = paths.join(paths.as_str(init_from), TOKENIZER_DIR)
    return cfg, base, extras


def trained_template(run_cfg: dict | None) -> str | None:
    """The prompt template an instruction-tuning run trained with (data.mixture.instruct.template), or None."""
    return chat_template_name({"config": run_cfg or {}})


def load_checkpoint(path: str | os.PathLike, *, step: int | None = None, shardings=None, dtype=None,
                    scan_layers: bool | None = None) -> tuple[ModelConfig, dict, dict[str, Any]]:
    """A model checkpoint directory or a training workdir -> (cfg, params, extras), LoRA adapters unmerged
    in extras["adapters"]. `step` only applies to workdirs; `shardings` only when no relayout is asked."""
    path = paths.as_str(path)
    if is_model_checkpoint(path):
        return load_model_checkpoint(path, shardings=shardings, dtype=dtype, scan_layers=scan_layers)
    if is_training_workdir(path):
        cfg, params, extras = load_training_params(path, step=step, dtype=dtype, shardings=(
            None if scan_layers is not None else shardings))
        return relayout_checkpoint(cfg, params, extras, scan_layers)
    raise CheckpointError(f"{path}: neither a model checkpoint ({MODEL_CONFIG} + {PARAMS_DIR}/) nor a training "
                          f"workdir ({CHECKPOINTS_DIR}/<step>/)")
