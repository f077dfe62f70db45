"""Hugging Face LLaMA checkpoints in and out, one tensor at a time.

Reading: `model.safetensors` or sharded `model-XXXXX-of-YYYYY.safetensors` + `model.safetensors.index.json`
(memory-mapped with `safetensors.safe_open(framework="numpy")`; bf16 arrives as `ml_dtypes.bfloat16`).
Pickled `pytorch_model*.bin` files are refused unless `allow_pickle=True`: unpickling runs code from the
file, so it must be an explicit decision (and is then done with `torch.load(weights_only=True)`).
Every file is validated before anything is converted: unreadable or truncated files, tensors the index
promises but the file lacks, unknown names and missing names all raise `HFCheckpointError` naming them.

Writing: tensors are streamed from the parameter tree (one device fetch per tensor, per layer for stacked
scanned parameters) into shards no larger than `max_shard_size`, written into a temporary directory that
is renamed into place at the end. Peak host memory: one shard plus one tensor.
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable, Iterator

import jax
import ml_dtypes
import numpy as np
from jax.experimental import multihost_utils
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from mellama_jax import paths
from mellama_jax.checkpoints.fileio import has_tokenizer, local_output_dir
from mellama_jax.checkpoints.model_dir import save_model_checkpoint
from mellama_jax.config import ModelConfig
from mellama_jax.convert import mapping
from mellama_jax.data.hf_tokenizer import export_tokenizer_dir
from mellama_jax.model import params as P

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
MODEL_CARD = "README.md"

# Buffers some older transformers versions saved with LLaMA weights; they are recomputed, never loaded.
IGNORED_TENSORS = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


class HFCheckpointError(ValueError):
    """A Hugging Face checkpoint is missing, unreadable or does not match its config (names the file/tensor)."""


# ---------------------------------------------------------------- sizes
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """'2GB' -> 2e9 bytes, '500MB', '1GiB', or a plain number of bytes (transformers' conventions)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(size).upper())
        if not m or m.group(2) not in _SIZE_UNITS:
            raise ValueError(f"max_shard_size={size!r}: expected bytes or a size like '2GB', '500MB', '1GiB'")
        value = int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    if value <= 0:
        raise ValueError(f"max_shard_size={size!r} must be positive")
    return value


# ---------------------------------------------------------------- reading
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


class _SafetensorsFiles:
    """name -> tensor over one or several safetensors files (memory-mapped; one tensor copied at a time)."""

    def __init__(self, hf_dir: str, files: list[str], promised: dict[str, str] | None):
        self.where: dict[str, str] = {}
        self._handles = {}
        for fname in files:
            path = os.path.join(hf_dir, fname)
            if not os.path.isfile(path):
                raise HFCheckpointError(f"{path}: missing safetensors file"
                                        + (f" (listed in {SAFE_INDEX})" if promised is not None else ""))
            try:
                handle = safe_open(path, framework="numpy")
                names = list(handle.keys())
            except (SafetensorError, OSError) as e:
                raise HFCheckpointError(f"{path}: unreadable or truncated safetensors file ({e})") from e
            self._handles[fname] = handle
            for name in names:
                if name in self.where:
                    raise HFCheckpointError(f"tensor {name} is stored twice: in {self.where[name]} and {fname}")
                self.where[name] = fname
        if promised is not None:
            for name, fname in sorted(promised.items()):
                if self.where.get(name) != fname:
                    raise HFCheckpointError(
                        f"{os.path.join(hf_dir, SAFE_INDEX)} maps tensor {name} to {fname}, but "
                        + (f"it is in {self.where[name]}" if name in self.where else f"{fname} does not contain it"))

    def names(self) -> list[str]:
        return list(self.where)

    def get(self, name: str) -> np.ndarray:
        return self._handles[self.where[name]].get_tensor(name)

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The stored shape, read from the header (without reading the tensor)."""
        return tuple(self._handles[self.where[name]].get_slice(name).get_shape())

    def dtype(self, name: str) -> np.dtype:
        """The stored dtype, read from the header (without reading the tensor)."""
        code = self._handles[self.where[name]].get_slice(name).get_dtype()
        if code not in _SAFETENSORS_DTYPES:
            raise HFCheckpointError(f"tensor {name} in {self.where[name]} has dtype {code}; expected a float type")
        return np.dtype(_SAFETENSORS_DTYPES[code])


class _PickleFiles:
    """name -> tensor over `pytorch_model*.bin` files; one file's state dict (memory-mapped) at a time."""

    def __init__(self, hf_dir: str, files: list[str]):
        try:
            import torch  # noqa: PLC0415, F401 - optional: only pickle .bin checkpoints need it
        except ImportError as e:
            raise HFCheckpointError(f"{hf_dir}: reading pickle .bin checkpoints needs torch "
                                    f"(pip install torch==2.13.0), or convert them to safetensors") from e
        self.hf_dir = hf_dir
        self.where: dict[str, str] = {}
        self._current: tuple[str, dict] | None = None
        for fname in files:
            for name in self._load(fname):
                self.where[name] = fname

    def _load(self, fname: str) -> dict:
        import torch  # noqa: PLC0415 - optional reference (the [test] extra)
        if self._current and self._current[0] == fname:
            return self._current[1]
        path = os.path.join(self.hf_dir, fname)
        if not os.path.isfile(path):
            raise HFCheckpointError(f"{path}: missing pickle checkpoint file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; name the file
            raise HFCheckpointError(f"{path}: unreadable or truncated pickle checkpoint ({e})") from e
        if not isinstance(state, dict):
            raise HFCheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
        self._current = (fname, state)
        return state

    def names(self) -> list[str]:
        return list(self.where)

    def shape(self, name: str) -> tuple[int, ...] | None:
        return None  # only known once the file is unpickled; checked tensor by tensor instead

    def dtype(self, name: str) -> np.dtype:
        return self.get(name).dtype

    def get(self, name: str) -> np.ndarray:
        import torch  # noqa: PLC0415 - optional reference (the [test] extra)
        t = self._load(self.where[name])[name].detach()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
        return t.numpy().copy()


def _index_weight_map(index_path: str) -> dict[str, str]:
    try:
        with open(index_path) as f:
            index = json.load(f)
    except json.JSONDecodeError as e:
        raise HFCheckpointError(f"{index_path}: not valid JSON ({e})") from e
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise HFCheckpointError(f"{index_path}: missing or empty 'weight_map'")
    return weight_map


def open_hf_weights(hf_dir: str, *, allow_pickle: bool = False):
    """A reader with `.names()` and `.get(name) -> np.ndarray` over the weight files of `hf_dir`."""
    join = lambda n: os.path.join(hf_dir, n)  # noqa: E731
    if os.path.isfile(join(SAFE_INDEX)):
        weight_map = _index_weight_map(join(SAFE_INDEX))
        return _SafetensorsFiles(hf_dir, sorted(set(weight_map.values())), weight_map)
    if os.path.exists(join(SAFE_SINGLE)):
        return _SafetensorsFiles(hf_dir, [SAFE_SINGLE], None)
    pickles = [n for n in (PICKLE_INDEX, PICKLE_SINGLE) if os.path.isfile(join(n))]
    if pickles:
        if not allow_pickle:
            raise HFCheckpointError(
                f"{join(pickles[0])}: pickle checkpoints can run arbitrary code when loaded and are refused; "
                f"convert to safetensors, or pass allow_pickle=True (--allow_pickle) if you trust the file")
        if pickles[0] == PICKLE_INDEX:
            return _PickleFiles(hf_dir, sorted(set(_index_weight_map(join(PICKLE_INDEX)).values())))
        return _PickleFiles(hf_dir, [PICKLE_SINGLE])
    raise HFCheckpointError(f"{hf_dir}: no weights found (expected {SAFE_SINGLE} or {SAFE_INDEX}"
                            f"{'' if allow_pickle else ', or a pickle ' + PICKLE_SINGLE + ' with allow_pickle'})")


def is_hf_dir(path: str | os.PathLike) -> bool:
    path = paths.resolve(path)
    return (path / CONFIG).is_file() and any(
        (path / n).exists() for n in (SAFE_SINGLE, SAFE_INDEX, PICKLE_SINGLE, PICKLE_INDEX))


def read_hf_config(hf_dir: str | os.PathLike, **overrides) -> ModelConfig:
    """ModelConfig from `hf_dir/config.json` (raises ConfigError naming the file when it is not LLaMA)."""
    path = os.path.join(os.fspath(hf_dir), CONFIG)
    if not os.path.isfile(path):
        raise HFCheckpointError(f"{path}: missing (a Hugging Face model directory needs its config.json)")
    return ModelConfig.from_hf_config(path, **overrides)


def load_hf_params(hf_dir: str | os.PathLike, *, dtype=None, scan_layers: bool | None = None,
                   allow_pickle: bool = False, on_tensor: Callable[[str], None] | None = None,
                   shardings: Callable[[ModelConfig], dict] | None = None,
                   **cfg_overrides) -> tuple[ModelConfig, dict]:
    """Read an HF LLaMA directory into (cfg, host numpy parameter tree), streaming one tensor at a time.

    dtype: parameter dtype of the result ("float32", "bfloat16", …); None keeps the checkpoint's dtype.
    scan_layers: stack per-layer tensors on a leading layer axis (default: cfg.scan_layers, i.e. True).
    shardings: cfg -> tree of shardings (called before any weight is read, so it may reject the config):
        each leaf goes onto its shards as soon as it is read (every process copies only its own shards) and
        the result is a tree of jax Arrays. Peak host memory is then one tensor (unscanned) or one stacked
        leaf (scanned); without shardings it is the tree being built plus one tensor.
    """
    hf_dir = os.fspath(hf_dir)
    if not os.path.isdir(hf_dir):
        raise HFCheckpointError(f"{hf_dir}: no such directory")
    cfg = read_hf_config(hf_dir, **cfg_overrides)
    if scan_layers is not None:
        cfg = cfg.replace(scan_layers=scan_layers)
    targets = P.flatten_tree(shardings(cfg)) if shardings is not None else None  # may refuse the config
    reader = open_hf_weights(hf_dir, allow_pickle=allow_pickle)
    expected = mapping.hf_tensor_names(cfg)
    present = set(reader.names())
    unknown = sorted(n for n in present - set(expected) if not IGNORED_TENSORS.match(n))
    missing = [n for n in expected if n not in present]
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing tensor(s) {_abbrev(missing)}")
        if unknown:
            parts.append(f"unknown tensor(s) {_abbrev(unknown)}")
        raise HFCheckpointError(f"{hf_dir}: weights do not match {CONFIG}: " + "; ".join(parts))
    # Shapes from the safetensors headers, before hours of reading: every mismatch named at once.
    wrong = [f"{name} {got} (expected {want})" for name, want in _hf_shapes(cfg).items()
             if (got := reader.shape(name)) is not None and got != want]
    if wrong:
        raise HFCheckpointError(f"{hf_dir}: tensor shapes do not match {CONFIG}: {_abbrev(wrong)}")
    if dtype is None:
        dtype = reader.dtype(expected[0])
    dtype = np.dtype(dtype)
    cfg = cfg.replace(param_dtype=dtype.name)
    place = None
    if targets is not None:
        place = lambda path, leaf: jax.make_array_from_callback(leaf.shape, targets[path],  # noqa: E731
                                                                 lambda index: leaf[index])
    try:
        params = mapping.params_from_hf(cfg, reader.get, dtype=dtype, on_tensor=on_tensor, place=place)
    except ValueError as e:  # shape mismatch: the message names the tensor
        raise HFCheckpointError(f"{hf_dir}: {e}") from e
    return cfg, params


def _hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for spec in P._specs(cfg):
        names = [spec.hf_name.format(layer=i) for i in range(cfg.num_layers)] if spec.per_layer else [spec.hf_name]
        shapes.update({name: spec.hf_shape for name in names})
    return shapes


def _abbrev(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


# ---------------------------------------------------------------- writing
def _host_array(x) -> np.ndarray:
    """Bring one (possibly sharded, possibly multi-host) array to host memory as numpy."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def iter_export_tensors(cfg: ModelConfig, params: dict, *, dtype=None) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, HF-layout numpy tensor) in checkpoint order; fetches one layer slice at a time."""
    flat = P.flatten_tree(params)
    scanned = "layers" in params
    out_dtype = np.dtype(dtype) if dtype is not None else None
    for spec in P._specs(cfg):
        if not spec.per_layer:
            items = [(spec.hf_name, lambda: flat[spec.path])]
        elif scanned:
            stacked = flat[("layers",) + spec.path]
            items = [(spec.hf_name.format(layer=i), lambda i=i, s=stacked: s[i]) for i in range(cfg.num_layers)]
        else:
            items = [(spec.hf_name.format(layer=i), lambda i=i: flat[(f"layers_{i}",) + spec.path])
                     for i in range(cfg.num_layers)]
        for name, fetch in items:
            t = mapping.to_hf_tensor(spec, _host_array(fetch()))
            yield name, (t.astype(out_dtype, copy=False) if out_dtype is not None else t)


def generation_config(cfg: ModelConfig) -> dict:
    """Greedy decoding by default, as the Me-LLaMA evaluation uses; max_length = the context window."""
    out = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "do_sample": False,
           "max_length": cfg.max_position_embeddings}
    if cfg.pad_token_id is not None:
        out["pad_token_id"] = cfg.pad_token_id
    return out


def save_hf_checkpoint(out_dir: str | os.PathLike, cfg: ModelConfig, params: dict, *, dtype=None,
                       max_shard_size: int | str = "2GB", tokenizer_dir: str | os.PathLike | None = None,
                       overwrite: bool = False, on_tensor: Callable[[str], None] | None = None,
                       chat_template: str | None = None, model_card: str | None = None) -> str:
    """Write `params` as a transformers LLaMA directory; returns its absolute path.

    Shards of at most `max_shard_size` (a single tensor larger than that gets a shard of its own); one
    shard is written as `model.safetensors`, several as `model-0000i-of-0000n.safetensors` plus
    `model.safetensors.index.json`. `config.json` spells out every LLaMA-2 value, `generation_config.json`
    asks for greedy decoding with LLaMA-2's BOS/EOS ids. With `tokenizer_dir`, the HF tokenizer files are
    generated from its tokenizer.model so transformers gives our exact ids (data/hf_tokenizer.py), carrying
    `chat_template` (Jinja, see templates.hf_chat_template) when given. `model_card` becomes README.md.
    dtype: tensor dtype in the files; None keeps the parameters' dtype.
    """

    limit = parse_size(max_shard_size)
    scanned = "layers" in params
    P.check_params(cfg, params, scanned=scanned, source=f"save_hf_checkpoint({out_dir})")
    leaf_dtypes = {np.dtype(x.dtype) for x in jax.tree.leaves(params)}
    file_dtype = np.dtype(dtype) if dtype is not None else max(leaf_dtypes, key=lambda d: d.itemsize)
    primary = jax.process_index() == 0

    with local_output_dir(out_dir, overwrite=overwrite) as tmp:  # gs://: staged locally, uploaded, committed
        shards: list[dict[str, np.ndarray]] = []  # only the names are kept once a shard is written
        current: dict[str, np.ndarray] = {}
        current_bytes = 0
        total = 0

        def flush():
            nonlocal current, current_bytes
            if current and primary:
                save_file(current, os.path.join(tmp, f"shard-{len(shards):05d}.safetensors"),
                          metadata={"format": "pt"})
            shards.append({name: None for name in current})
            current, current_bytes = {}, 0

        for name, tensor in iter_export_tensors(cfg, params, dtype=file_dtype):
            if current and current_bytes + tensor.nbytes > limit:
                flush()
            current[name] = tensor
            current_bytes += tensor.nbytes
            total += tensor.nbytes
            if on_tensor:
                on_tensor(name)
        flush()

        if primary:
            _finish_shards(tmp, [list(s) for s in shards], total)
            hf_config = cfg.to_hf_config()
            hf_config["torch_dtype"] = hf_config["dtype"] = file_dtype.name
            # transformers >= 5 reads RoPE settings from here; older versions read the top-level rope_theta.
            hf_config.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": cfg.rope_theta})
            _write_json(os.path.join(tmp, CONFIG), hf_config)
            _write_json(os.path.join(tmp, GENERATION_CONFIG), generation_config(cfg))
            if tokenizer_dir is not None:
                with paths.local_copy(tokenizer_dir) as local_tok:  # a checkpoint's tokenizer/ may be on gs://
                    if not export_tokenizer_dir(local_tok, tmp, chat_template=chat_template,
                                                model_max_length=cfg.max_position_embeddings):
                        raise HFCheckpointError(f"{tokenizer_dir}: no tokenizer.model or tokenizer.json to export")
            if model_card is not None:
                with open(os.path.join(tmp, MODEL_CARD), "w") as f:
                    f.write(model_card)
    return paths.as_str(out_dir)


def _finish_shards(tmp: str, shard_names: list[list[str]], total_size: int) -> None:
    n = len(shard_names)
    if n == 1:
        os.rename(os.path.join(tmp, "shard-00000.safetensors"), os.path.join(tmp, SAFE_SINGLE))
        return
    weight_map = {}
    for i, names in enumerate(shard_names):
        final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        os.rename(os.path.join(tmp, f"shard-{i:05d}.safetensors"), os.path.join(tmp, final))
        weight_map.update({name: final for name in names})
    _write_json(os.path.join(tmp, SAFE_INDEX), {"metadata": {"total_size": total_size}, "weight_map": weight_map})


def _write_json(path: str, value: dict) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- directory to directory
def convert_hf_to_checkpoint(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, *, dtype=None,
                             scan_layers: bool = True, overwrite: bool = False, allow_pickle: bool = False,
                             progress: bool = True) -> str:
    """HF directory -> our model checkpoint directory (orbax params + model_config.json [+ tokenizer/])."""
    if paths.resolve(out_dir).exists() and not overwrite:  # fail before the (long) read
        raise FileExistsError(f"{paths.as_str(out_dir)}: output directory already exists; pass "
                              f"overwrite=True (--overwrite) to replace it")
    if not paths.resolve(hf_dir).is_dir():
        raise HFCheckpointError(f"{hf_dir}: no such directory")
    with paths.local_copy(hf_dir) as local:  # gs://: downloaded (safetensors are memory-mapped)
        total = len(mapping.hf_tensor_names(read_hf_config(local)))
        with progress_bar(progress, "read HF tensors", os.fspath(hf_dir), total=total) as on_tensor:
            cfg, params = load_hf_params(local, dtype=dtype, scan_layers=scan_layers, allow_pickle=allow_pickle,
                                         on_tensor=on_tensor)
        tok = local if has_tokenizer(local) else None
        return save_model_checkpoint(out_dir, cfg, params, tokenizer_dir=tok, overwrite=overwrite)


class progress_bar:
    """A tqdm bar advanced once per tensor (a no-op callback when disabled)."""

    def __init__(self, enabled: bool, desc: str, path, total: int | None = None):
        self.enabled, self.desc, self.path, self.total = enabled, desc, path, total
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return None
        self.bar = tqdm(total=self.total, desc=self.desc, unit="tensor")
        return lambda name: (self.bar.set_postfix_str(name, refresh=False), self.bar.update(1))

    def __exit__(self, *_exc):
        if self.bar is not None:
            self.bar.close()
        return False
