"""The training configuration: one ml_collections schema for config files, and frozen typed views of it.

Each default is written once, on the typed views below (and ModelConfig / MeshConfig for the `model` and
`mesh` groups); `default_config()` builds the locked ConfigDict that config files (`configs/*.py`, which
define `get_config()`) start from, so a config file or a `--config.<key>=<value>` flag naming a key the
schema lacks fails at once with the key's name. `apply_overrides` does the same for dotted overrides given
as a dict. `TrainConfig.from_config_dict` then validates values and builds the frozen dataclasses the
engine reads. `data.mixture` is the one group left open: it is handed as-is to the data package, which owns
and validates its schema.

Layout of the schema:
    model.*          ModelConfig fields (mellama_jax/config.py); param_dtype must stay float32 (master copy);
                     pad_token_id is an optional int (ml_collections placeholder)
    init_from        "" or a model checkpoint / Hugging Face directory (params only) for continual pretraining
    mesh.*           MeshConfig (data, fsdp, tensor, dcn_data, allow_plain_device_order) and mesh.rules.<logical axis> (parallel/rules.py)
    train.*          steps, seq_len, global_batch_size, micro_batches (gradient accumulation), seed, lora.*
    optim.*          AdamW + warmup/cosine schedule + clipping (Me-LLaMA recipe defaults, docs/sources.md)
    checkpoint.*     every_steps, keep, async_save, preemption_deadline_s (SIGTERM: train/stopping.py),
                     max_failed_saves (failed saves in a row that stop the run)
    eval.*           held-out evaluation cadence and size; benchmark tasks during training (eval.tasks ...)
    log.*            logging cadence, TensorBoard, progress bar, device peak FLOP/s for MFU
    data.*           kind ("synthetic" | "mixture" | "sft"), tokenizer, synthetic.*, mixture (opaque, for
                     mellama_jax.data: the pretraining components, and for kind="sft" its `instruct` group)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict

from mellama_jax.config import ConfigError, ModelConfig, preset
from mellama_jax.config_groups import IN_GROUP, PARSE, FieldError, plain, typed
from mellama_jax.model.lora import LoraConfig
from mellama_jax.parallel import MeshConfig

SCHEDULES = ("cosine", "linear", "constant")
DATA_KINDS = ("synthetic", "mixture", "sft")
# ---------------------------------------------------------------- frozen typed views
@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 8e-6
    schedule: str = "cosine"
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.0  # the schedule ends at learning_rate * min_lr_ratio
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 1e-5
    decay_norms: bool = False  # decay RMSNorm scales too
    decay_embeddings: bool = False  # decay the input embedding table too (lm_head is always decayed)
    clip_norm: float = 1.0  # 0 disables global-norm clipping

    def __post_init__(self):
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise FieldError("optim", "learning_rate", self.learning_rate, "must be a positive finite number")
        if self.schedule not in SCHEDULES:
            raise FieldError("optim", "schedule", self.schedule, f"expected one of {SCHEDULES}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise FieldError("optim", "warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise FieldError("optim", "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        for name in ("b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise FieldError("optim", name, getattr(self, name), "must be in [0, 1)")
        for name in ("weight_decay", "clip_norm"):
            if getattr(self, name) < 0:
                raise FieldError("optim", name, getattr(self, name), "must be >= 0")
        if self.eps <= 0:
            raise FieldError("optim", "eps", self.eps, "must be > 0")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int = 1000
    seq_len: int = 4096
    global_batch_size: int = 8
    micro_batches: int = 1  # gradient accumulation inside the jitted step
    seed: int = 0
    # The group `train.lora` (LoraConfig's fields; rank 0 = full-parameter training, read as None).
    lora: LoraConfig | None = dataclasses.field(default=None, metadata={PARSE: LoraConfig.from_group})

    def __post_init__(self):
        for name in ("steps", "seq_len", "global_batch_size", "micro_batches"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise FieldError("train", name, v, "must be a positive integer")
        if self.global_batch_size % self.micro_batches:
            raise FieldError("train", "micro_batches", self.micro_batches, f"must divide "
                             f"train.global_batch_size={self.global_batch_size} (each micro-batch takes an equal "
                             f"share of the batch's rows)")

    @property
    def micro_batch_size(self) -> int:
        return self.global_batch_size // self.micro_batches

    @property
    def lora_base_dtype(self) -> str:
        """Storage dtype of the frozen base of a LoRA run."""
        return self.lora.base_dtype if self.lora is not None else "float32"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 1000  # 0: only at the end and on SIGTERM
    keep: int = 3
    async_save: bool = True
    # SIGTERM (preemption notice): the save of the step in progress must end this many seconds after the signal
    # (train/stopping.py); fits a 30 s notice with room to exit.
    preemption_deadline_s: float = 25.0
    # A save that fails (after the storage clients' own retries) is reported and training goes on to the next
    # save; this many failed saves in a row stop the run (storage that stays down must not go unnoticed).
    max_failed_saves: int = 3

    def __post_init__(self):
        if self.max_failed_saves < 1:
            raise FieldError("checkpoint", "max_failed_saves", self.max_failed_saves, "must be >= 1")
        if self.preemption_deadline_s <= 0:
            raise FieldError("checkpoint", "preemption_deadline_s", self.preemption_deadline_s, "must be > 0")
        if self.every_steps < 0:
            raise FieldError("checkpoint", "every_steps", self.every_steps, "must be >= 0")
        if self.keep < 1:
            raise FieldError("checkpoint", "keep", self.keep, "must be >= 1")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    every_steps: int = 0  # 0 disables held-out evaluation
    batches: int = 2  # batches per mixture component
    batch_size: int = 0  # 0: the training global batch size
    tasks: str = ""  # benchmark tasks evaluated during training ("pubmedqa,medqa"); "" = none
    task_data_dir: str = ""  # their records (as `python -m mellama_jax.evaluate --data_dir`)
    task_every_steps: int = 0  # 0 with tasks set: only at the last step
    task_limit: int = 0  # first N records of each task; 0 = all
    task_max_new_tokens: int = 256  # MIBE's generation length

    def __post_init__(self):
        for name, least in (("every_steps", 0), ("batches", 1), ("batch_size", 0), ("task_every_steps", 0),
                            ("task_limit", 0), ("task_max_new_tokens", 1)):
            if getattr(self, name) < least:
                raise FieldError("eval", name, getattr(self, name), f"must be >= {least}")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    every_steps: int = 10
    tensorboard: bool = True
    progress_bar: bool = True
    peak_flops_per_device: float = 0.0  # 0: measure a jitted matmul at start-up (peak.py)

    def __post_init__(self):
        if self.every_steps < 1:
            raise FieldError("log", "every_steps", self.every_steps, "must be >= 1")


@dataclasses.dataclass(frozen=True)
class SyntheticDataConfig:
    seed: int = 1234
    min_doc_len: int = 8
    max_doc_len: int = 64
    pad_fraction: float = 0.05

    def __post_init__(self):
        if not 2 <= self.min_doc_len <= self.max_doc_len:
            raise FieldError("synthetic", "min_doc_len", self.min_doc_len, f"need 2 <= min_doc_len <= "
                             f"max_doc_len={self.max_doc_len}")
        if not 0.0 <= self.pad_fraction < 1.0:
            raise FieldError("synthetic", "pad_fraction", self.pad_fraction, "must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    kind: str = "synthetic"
    synthetic: SyntheticDataConfig = SyntheticDataConfig()
    tokenizer: str = ""  # sentencepiece tokenizer.model (or a directory holding one) for kind="mixture"/"sft"
    # ml_collections.ConfigDict for mellama_jax.data (kind="mixture"/"sft"), which types it (data/config.py)
    mixture: Any = dataclasses.field(default=None, metadata={PARSE: lambda v, _: ml_collections.ConfigDict(v or {})})
    # Logical data shards of the global batch (kind mixture/sft): the batch order depends on this, not on the
    # process count, so a run resumes on any number of hosts. 0: the process count of the run's first start
    # (recorded in its checkpoints).
    shards: int = 0

    def __post_init__(self):
        if self.shards < 0:
            raise FieldError("data", "shards", self.shards, "must be >= 0 (0: the process count at the first start)")
        if self.kind not in DATA_KINDS:
            raise FieldError("data", "kind", self.kind, f"expected one of {DATA_KINDS}")
        if self.kind in ("mixture", "sft") and not self.tokenizer:
            raise FieldError("data", "tokenizer", self.tokenizer, f"not set; data.kind={self.kind!r} needs it (the sentencepiece "
                             f"tokenizer.model, or a directory holding one)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    mesh: MeshConfig
    train: LoopConfig
    optim: OptimConfig
    checkpoint: CheckpointConfig
    eval: EvalConfig
    log: LogConfig
    data: DataConfig
    init_from: str = ""
    # the validated ConfigDict
    raw: Any = dataclasses.field(default=None, compare=False, repr=False, metadata={IN_GROUP: False})

    def __post_init__(self):
        if self.model.param_dtype != "float32":
            raise FieldError("config", "model.param_dtype", self.model.param_dtype, "training keeps float32 "
                             "master parameters; set model.dtype for the compute dtype instead")
        if self.train.seq_len > self.model.max_position_embeddings:
            raise FieldError("config", "train.seq_len", self.train.seq_len, f"exceeds model.max_position_embeddings="
                             f"{self.model.max_position_embeddings}")

    @classmethod
    def from_config_dict(cls, cd: ml_collections.ConfigDict | Mapping) -> "TrainConfig":
        """Validate a training config (a ConfigDict from a config file, or the same as a plain dict, e.g.
        a checkpoint's stored config) and build the typed views. Unknown keys and bad values raise
        ConfigError naming their full path."""
        values = plain(cd)
        cfg = typed(cls, values, "config")
        object.__setattr__(cfg, "raw", ml_collections.ConfigDict(values))
        return cfg

    def to_dict(self) -> dict:
        """Plain JSON-able dict (stored as the checkpoint's `config` item)."""
        return self.raw.to_dict() if self.raw is not None else dataclasses.asdict(self)


def _group(view) -> ml_collections.ConfigDict:
    """The config group of a typed view's defaults (nested groups filled in by the caller)."""
    return ml_collections.ConfigDict({k: v for k, v in dataclasses.asdict(view).items() if v is not None})


def model_fields(preset_name: str, **overrides) -> ml_collections.ConfigDict:
    """The locked config group `model`: every ModelConfig field of a preset (`config.preset`) plus overrides."""
    values = preset(preset_name, **overrides).to_dict()
    pad = values.pop("pad_token_id")
    group = ml_collections.ConfigDict(values)
    group.pad_token_id = config_dict.placeholder(int) if pad is None else pad
    group.lock()
    return group


def default_config() -> ml_collections.ConfigDict:
    """The complete schema with its defaults (the typed views' defaults), locked; `data.mixture` stays open."""
    c = ml_collections.ConfigDict()
    c.model = model_fields("tiny")
    c.init_from = ""
    c.mesh = MeshConfig().to_config_dict()
    c.train = _group(LoopConfig())
    c.train.lora = ml_collections.ConfigDict(LoraConfig.group_defaults())
    c.optim = _group(OptimConfig())
    c.checkpoint = _group(CheckpointConfig())
    c.eval = _group(EvalConfig())
    c.log = _group(LogConfig())
    c.data = _group(DataConfig())
    c.data.mixture = ml_collections.ConfigDict()
    c.lock()
    c.data.mixture.unlock()
    return c


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Set dotted keys ({"train.steps": 5}) on a locked config, as `--config.train.steps=5` would; a key
    the schema lacks, or a value of the wrong type, raises ConfigError naming the key."""
    for key, value in overrides.items():
        try:
            cfg.update_from_flattened_dict({key: value})
        except (KeyError, AttributeError) as e:
            raise ConfigError(f"config.{key}: no such config field") from e
        except TypeError as e:
            raise ConfigError(f"config.{key}={value!r}: {e}") from e
