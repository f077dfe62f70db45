"""`mellama_jax.load(path) -> Model`: one entry point for every kind of model directory.

`path` may be
* a Hugging Face LLaMA directory (config.json + safetensors),
* our model checkpoint directory (model_config.json + params/, see checkpoints/model_dir.py), or
* a training workdir (checkpoints/<step>/…; the latest complete step's parameters are restored).

The returned `Model` holds the config, the parameters (on one device, or sharded over `mesh`), the
tokenizer when the directory carries one, the prompt template an instruction-tuned model was trained with,
and jitted entry points: `logits(token_ids)` and `generate(...)`, which takes text, chat messages or token ids
(generate/text.py) and can stream.

Model configs can also be named: `load_model_config` takes a preset name (config.PRESETS), a model_config.json,
an HF config.json, or a Python file whose `get_config()` returns a model group (train.config.model_fields).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from mellama_jax import paths
from mellama_jax.checkpoints import fileio, model_dir, rundir
from mellama_jax.checkpoints.run_record import chat_template_name
from mellama_jax.config import PRESETS, ConfigError, ModelConfig, config_module, preset
from mellama_jax.convert import hf as hf_lib
from mellama_jax.data.chat import chat_template_in_dir
from mellama_jax.data.tokenizer import Tokenizer
from mellama_jax.generate import generate as generate_ids
from mellama_jax.generate import text as T
from mellama_jax.model import params as P
from mellama_jax.model.llama import Transformer
from mellama_jax.model.lora import merge_lora
from mellama_jax.parallel import (
    MeshConfig,
    activation_sharding,
    batch_sharding,
    check_mesh_fits_model,
    data_parallel_size,
    make_mesh,
    replicated,
    tree_shardings,
)

log = logging.getLogger(__name__)

STREAM_CHUNK = 16  # tokens decoded per compiled call when streaming


# ---------------------------------------------------------------- model configs by name or file
def load_model_config(spec: str | os.PathLike, **overrides) -> ModelConfig:
    """A ModelConfig from a preset name ("llama2_7b"), a Python config file, a model_config.json, an HF
    config.json, or a directory holding one of those. Keyword overrides replace fields (e.g. scan_layers)."""
    spec = os.fspath(spec)
    if spec in PRESETS:
        return preset(spec, **overrides)
    if os.path.isdir(spec):
        for name in (model_dir.MODEL_CONFIG, "config.json"):
            if os.path.isfile(os.path.join(spec, name)):
                return load_model_config(os.path.join(spec, name), **overrides)
        raise ConfigError(f"{spec}: directory holds neither {model_dir.MODEL_CONFIG} nor config.json")
    if not os.path.isfile(spec):
        raise ConfigError(f"{spec!r} is neither a model preset ({sorted(PRESETS)}) nor an existing file")
    if spec.endswith(".py"):
        return ModelConfig.from_dict({**_config_file_values(spec), **overrides}, source=spec)
    if os.path.basename(spec) == "config.json":
        return ModelConfig.from_hf_config(spec, **overrides)
    return ModelConfig.load_json(spec).replace(**overrides)


def _config_file_values(path: str) -> dict:
    """Run an ml_collections config file's `get_config()` and return its values as a plain dict."""
    cfg = config_module(path).get_config()
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


# ---------------------------------------------------------------- the jitted forward pass
@functools.partial(jax.jit, static_argnames=("cfg", "mesh"))
def _forward(params, tokens, positions, segment_ids, *, cfg: ModelConfig, mesh):

    def apply():
        logits, _ = Transformer(cfg).apply({"params": params}, tokens, positions, segment_ids)
        return logits

    if mesh is None:
        return apply()
    with activation_sharding(mesh):
        return apply()


def param_shardings(cfg: ModelConfig, mesh) -> dict:
    """NamedShardings of every parameter on `mesh`, from the parameter table's logical axes."""
    return tree_shardings(mesh, P.logical_axes(cfg), P.abstract_params(cfg))


@dataclasses.dataclass
class Model:
    """A loaded LLaMA-2 model. `params` follow `config` (layout: config.scan_layers; dtype: param_dtype)."""
    config: ModelConfig
    params: dict
    tokenizer: Any = None
    mesh: Any = None
    source: str = ""
    lora_config: Any = None  # set when the checkpoint carried LoRA adapters (already merged into params)
    step: int | None = None  # training step, when loaded from a training workdir
    template: str | None = None  # prompt template of an instruction-tuned model (data/templates.py), if recorded
    chat_template: Any = None  # data.chat.ChatTemplate stored with the tokenizer (tokenizer_config.json), if any

    def chat_template_for(self, template=None):
        """The chat template generate() renders messages with: `template` (a name, a Jinja string, a
        tokenizer_config.json), else the tokenizer's stored `chat_template`, else the recorded training
        template, else None."""
        return template or self.chat_template or self.template

    def logits(self, token_ids, *, positions=None, segment_ids=None) -> np.ndarray:
        """int [B, T] token ids -> float32 [B, T, V] numpy logits (compiled once per shape).

        positions / segment_ids ([B, T]) default to 0..T-1 and a single document per row; pass them to
        score packed rows (documents never attend to each other) or left-padded batches (segment 0).
        """
        tokens = _as_int_batch(token_ids, "token_ids")
        check_token_ids(tokens, self.config.vocab_size)
        B, T = tokens.shape
        positions = (np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)) if positions is None
                     else _as_int_batch(positions, "positions", (B, T)))
        segment_ids = (np.ones((B, T), np.int32) if segment_ids is None
                       else _as_int_batch(segment_ids, "segment_ids", (B, T)))
        inputs = (tokens, positions, segment_ids)
        if self.mesh is not None:
            sharding = _input_sharding(self.mesh, B)
            inputs = tuple(jax.device_put(x, sharding) for x in inputs)
        out = _forward(self.params, *inputs, cfg=self.config, mesh=self.mesh)
        return _to_host(out)

    def generate(self, prompts, *, template: str | None = None, stop: tuple[str, ...] | list[str] = (),
                 stream: bool = False, **kwargs):
        """Continue prompts: text in, text out (token ids in, token ids out).

        prompts: "text", ["text", ...], chat messages [{"role": "user", "content": ...}, ...] (rendered with
            `template`, default `chat_template_for()`: the tokenizer's chat_template, else the recorded
            training template), a list of conversations, or token-id lists (generate/text.py). One prompt
            gives one result, a list gives a list.
        stop: stop strings (text prompts); the text is cut before the first one.
        stream: return an iterator over pieces of the answer as they are decoded (one prompt only).
        kwargs: max_new_tokens, temperature, top_k, top_p, seed, eos_id, stop_sequences (token ids),
            batch_size — see `mellama_jax.generate.generate`.
        """
        template = self.chat_template_for(template)
        p = T.to_prompts(prompts, self.tokenizer, template)
        stops = list(stop)
        if stops:
            kwargs["stop_sequences"] = [*kwargs.get("stop_sequences", ()), *T.stop_ids(self.tokenizer, stops)]
        if stream:
            if not p.single:
                raise ValueError("stream=True takes one prompt (a text, one conversation or one token-id list)")
            return self._stream(p, template, stops, **kwargs)
        outputs = generate_ids(self.config, self.params, p.ids, mesh=self.mesh, **kwargs)
        if p.kind != "ids":
            outputs = [T.decode(self.tokenizer, o, p.kind, template, stops) for o in outputs]
        return outputs[0] if p.single else outputs

    def _stream(self, p: "T.Prompts", template, stops, *, max_new_tokens: int = 256, seed: int = 0,
                chunk: int = STREAM_CHUNK, **kwargs) -> Iterator:
        """Decode `chunk` tokens per compiled call and yield what is new. The decode loop runs on the device
        without returning to Python, so streaming re-enters it: each call prefills the text so far (prompt
        lengths are bucketed, so a few compiled functions serve the whole answer)."""
        prompt, new = p.ids[0], []
        emitted = ""
        holdback = max((len(s) for s in stops), default=1) - 1  # a stop string may still be forming
        while len(new) < max_new_tokens:
            n = min(chunk, max_new_tokens - len(new))
            out = generate_ids(self.config, self.params, [prompt + new], max_new_tokens=n, seed=seed + len(new),
                               mesh=self.mesh, **kwargs)[0]
            new += out
            finished = len(out) < n or len(new) >= max_new_tokens
            if p.kind == "ids":
                yield out
                if finished:
                    return
                continue
            text = T.decode(self.tokenizer, new, p.kind, None, stops)
            finished = finished or any(s and s in self.tokenizer.decode(new) for s in stops)
            if finished:
                text = T.decode(self.tokenizer, new, p.kind, template, stops)
            else:  # an unfinished UTF-8 character decodes as U+FFFD until its last byte arrives
                text = text.rstrip("\ufffd")[:max(len(emitted), len(text) - holdback)]
            if text.startswith(emitted) and len(text) > len(emitted):
                yield text[len(emitted):]
                emitted = text
            if finished:
                return

    def num_params(self) -> int:
        return P.count_params(self.config)


def check_token_ids(tokens: np.ndarray, vocab_size: int) -> None:
    """Token ids must index the embedding table (XLA would clamp an out-of-range gather silently)."""
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        bad = tokens[(tokens < 0) | (tokens >= vocab_size)]
        raise ValueError(f"token_ids: {bad.size} id(s) outside the vocabulary [0, {vocab_size}), e.g. {int(bad[0])}")


def _as_int_batch(x, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer array [batch, length], got dtype {arr.dtype} "
                         f"shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name}: shape {arr.shape} does not match token_ids {shape}")
    return arr.astype(np.int32)


def _input_sharding(mesh, batch: int):
    return batch_sharding(mesh) if batch % data_parallel_size(mesh) == 0 else replicated(mesh)


def _to_host(x: jax.Array) -> np.ndarray:
    if not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# ---------------------------------------------------------------- load
def load(path: str | os.PathLike, *, dtype=None, mesh=None, compute_dtype=None, scan_layers: bool | None = None,
         step: int | None = None, allow_pickle: bool = False) -> Model:
    """Load a model from an HF directory, our model checkpoint directory or a training workdir.

    dtype: parameter dtype ("float32", "bfloat16", …); None keeps the stored one.
    compute_dtype: activation/matmul dtype (ModelConfig.dtype); None keeps the config's (float32 by default).
    mesh: a `jax.sharding.Mesh` or a `parallel.MeshConfig` (the training config's `mesh` group, over all
        processes' devices) to shard the parameters over: every leaf is restored or read straight onto its
        shards (one tensor at a time from an HF directory), never as a whole model in one host's memory. A
        mesh that does not fit the devices or the model is a ConfigError before any weight is read. None puts
        the parameters on the default device.
    scan_layers: parameter layout to serve with (default: as stored; HF directories load scanned).
    step: which training step to restore from a workdir (default: the latest complete one).
    allow_pickle: accept pickled `pytorch_model.bin` weights in an HF directory (runs the unpickler).
    LoRA adapters stored in a checkpoint are merged into the weights (`Model.lora_config` records them).
    """
    path = paths.as_str(path, what="model path")  # a local directory or gs://...
    if not paths.resolve(path).is_dir():
        raise FileNotFoundError(f"{path}: no such model directory")
    if isinstance(mesh, MeshConfig):
        mesh = make_mesh(mesh)  # a mesh that does not fit the device count fails here
    # Called with the stored config before any weight is read: a mesh the model cannot split fails first.
    shardings = (lambda c: checked_param_shardings(c, mesh)) if mesh is not None else None
    extras: dict[str, Any] = {}
    if model_dir.is_model_checkpoint(path):
        # On a mesh: restored in the stored layout straight onto the shards, switched on the devices below.
        cfg, params, extras = model_dir.load_model_checkpoint(
            path, shardings=shardings, dtype=dtype, scan_layers=None if mesh is not None else scan_layers)
    elif hf_lib.is_hf_dir(path):
        with paths.local_copy(path) as local:  # gs://: downloaded first (safetensors are memory-mapped)
            cfg, params = hf_lib.load_hf_params(local, dtype=dtype, scan_layers=scan_layers,
                                                allow_pickle=allow_pickle, shardings=shardings)
        extras = {"tokenizer_dir": path if fileio.has_tokenizer(path) else None, "adapters": None}
    elif rundir.is_training_workdir(path):
        cfg, params, extras = rundir.load_training_params(path, step=step, dtype=dtype, shardings=shardings)
        if mesh is None:
            cfg, params, extras = model_dir.relayout_checkpoint(cfg, params, extras, scan_layers)
    else:
        raise FileNotFoundError(
            f"{path}: not a model directory: expected an HF directory (config.json + model.safetensors or "
            f"{hf_lib.SAFE_INDEX}), a model checkpoint ({model_dir.MODEL_CONFIG} + {model_dir.PARAMS_DIR}/) or a "
            f"training workdir ({rundir.CHECKPOINTS_DIR}/<step>/)")
    if mesh is not None:
        cfg, params, extras = _relayout_on_devices(cfg, params, extras, scan_layers)

    if extras.get("adapters") is not None:
        params = merge_lora(cfg, extras["lora_config"], params, extras["adapters"])
    if compute_dtype is not None:
        cfg = cfg.replace(dtype=np.dtype(compute_dtype).name)
    params = _place(cfg, params, mesh)
    tokenizer = _load_tokenizer(extras.get("tokenizer_dir"))
    # The template it was instruction-tuned with: a workdir's run config, or an export's training_run.json.
    template = extras.get("prompt_template") or chat_template_name(extras.get("training_run"))
    stored = chat_template_in_dir(extras["tokenizer_dir"]) if extras.get("tokenizer_dir") else None
    return Model(config=cfg, params=params, tokenizer=tokenizer, mesh=mesh, source=path,
                 lora_config=extras.get("lora_config"), step=extras.get("step"), template=template,
                 chat_template=stored)


def checked_param_shardings(cfg: ModelConfig, mesh) -> dict:
    """`param_shardings`, after checking that the mesh splits the model's heads, MLP and embedding evenly."""
    check_mesh_fits_model(mesh.shape, cfg)
    return param_shardings(cfg, mesh)


def _relayout_on_devices(cfg: ModelConfig, params: dict, extras: dict, scan_layers: bool | None):
    """Switch sharded parameters between the stacked and per-layer layouts on the devices, one leaf at a time
    (the stacked leaf is dropped once sliced), so no host holds the model; LoRA adapters (small) follow on
    the host."""
    if scan_layers is None or scan_layers == cfg.scan_layers:
        return cfg, params, extras
    flat = P.flatten_tree(params)
    out = {}
    if scan_layers:  # layers_i/… -> layers/…
        per_layer = [p for p in flat if p[0] == "layers_0"]
        for path in per_layer:
            parts = [flat.pop((f"layers_{i}",) + path[1:]) for i in range(cfg.num_layers)]
            out[("layers",) + path[1:]] = jnp.stack(parts)
            del parts
    else:  # layers/… -> layers_i/…
        for path in [p for p in flat if p[0] == "layers"]:
            stacked = flat.pop(path)
            for i in range(cfg.num_layers):
                out[(f"layers_{i}",) + path[1:]] = stacked[i]
            del stacked
    out.update(flat)
    if extras.get("adapters") is not None:
        convert = P.stack_layers if scan_layers else P.unstack_layers
        extras = dict(extras, adapters=jax.tree.map(np.asarray, convert(extras["adapters"], cfg.num_layers)))
    return cfg.replace(scan_layers=scan_layers), P.tree_from_paths(out), extras


def _place(cfg: ModelConfig, params: dict, mesh) -> dict:
    """Move parameters to the mesh (leaf by leaf, so host copies are freed as we go) or the default device."""
    if mesh is None:
        default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = {p: default for p in P.flatten_tree(params)}
    else:
        shardings = P.flatten_tree(param_shardings(cfg, mesh))
    flat = P.flatten_tree(params)
    placed = {}
    for leaf_path in list(flat):
        x = flat.pop(leaf_path)
        target = shardings[leaf_path]
        already = isinstance(x, jax.Array) and x.sharding.is_equivalent_to(target, x.ndim)
        if already:
            placed[leaf_path] = x
        elif isinstance(x, jax.Array) and not x.is_fully_addressable:  # sharded over hosts: reshard on devices
            placed[leaf_path] = jax.jit(lambda a: a, out_shardings=target)(x)
        else:  # a host array: every process copies only its own shards
            host = np.asarray(x)
            placed[leaf_path] = jax.make_array_from_callback(host.shape, target, lambda index, h=host: h[index])
        del x
    return P.tree_from_paths(placed)


def _load_tokenizer(tokenizer_dir: str | None):
    """The project's Tokenizer for `tokenizer_dir`, or None (no tokenizer files, or no tokenizer module yet)."""
    if tokenizer_dir is None:
        return None
    return Tokenizer.load(tokenizer_dir)


__all__ = ["Model", "checked_param_shardings", "load", "load_model_config", "param_shardings"]
