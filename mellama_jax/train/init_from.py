"""`init_from` decides the model: a run that starts from a checkpoint takes its architecture and tokenizer.

A config file's `model` group describes the model to build at random. Once `init_from` names a Hugging Face
LLaMA directory or one of our model checkpoints, that checkpoint's architecture (and token ids) replace the
file's, and its tokenizer becomes `data.tokenizer` when none is set, so
`--config.init_from=/path/to/Llama-2-7b-hf` on any config file just works. Fields the user set explicitly
(`--config.model.hidden_size=…` on the command line) are kept: a mismatch the user asked for stays an error
(the train loop compares the checkpoint with the config before restoring).
"""
from __future__ import annotations

import copy
import logging
from typing import Iterable

import ml_collections
from ml_collections import config_flags

from mellama_jax import paths
from mellama_jax.checkpoints import lora_base, model_dir
from mellama_jax.config import ConfigError, ModelConfig
from mellama_jax.convert import hf
from mellama_jax.data.tokenizer import MODEL_FILE

log = logging.getLogger(__name__)

# The fields a checkpoint fixes: its architecture and the token ids its tokenizer and embeddings agree on.
ADOPTED_FIELDS = lora_base.ARCHITECTURE_FIELDS + ("max_position_embeddings", "bos_token_id", "eos_token_id",
                                             "pad_token_id")


def source_model_config(path: str) -> ModelConfig:
    """The ModelConfig of `path`: a model checkpoint directory or an HF LLaMA directory."""
    path = paths.as_str(path, what="init_from")  # local or gs://
    if model_dir.is_model_checkpoint(path):
        return model_dir.read_model_config(path)
    if hf.is_hf_dir(path):
        return hf.read_hf_config(path)
    if not paths.resolve(path).exists():
        raise ConfigError(f"init_from={path}: no such directory")
    raise ConfigError(f"init_from={path}: expected a Hugging Face LLaMA directory (config.json + *.safetensors) "
                      f"or a model checkpoint ({model_dir.MODEL_CONFIG} + {model_dir.PARAMS_DIR}/)")


def source_tokenizer(path: str) -> str | None:
    """Path of the sentencepiece tokenizer.model stored with checkpoint `path`, or None."""
    for d in (paths.join(path, model_dir.TOKENIZER_DIR), paths.as_str(path, what="init_from")):
        model = paths.join(d, MODEL_FILE)
        if paths.resolve(model).is_file():
            return model
    return None


def adopt_init_from(cd: ml_collections.ConfigDict, explicit: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """A copy of training config `cd` whose model and tokenizer follow `cd.init_from` (unchanged if unset).

    explicit: config keys the user set on the command line ("model.hidden_size", "data.tokenizer"); those
    values stay as given.
    """
    out = copy.deepcopy(cd)  # keeps the schema's lock and field types
    if not out.get("init_from"):
        return out
    explicit = set(explicit)
    src = source_model_config(out.init_from)
    changed = {}
    for field in ADOPTED_FIELDS:
        if f"model.{field}" in explicit:
            continue
        value = getattr(src, field)
        if out.model[field] != value:
            changed[field] = (out.model[field], value)
            out.model[field] = value
    if changed:
        log.info("model from init_from=%s: %s", out.init_from,
                 ", ".join(f"{k} {a} -> {b}" for k, a, b in ((k, *v) for k, v in changed.items())))
    tokenizer = source_tokenizer(out.init_from)
    if tokenizer and not out.data.tokenizer and "data.tokenizer" not in explicit:
        out.data.tokenizer = tokenizer
    return out


def check_init_from(init_from: str, model: ModelConfig) -> None:
    """ConfigError naming every architecture field on which `model` differs from checkpoint `init_from`
    (after adopt_init_from that happens only where the user set the field explicitly)."""
    if not init_from:
        return
    diff = lora_base.architecture_differences(source_model_config(init_from), model)
    if diff:
        raise ConfigError(f"init_from={init_from}: checkpoint architecture differs from config.model "
                          f"(field: (checkpoint, config)) {diff}; drop the --config.model.* overrides to use "
                          f"the checkpoint's")


def command_line_keys(config_flag) -> set[str]:
    """The `--config.<key>=…` overrides given on the command line for an ml_collections config flag."""
    try:
        return set(config_flags.get_override_values(config_flag))
    except AttributeError:  # the flag was never parsed from a command line (e.g. set programmatically)
        return set()
