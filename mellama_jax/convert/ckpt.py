"""Our model checkpoint directory, and reading parameters out of a training workdir.

Model checkpoint directory (written by tools/convert_hf_to_jax.py and by training exports):

    model_config.json     ModelConfig.to_dict(); `scan_layers` and `param_dtype` describe the stored tree
    params/               orbax (StandardCheckpointer) parameter tree
    tokenizer/            optional: the HF tokenizer files of data/hf_tokenizer.py (tokenizer.model, tokenizer.json, ...)
    lora_config.json      optional, LoRA runs: LoraConfig fields
    lora/                 optional, LoRA runs: orbax adapter tree (the "lora" collection)
    training_run.json     optional: the run it was exported from (config, step, metrics summary; model_card.py)

Training workdir (written by mellama_jax.train): `checkpoints/<step>/` is an orbax CheckpointManager step
with items `state` = {"params", "opt_state", "step"} and `config` (JSON). Only `state/params` is read here
(an orbax partial restore), so the optimizer state is never loaded to serve a model. LoRA runs store the
adapters as `state/params` and not the frozen base: the run config names the base (`init_from`), which is
reloaded from there (`load_lora_base`).

Every directory is written atomically, so a failed or interrupted save never leaves something that looks
like a complete checkpoint: locally into `<out>.tmp-XXXX` next to the destination, renamed at the end; on
object storage (gs://, no atomic rename) in place, with a COMMIT marker written last, and readers refuse a
remote directory without it. Paths go through `mellama_jax.paths` (etils.epath): local or gs://.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import tempfile
from typing import Any, Iterator

import jax
import numpy as np

from mellama_jax import paths
from mellama_jax.config import ModelConfig
from mellama_jax.convert.model_card import TRAINING_RUN, chat_template_name
from mellama_jax.data.hf_tokenizer import TOKENIZER_JSON, export_tokenizer_dir
from mellama_jax.data.tokenizer import MODEL_FILE
from mellama_jax.model import params as P


MODEL_CONFIG = "model_config.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"
LORA_CONFIG = "lora_config.json"
LORA_DIR = "lora"
CHECKPOINTS_DIR = "checkpoints"  # inside a training workdir
WORKDIR_MODEL_CONFIG = MODEL_CONFIG  # fallback location of the model config inside a training workdir

class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or does not match its config (the message names it)."""


# ---------------------------------------------------------------- atomic output directories
def _is_primary() -> bool:
    return jax.process_index() == 0


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def _shared_token() -> str:
    """A random suffix every process agrees on (all processes write into the same temporary directory)."""
    token = secrets.randbits(31)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        token = int(multihost_utils.broadcast_one_to_all(np.int32(token)))
    return f"{token:08x}"


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str) -> None:
    """Give `path` and everything under it the permissions of files the user creates normally (0666/0777 less
    the umask): temporary directories are 0700 and safetensors writes 0600, which colleagues cannot read."""
    mask = current_umask()
    os.chmod(path, 0o777 & ~mask)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Yield the directory to write into; what it holds becomes `out_dir` only if the block succeeds.

    Local: a fresh temporary directory next to `out_dir`, renamed onto it at the end. Object storage (no
    atomic rename): `out_dir` itself, with the COMMIT marker written last (readers require it). Either way a
    COMMIT marker ends up in the finished directory.
    An existing `out_dir` is an error unless `overwrite`; locally it is replaced only after the new content is
    complete, on object storage its marker is removed first (so it never looks complete half-replaced).
    On failure the partial output is removed (best effort) and the exception propagates.
    In multi-process runs every process must enter this together; process 0 does the file-system moves.
    """
    out = paths.resolve(out_dir, what="output directory")
    out_dir = os.fspath(out)
    remote = paths.is_remote(out_dir)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir}: output directory already exists; pass overwrite=True "
                                  f"(--overwrite) to replace it")
        if not out.is_dir():
            raise FileExistsError(f"{out_dir}: exists and is not a directory; refusing to replace it")
    if remote:
        if _is_primary() and out.exists():
            (out / paths.COMMIT_MARKER).unlink(missing_ok=True)  # not complete from here on
            out.rmtree()
        _barrier(f"mellama_jax.remote_clear:{out_dir}")
        try:
            yield out_dir
            _barrier(f"mellama_jax.remote_done:{out_dir}")
            if _is_primary():
                paths.write_commit_marker(out_dir)
            _barrier(f"mellama_jax.remote_commit:{out_dir}")
        except BaseException:
            if _is_primary():
                paths.remove_tree(out_dir)
            raise
        return
    parent = os.path.dirname(out_dir)
    tmp = f"{out_dir}.tmp-{_shared_token()}"
    if _is_primary():
        os.makedirs(parent, exist_ok=True)
        os.makedirs(tmp)
    _barrier(f"mellama_jax.atomic_mkdir:{tmp}")
    try:
        yield tmp
        _barrier(f"mellama_jax.atomic_done:{tmp}")
        if _is_primary():
            honour_umask(tmp)
            paths.write_commit_marker(tmp)
            if os.path.lexists(out_dir):
                old = f"{out_dir}.old-{secrets.token_hex(4)}"
                os.rename(out_dir, old)
                os.rename(tmp, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, out_dir)
        _barrier(f"mellama_jax.atomic_rename:{tmp}")
    except BaseException:
        if _is_primary():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def local_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Like atomic_output_dir, for writers that need local files (safetensors): on object storage the block
    writes into a local staging directory, uploaded (then committed by the marker) only if it succeeds."""
    if not paths.is_remote(out_dir):
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
            yield tmp
        return
    stage = tempfile.mkdtemp(prefix="mellama-out-")
    try:
        yield stage
        with atomic_output_dir(out_dir, overwrite=overwrite) as remote:
            if _is_primary():
                paths.copy_tree(stage, remote)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def require_complete(directory: str | os.PathLike, what: str) -> None:
    """Object storage: refuse a directory whose writer did not finish (no COMMIT marker). Local directories
    were renamed into place complete (and older ones predate the marker)."""
    if paths.is_remote(directory) and not paths.is_committed(directory):
        raise CheckpointError(f"{os.fspath(directory)}: incomplete {what} (no {paths.COMMIT_MARKER} marker: its "
                              f"writer did not finish); write it again")


# ---------------------------------------------------------------- tokenizer files
def copy_tokenizer_files(src: str | os.PathLike, dst_dir: str | os.PathLike) -> list[str]:
    """The tokenizer found in `src` (a directory, or a path to tokenizer.model) as HF tokenizer files in
    `dst_dir` that give sentencepiece's ids (`hf_tokenizer.export_tokenizer_dir`); [] when `src` holds none.
    Either end may be on object storage (read and written through a local stage)."""
    source = paths.resolve(src, what="tokenizer")
    src_dir = paths.as_str(source.parent if source.is_file() else source)
    with paths.local_copy(src_dir) as local_dir:
        local_src = os.path.join(local_dir, source.name) if source.is_file() else local_dir
        if not paths.is_remote(dst_dir):
            return export_tokenizer_dir(local_src, paths.as_str(dst_dir))
        stage = tempfile.mkdtemp(prefix="mellama-tok-")
        try:
            names = export_tokenizer_dir(local_src, stage)
            if names:
                paths.copy_tree(stage, dst_dir)
            return names
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def has_tokenizer(directory: str | os.PathLike) -> bool:
    directory = paths.resolve(directory)
    return any((directory / n).is_file() for n in (MODEL_FILE, TOKENIZER_JSON))


# ---------------------------------------------------------------- orbax helpers
def _restore_args(abstract: dict) -> dict:
    """Per-leaf orbax restore args: onto the leaf's sharding when it has one, else as host numpy arrays."""
    import orbax.checkpoint as ocp

    def one(s: jax.ShapeDtypeStruct):
        if s.sharding is not None:
            return ocp.ArrayRestoreArgs(sharding=s.sharding, global_shape=s.shape, dtype=s.dtype)
        return ocp.RestoreArgs(restore_type=np.ndarray, dtype=s.dtype)

    return jax.tree.map(one, abstract)


def _save_tree(path: str, tree: dict) -> None:
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree)
        ckptr.wait_until_finished()


def _restore_tree(path: str, abstract: dict) -> dict:
    import orbax.checkpoint as ocp
    check_stored_shapes(path, abstract)
    with ocp.PyTreeCheckpointer() as ckptr:
        return ckptr.restore(path, args=ocp.args.PyTreeRestore(item=abstract, restore_args=_restore_args(abstract)))


def check_stored_shapes(path: str, abstract: dict) -> None:
    """Compare the shapes stored in an orbax tree checkpoint with `abstract` (a subtree of it may be asked for).

    orbax silently truncates or zero-pads an array restored onto a different shape, so a checkpoint that
    does not match its model config must be caught here, before the restore.
    """
    import orbax.checkpoint as ocp
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


def _with_shardings(abstract: dict, shardings, cfg: ModelConfig) -> dict:
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
    `adapters` the LoRA collection is saved beside the frozen base. `training_info` (e.g. the step and the
    prompt template an instruction-tuned model expects) is stored as `training.json`.
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
        if _is_primary():
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


def write_json(path: str, value) -> None:
    paths.resolve(path).write_text(json.dumps(value, indent=2, sort_keys=True))


def read_json(path: str):
    return json.loads(paths.resolve(path).read_text())


def _check_adapters(cfg: ModelConfig, lora_cfg, adapters: dict, source: str) -> None:
    from mellama_jax.model.lora import iter_lora
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
        abstract = _with_shardings(abstract, shardings, cfg)
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
    from mellama_jax.model.lora import LoraConfig, iter_lora
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


# ---------------------------------------------------------------- training workdir
# Model fields that must agree between a LoRA run and its base (execution choices such as dtype may differ).
ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                       "head_dim", "rms_norm_eps", "rope_theta")
# Folded into the run seed for a random LoRA base, so the base does not reuse the adapters' init stream.
RANDOM_BASE_SALT = 0xBA5E


def is_training_workdir(path: str | os.PathLike) -> bool:
    return (paths.resolve(path) / CHECKPOINTS_DIR).is_dir()


def architecture_differences(a: ModelConfig, b: ModelConfig) -> dict[str, tuple]:
    """{field: (a's value, b's value)} for every architecture field on which the two configs differ."""
    return {f: (getattr(a, f), getattr(b, f)) for f in ARCHITECTURE_FIELDS if getattr(a, f) != getattr(b, f)}


def load_lora_base(cfg: ModelConfig, init_from: str, *, seed: int = 0, dtype="float32",
                   shardings: dict | None = None) -> dict:
    """The frozen base of a LoRA run, rebuilt from the reference its config records.

    init_from: a model checkpoint directory (restored straight onto `shardings`), a Hugging Face directory
        (read on the host, then placed), or "" for a random base: `init_params` with the run's `seed`, which
        is reproducible bit for bit (the same on any mesh: JAX's partitionable threefry).
    The base must have `cfg`'s architecture (else CheckpointError naming the fields); it is returned in
    `cfg.scan_layers` layout and `dtype`.
    """
    dtype = np.dtype(dtype).name
    if not init_from:
        key = jax.random.fold_in(jax.random.key(seed), RANDOM_BASE_SALT)
        init = lambda k: P.init_params(cfg, k, dtype=dtype)
        return (jax.jit(init) if shardings is None else jax.jit(init, out_shardings=shardings))(key)
    from mellama_jax.convert import hf
    path = paths.as_str(init_from, what="init_from")
    if is_model_checkpoint(path):
        src_cfg = read_model_config(path)
    elif hf.is_hf_dir(path):
        src_cfg = ModelConfig.from_hf_config(read_json(paths.join(path, hf.CONFIG)))
    else:
        raise CheckpointError(f"{path}: the LoRA base (init_from) is neither a model checkpoint directory "
                              f"({MODEL_CONFIG} + {PARAMS_DIR}/) nor a Hugging Face directory")
    diff = architecture_differences(src_cfg, cfg)
    if diff:
        raise CheckpointError(f"{path}: the LoRA base has another architecture than the run's model config "
                              f"(field: (base, run)) {diff}; adapters cannot be applied to or merged into it")
    if is_model_checkpoint(path):
        _, params, extras = load_model_checkpoint(path, shardings=shardings, dtype=dtype, scan_layers=cfg.scan_layers)
        if extras["adapters"] is not None:
            raise CheckpointError(f"{path}: the LoRA base itself carries LoRA adapters; export it merged first "
                                  f"(mellama_jax.load / convert_jax_to_hf.py --merge_lora) and train on that")
    else:
        with paths.local_copy(path) as local:  # gs://: downloaded first (safetensors are memory-mapped)
            _, params = hf.load_hf_params(local, dtype=dtype, scan_layers=cfg.scan_layers)
        if shardings is not None:
            params = jax.device_put(params, shardings)
    return params


def _workdir_configs(workdir: str, manager, step: int):
    """(ModelConfig, LoraConfig or None, run config dict) of a training run.

    Read from the step's `config` item (the run's config: a "model" group of ModelConfig fields, where
    and "train.lora" with rank 0 meaning full-parameter training), else from
    workdir/model_config.json (then the run config is {}).
    """
    import orbax.checkpoint as ocp
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
    from mellama_jax.model.lora import LoraConfig
    try:
        return LoraConfig.from_group(lora)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: train.lora is not a valid LoRA config ({e})") from e


def _stored_top_keys(state_dir: str) -> set[str]:
    """Top-level keys of the PyTree stored in an orbax item directory (from its metadata only)."""
    import orbax.checkpoint as ocp
    with ocp.PyTreeCheckpointer() as ckptr:
        metadata = ckptr.metadata(state_dir)
    metadata = getattr(metadata, "item_metadata", metadata)
    return set(dict(getattr(metadata, "tree", metadata)))


def load_training_params(workdir: str | os.PathLike, *, step: int | None = None, shardings: dict | None = None,
                         dtype=None) -> tuple[ModelConfig, dict, dict[str, Any]]:
    """Restore the model parameters of a training checkpoint (latest complete step unless `step`).

    Only `state/params` is read (orbax partial restore; the optimizer state stays on disk). LoRA runs store
    the adapters as `state/params` and no base: the base is rebuilt from the reference in the run's config
    (`init_from`, or the seed of a random base; `load_lora_base`) in the run's `train.lora.base_dtype`
    unless `dtype`; a checkpoint that does store `state/frozen` uses that instead. Returns (cfg, params,
    extras) like `load_model_checkpoint` (for LoRA runs params is the base and extras["adapters"] the
    adapters, fp32 host arrays); extras["step"] is the step restored and extras["tokenizer_dir"] the
    workdir's `tokenizer/` when the run saved one there.
    """
    import orbax.checkpoint as ocp
    workdir = paths.as_str(workdir, what="workdir")
    ckpt_root = paths.join(workdir, CHECKPOINTS_DIR)
    if not paths.resolve(ckpt_root).is_dir():
        raise CheckpointError(f"{workdir}: not a training workdir (no {CHECKPOINTS_DIR}/ directory)")
    manager = ocp.CheckpointManager(ckpt_root, options=ocp.CheckpointManagerOptions(read_only=True),
                                    item_names=("state", "config"))
    try:
        steps = manager.all_steps()
        if not steps:
            raise CheckpointError(f"{ckpt_root}: no complete checkpoint step")
        if step is None:
            step = manager.latest_step()
        elif step not in steps:
            raise CheckpointError(f"{ckpt_root}: no checkpoint for step {step}; available steps: {sorted(steps)}")
        cfg, lora_cfg, run_cfg = _workdir_configs(workdir, manager, step)
        state_dir = paths.join(ckpt_root, str(step), "state")
        if lora_cfg is None:
            target_dtype = np.dtype(dtype or cfg.param_dtype).name
            abstract = {"params": _with_shardings(P.abstract_params(cfg, dtype=target_dtype), shardings, cfg)}
        else:
            # LoRA runs train the adapters ("params") on top of a frozen base.
            from mellama_jax.model.lora import iter_lora
            target_dtype = np.dtype(dtype or _run_lora_group(run_cfg).get("base_dtype") or cfg.param_dtype).name
            adapters = P.tree_from_paths({p: jax.ShapeDtypeStruct(shape, np.float32)
                                          for p, shape, _, _, _ in iter_lora(cfg, lora_cfg)})
            abstract = {"params": adapters}
            if "frozen" in _stored_top_keys(state_dir):
                abstract["frozen"] = _with_shardings(P.abstract_params(cfg, dtype=target_dtype), shardings, cfg)
        check_stored_shapes(state_dir, abstract)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=abstract, restore_args=_restore_args(abstract), partial_restore=True)))
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise CheckpointError(f"{state_dir}: cannot restore {sorted(abstract)} for this model "
                                  f"config ({e})") from e
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


def relayout_checkpoint(cfg: ModelConfig, params: dict, extras: dict, scan_layers: bool | None):
    """Switch params (and LoRA adapters in extras) to the stacked / per-layer layout on the host."""
    if scan_layers is None or scan_layers == cfg.scan_layers:
        return cfg, params, extras
    convert = P.stack_layers if scan_layers else P.unstack_layers
    params = jax.tree.map(np.asarray, convert(params, cfg.num_layers))
    if extras.get("adapters") is not None:
        extras = dict(extras, adapters=jax.tree.map(np.asarray, convert(extras["adapters"], cfg.num_layers)))
    return cfg.replace(scan_layers=scan_layers), params, extras


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
