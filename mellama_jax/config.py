"""Model configuration: one frozen, typed description of a LLaMA-2 architecture.

`ModelConfig` is what the model, the parameter table, conversion and planning read. It maps to and from
Hugging Face's `LlamaConfig` (`from_hf_config` / `to_hf_config`) and to and from plain dicts (for
ml_collections config files and for the `model_config.json` stored next to every checkpoint).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from typing import Any, Mapping

from mellama_jax.config_groups import ConfigError, FieldError, typed

# Names accepted for `remat_policy` (MaxText's names); the policies themselves live in mellama_jax/model/remat.py.
REMAT_POLICIES = ("none", "minimal_with_context", "minimal", "save_dots", "save_dot_except_mlpwi",
                  "save_dot_except_mlp", "save_qkv_proj", "save_out_proj", "full",
                  "minimal_offloaded", "minimal_with_context_offloaded", "qkv_proj_offloaded")
ATTENTION_BACKENDS = ("xla", "splash", "cudnn")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int = 0  # 0 = hidden_size // num_heads
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    initializer_range: float = 0.02
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int | None = None
    # Execution choices (not part of the architecture; never exported to HF).
    dtype: str = "float32"  # compute dtype of activations and matmuls
    param_dtype: str = "float32"  # storage dtype of parameters
    scan_layers: bool = True
    remat_policy: str = "none"
    attention: str = "xla"

    def __post_init__(self):
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden_size // max(self.num_heads, 1))
        positive = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                    "num_kv_heads", "head_dim", "max_position_embeddings")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FieldError(self, name, value, "must be a positive integer")
        if self.num_heads % self.num_kv_heads:
            raise FieldError(self, "num_kv_heads", self.num_kv_heads, f"must divide num_heads={self.num_heads}")
        if self.head_dim % 2:
            raise FieldError(self, "head_dim", self.head_dim, "must be even for rotary embeddings")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise FieldError(self, name, getattr(self, name), f"expected one of {DTYPES}")
        if self.remat_policy not in REMAT_POLICIES:
            raise FieldError(self, "remat_policy", self.remat_policy, f"expected one of {REMAT_POLICIES}")
        if self.attention not in ATTENTION_BACKENDS:
            raise FieldError(self, "attention", self.attention, f"expected one of {ATTENTION_BACKENDS}")

    # ---------------------------------------------------------------- derived quantities
    @property
    def q_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- dict / json
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config.model") -> "ModelConfig":
        """From the config group `model` (or a stored model_config.json); errors name `source.<field>`."""
        return typed(cls, values, source)

    def save_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load_json(cls, path: str) -> "ModelConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f), source=path)

    # ---------------------------------------------------------------- Hugging Face
    @classmethod
    def from_hf_config(cls, hf: Any, **overrides) -> "ModelConfig":
        """From a transformers `LlamaConfig`, its dict, or a path to `config.json` / its directory."""
        source = "config.json"
        if isinstance(hf, (str, os.PathLike)):
            path = os.fspath(hf)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            if not os.path.exists(path):
                raise ConfigError(f"{path}: no such Hugging Face config file")
            source = path
            with open(path) as f:
                try:
                    hf = json.load(f)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}: not valid JSON ({e})") from e
        elif not isinstance(hf, Mapping):
            hf = hf.to_dict()
        model_type = hf.get("model_type")
        if model_type != "llama":
            raise ConfigError(f"{source}: model_type is {model_type!r}; mellama_jax supports 'llama' (LLaMA-2) only")
        if hf.get("tie_word_embeddings", False):
            raise ConfigError(f"{source}: tie_word_embeddings=true; LLaMA-2 has untied input/output embeddings")
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise ConfigError(f"{source}: attention_bias/mlp_bias set; LLaMA-2 has no biases")
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act={act!r}; LLaMA-2 uses 'silu'")
        rope_scaling = hf.get("rope_scaling")
        if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) not in (None, "default"):
            raise ConfigError(f"{source}: rope_scaling={rope_scaling!r} is not supported (LLaMA-2 uses plain RoPE)")
        # transformers 5 moves rope_theta into `rope_parameters`; older files have it at the top level.
        theta = hf.get("rope_theta")
        if theta is None:
            theta = (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if k not in hf]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {missing}")
        heads = hf["num_attention_heads"]
        eos = hf.get("eos_token_id", 2)
        values = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-5),
            rope_theta=float(theta),
            initializer_range=hf.get("initializer_range", 0.02),
            bos_token_id=hf.get("bos_token_id", 1) if hf.get("bos_token_id") is not None else 1,
            eos_token_id=(eos[0] if isinstance(eos, list) else eos) if eos is not None else 2,
            pad_token_id=hf.get("pad_token_id"),
        )
        values.update(overrides)
        return cls(**values)

    def to_hf_config(self) -> dict[str, Any]:
        """A `config.json` dict for transformers' LlamaForCausalLM with every LLaMA-2 value explicit.

        transformers' LlamaConfig defaults are LLaMA-1's (eps 1e-6, 2048 positions), so nothing is left
        to defaults here.
        """
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "hidden_act": "silu",
            "initializer_range": self.initializer_range,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "pretraining_tp": 1,
            "tie_word_embeddings": False,
            "use_cache": True,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "bfloat16" if self.param_dtype == "bfloat16" else "float32",
        }


# ---------------------------------------------------------------- presets (LLaMA-2 shapes: docs/sources.md)
_LLAMA2 = dict(vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0)

PRESETS: dict[str, dict[str, Any]] = {
    "llama2_7b": dict(_LLAMA2, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
                      num_kv_heads=32),
    "llama2_13b": dict(_LLAMA2, hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40,
                       num_kv_heads=40),
    "llama2_70b": dict(_LLAMA2, hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64,
                       num_kv_heads=8),
    # The benchmark model of docs/sources.md (~56M parameters).
    "bench_56m": dict(_LLAMA2, hidden_size=512, intermediate_size=1376, num_layers=8, num_heads=8,
                      num_kv_heads=4),
    # Tiny models for the demo and tests (vocab matches the demo sentencepiece model).
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_layers=2, num_heads=4,
                 num_kv_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0),
    "demo": dict(vocab_size=1024, hidden_size=128, intermediate_size=344, num_layers=4, num_heads=4,
                 num_kv_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def config_module(path: str | os.PathLike, *, requires: str = "get_config"):
    """Execute a Python config file by path and return it as a module.

    Config files (configs/**.py, ml_collections style) are files, not an importable package: launchers,
    the planner, the recipe and other config files load them by path. A missing file, a file that fails to
    run, or one without `requires` raises ConfigError naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file")
    spec = importlib.util.spec_from_file_location(f"_mellama_config_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - a broken config file: say which
        raise ConfigError(f"{path}: failed to execute config file ({type(e).__name__}: {e})") from e
    if requires and not hasattr(module, requires):
        raise ConfigError(f"{path}: a config file must define {requires}()")
    return module


def sibling_config(anchor_file: str, relative: str):
    """`config_module` of a file next to `anchor_file` (a config file's own __file__)."""
    return config_module(os.path.join(os.path.dirname(os.path.abspath(anchor_file)), relative))
