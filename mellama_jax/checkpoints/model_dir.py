"""Our model checkpoint directory (written by the HF import in convert/hf.py and by training exports):

    model_config.json     ModelConfig.to_dict(); `scan_layers` and `param_dtype` describe the stored tree
    params/               orbax (StandardCheckpointer) parameter tree
    tokenizer/            optional: the HF tokenizer files of data/hf_tokenizer.py (tokenizer.model, tokenizer.json, ...)
    lora_config.json      optional, LoRA runs: LoraConfig fields
    lora/                 optional, LoRA runs: orbax adapter tree (the "lora" collection)
    training_run.json     optional: the run it was exported from (config, step, metrics summary; model_card.py)

Written through `fileio.atomic_output_dir` (complete or absent). Shapes are checked against the config before
every restore (orbax would silently pad or truncate). Training workdirs are read by `checkpoints/rundir.py`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mellama_jax import paths
from mellama_jax.checkpoints.errors import CheckpointError
from mellama_jax.checkpoints.fileio import atomic_output_dir, copy_tokenizer_files, has_tokenizer, is_primary, read_json, require_complete, write_json
from mellama_jax.checkpoints.run_record import TRAINING_RUN
from mellama_jax.config import ModelConfig
from mellama_jax.model import params as P
from mellama_jax.model.lora import LoraConfig, iter_lora

MODEL_CONFIG = "model_config.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"
LORA_CONFIG = "lora_config.json"
LORA_DIR = "lora"


# ---------------------------------------------------------------- orbax helpers
def _save_tree(path: str, tree: dict) -> None:
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree)
        ckptr.wait_until_finished()


def _restore_tree(path: str, abstract: dict) -> dict:
    check_stored_shapes(path, abstract)
    with ocp.PyTreeCheckpointer() as ckptr:
        return ckptr.restore(path, args=ocp.args.PyTreeRestore(item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)))


def check_stored_shapes(path: str, abstract: dict) -> None:
    """Compare the shapes stored in an orbax tree checkpoint with `abstract` (a subtree of it may be asked for).

    orbax silently truncates or zero-pads an array restored onto a different shape, so a checkpoint that
    does not match its model config must be caught here, before the restore.
    """
    with ocp.PyTreeCheckpointer() as ckptr:
        metadata = ckptr.metadata(path)
    metadata = getattr(metadata, "item_metadata", metadata)
    stored = P.flatten_tree(dict(getattr(metadata, "tree", metadata)))
    problems = []
    for leaf_path, want in P.flatten_tree(abstract).items():
        name = "/".join(leaf_path)
        if leaf_path not in stored:
            problems.append(f"missing {name}")
        elif tuple(stored[leaf_path].shape) != tuple(want.shape):
            problems.append(f"{name} is stored with shape {tuple(stored[leaf_path].shape)}, expected {tuple(want.shape)}")
    if problems:
        raise CheckpointError(f"{path}: does not match the model config: " + "; ".join(problems))


def _tree_dtype(tree: dict, source: str) -> str:
    dtypes = {np.dtype(x.dtype).name for x in jax.tree.leaves(tree)}
    if len(dtypes) != 1:
        raise CheckpointError(f"{source}: parameters mix dtypes {sorted(dtypes)}; cast them to one dtype first")
    return dtypes.pop()


def with_shardings(abstract: dict, shardings, cfg: ModelConfig) -> dict:
    """Attach shardings (a tree, or a function cfg -> tree) to the abstract parameter tree."""
    if shardings is None:
        return abstract
    if callable(shardings):
        shardings = shardings(cfg)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract, shardings)


# ---------------------------------------------------------------- model checkpoint directory
def is_model_checkpoint(path: str | os.PathLike) -> bool:
    path = paths.resolve(path)
    return (path / MODEL_CONFIG).is_file() and (path / PARAMS_DIR).is_dir()


def save_model_checkpoint(out_dir: str | os.PathLike, cfg: ModelConfig, params: dict, *,
                          tokenizer_dir: str | os.PathLike | None = None, lora_cfg=None, adapters: dict | None = None,
                          overwrite: bool = False, training_run: dict | None = None) -> str:
    """Write a model checkpoint directory (see module docstring) atomically; returns its absolute path.

    `params` may be numpy arrays or (sharded) jax Arrays, scanned (`layers/…`) or not (`layers_i/…`);
    the stored `model_config.json` records the layout and dtype actually saved. With `lora_cfg` and
    `adapters` the LoRA collection is saved beside the frozen base. `training_run` (the run it was exported
    from: config, step, metrics; checkpoints.run_record.training_run) is stored as `training_run.json`.
    """
    scanned = "layers" in params
    cfg = cfg.replace(scan_layers=scanned)
    P.check_params(cfg, params, scanned=scanned, source=f"save_model_checkpoint({out_dir})")
    cfg = cfg.replace(param_dtype=_tree_dtype(params, f"save_model_checkpoint({out_dir})"))
    if (lora_cfg is None) != (adapters is None):
        raise CheckpointError("save_model_checkpoint: pass lora_cfg and adapters together (or neither)")
    if tokenizer_dir is not None and not has_tokenizer(
            paths.resolve(tokenizer_dir).parent if paths.resolve(tokenizer_dir).is_file() else tokenizer_dir):
        raise CheckpointError(f"{tokenizer_dir}: no tokenizer.model or tokenizer.json to copy")

    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        if is_primary():
            write_json(paths.join(tmp, MODEL_CONFIG), cfg.to_dict())
            if tokenizer_dir is not None:
                copy_tokenizer_files(tokenizer_dir, paths.join(tmp, TOKENIZER_DIR))
            if lora_cfg is not None:
                write_json(paths.join(tmp, LORA_CONFIG), dataclasses.asdict(lora_cfg))
            if training_run is not None:
                write_json(paths.join(tmp, TRAINING_RUN), training_run)
        _save_tree(paths.join(tmp, PARAMS_DIR), params)
        if adapters is not None:
            _check_adapters(cfg, lora_cfg, adapters, source=f"save_model_checkpoint({out_dir})")
            _save_tree(paths.join(tmp, LORA_DIR), adapters)
    return paths.as_str(out_dir)


def _check_adapters(cfg: ModelConfig, lora_cfg, adapters: dict, source: str) -> None:
    expected = {p: shape for p, shape, _, _, _ in iter_lora(cfg, lora_cfg, scanned=cfg.scan_layers)}
    got = {p: tuple(np.shape(v)) for p, v in P.flatten_tree(adapters).items()}
    if expected != got:
        missing = sorted("/".join(p) for p in set(expected) - set(got))
        extra = sorted("/".join(p) for p in set(got) - set(expected))
        shapes = sorted(f"{'/'.join(p)} {got[p]} != {expected[p]}" for p in set(got) & set(expected)
                        if got[p] != expected[p])
        raise CheckpointError(f"{source}: LoRA adapters do not match lora_config: missing {missing}, "
                              f"unexpected {extra}, mis-shaped {shapes}")


def read_model_config(ckpt_dir: str | os.PathLike) -> ModelConfig:
    path = paths.join(os.fspath(ckpt_dir), MODEL_CONFIG)
    if not paths.resolve(path).is_file():
        raise CheckpointError(f"{ckpt_dir}: not a model checkpoint (no {MODEL_CONFIG})")
    try:
        return ModelConfig.from_dict(read_json(path), source=path)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def load_model_checkpoint(ckpt_dir: str | os.PathLike, *, shardings: dict | None = None, dtype=None,
                          scan_layers: bool | None = None) -> tuple[ModelConfig, dict, dict[str, Any]]:
    """Restore a model checkpoint directory → (cfg, params, extras).

    shardings: a tree of `jax.sharding.Sharding` matching the parameter tree (e.g. from
        `parallel.tree_shardings(mesh, params.logical_axes(cfg), params.abstract_params(cfg))`), or a function
        cfg -> such a tree (the config is only known once the directory is read): every leaf is restored
        straight onto its shards. None: host numpy arrays.
    dtype: restore (cast) parameters to this dtype; None keeps the stored one. cfg.param_dtype follows.
    scan_layers: return the other layout (stacked `layers/` vs `layers_i/`) than the stored one.
    extras: {"tokenizer_dir": path or None, "lora_config": LoraConfig or None, "adapters": tree or None,
             "path": absolute checkpoint path, "training_run": the run it was exported from, or None}.
    """
    ckpt_dir = paths.as_str(ckpt_dir, what="checkpoint")
    if not paths.resolve(ckpt_dir).is_dir():
        raise CheckpointError(f"{ckpt_dir}: no such checkpoint directory")
    require_complete(ckpt_dir, "model checkpoint")
    cfg = read_model_config(ckpt_dir)
    params_dir = paths.join(ckpt_dir, PARAMS_DIR)
    if not paths.resolve(params_dir).is_dir():
        raise CheckpointError(f"{ckpt_dir}: incomplete model checkpoint (no {PARAMS_DIR}/ directory)")
    target_dtype = np.dtype(dtype or cfg.param_dtype).name
    relayout = scan_layers is not None and scan_layers != cfg.scan_layers
    abstract = P.abstract_params(cfg, dtype=target_dtype)
    if not relayout:
        abstract = with_shardings(abstract, shardings, cfg)
    try:
        params = _restore_tree(params_dir, abstract)
    except CheckpointError:
        raise
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise CheckpointError(f"{params_dir}: cannot restore parameters for {MODEL_CONFIG} ({e})") from e
    cfg = cfg.replace(param_dtype=target_dtype)
    if relayout:
        params, cfg = _relayout(cfg, params, scan_layers, shardings)

    extras: dict[str, Any] = {"path": ckpt_dir, "lora_config": None, "adapters": None, "tokenizer_dir": None,
                              "training_run": None}
    run_path = paths.resolve(paths.join(ckpt_dir, TRAINING_RUN))
    if run_path.is_file():
        extras["training_run"] = json.loads(run_path.read_text())
    tok_dir = paths.join(ckpt_dir, TOKENIZER_DIR)
    if paths.resolve(tok_dir).is_dir() and has_tokenizer(tok_dir):
        extras["tokenizer_dir"] = tok_dir
    lora_path = paths.join(ckpt_dir, LORA_CONFIG)
    if paths.resolve(lora_path).is_file():
        extras["lora_config"], extras["adapters"] = _load_adapters(ckpt_dir, cfg, lora_path, scan_layers)
    return cfg, params, extras


def _relayout(cfg: ModelConfig, params: dict, scan_layers: bool, shardings: dict | None):
    convert = P.stack_layers if scan_layers else P.unstack_layers
    params = jax.tree.map(np.asarray, convert(params, cfg.num_layers))
    cfg = cfg.replace(scan_layers=scan_layers)
    if shardings is not None:
        params = jax.tree.map(jax.device_put, params, shardings(cfg) if callable(shardings) else shardings)
    return params, cfg


def _load_adapters(ckpt_dir: str, cfg: ModelConfig, lora_path: str, scan_layers: bool | None):
    try:
        lora_cfg = LoraConfig(**read_json(lora_path))
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{lora_path}: not a valid LoRA config ({e})") from e
    stored_scanned = read_model_config(ckpt_dir).scan_layers
    abstract = P.tree_from_paths({p: jax.ShapeDtypeStruct(shape, np.float32)
                                  for p, shape, _, _, _ in iter_lora(cfg, lora_cfg, scanned=stored_scanned)})
    lora_dir = paths.join(ckpt_dir, LORA_DIR)
    if not paths.resolve(lora_dir).is_dir():
        raise CheckpointError(f"{ckpt_dir}: has {LORA_CONFIG} but no {LORA_DIR}/ directory")
    adapters = _restore_tree(lora_dir, abstract)
    if scan_layers is not None and scan_layers != stored_scanned:
        convert = P.stack_layers if scan_layers else P.unstack_layers
        adapters = jax.tree.map(np.asarray, convert(adapters, cfg.num_layers))
    return lora_cfg, adapters


def relayout_checkpoint(cfg: ModelConfig, params: dict, extras: dict, scan_layers: bool | None):
    """Switch params (and LoRA adapters in extras) to the stacked / per-layer layout on the host."""
    if scan_layers is None or scan_layers == cfg.scan_layers:
        return cfg, params, extras
    convert = P.stack_layers if scan_layers else P.unstack_layers
    params = jax.tree.map(np.asarray, convert(params, cfg.num_layers))
    if extras.get("adapters") is not None:
        extras = dict(extras, adapters=jax.tree.map(np.asarray, convert(extras["adapters"], cfg.num_layers)))
    return cfg.replace(scan_layers=scan_layers), params, extras
