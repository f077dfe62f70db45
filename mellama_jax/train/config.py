"""The training configuration: an ml_collections schema for config files and frozen, typed views of it.

Config files (`configs/*.py`) define `get_config()` that starts from `default_config()` and changes values;
`--config.<key>=<value>` flags override single fields. `TrainConfig.from_config_dict` then checks the result
against the schema — an unknown key anywhere (a typo in a config file) is an error naming its full path —
and builds the frozen dataclasses the engine reads. The exception is `data.mixture`, which is handed as-is
to the data package (mellama_jax.data), which owns and validates its schema.

Layout of the schema (see `default_config`):
    model.*          ModelConfig fields (mellama_jax/config.py); param_dtype must stay float32 (master copy)
    init_from        "" or a model checkpoint directory (params only) for continual pretraining
    mesh.*           MeshConfig (data, fsdp, tensor, dcn_data, allow_plain_device_order)
    train.*          steps, seq_len, global_batch_size, micro_batches (gradient accumulation), seed, lora
    optim.*          AdamW + warmup/cosine schedule + clipping (Me-LLaMA recipe defaults, REFERENCE §2)
    checkpoint.*     every_steps, keep, async_save
    eval.*           held-out evaluation cadence and size
    log.*            logging cadence, TensorBoard, progress bar, device peak FLOP/s for MFU
    data.*           kind ("synthetic" | "mixture" | "sft"), synthetic.*, mixture (opaque, for mellama_jax.data:
                     the pretraining components, and for kind="sft" its `instruct` group)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import ml_collections

from mellama_jax.config import DTYPES, ConfigError, ModelConfig, preset
from mellama_jax.parallel import MeshConfig

SCHEDULES = ("cosine", "linear", "constant")
DATA_KINDS = ("synthetic", "mixture", "sft")
# Sub-trees whose keys are not checked here (owned by another package).
OPAQUE_KEYS = ("data.mixture",)


def model_fields(preset_name: str, **overrides) -> ml_collections.ConfigDict:
    """ConfigDict of every ModelConfig field, from a preset (`config.preset`) plus overrides."""
    cfg = preset(preset_name, **overrides)
    d = cfg.to_dict()
    if d["pad_token_id"] is None:
        d["pad_token_id"] = -1  # ConfigDict fields need a type; -1 stands for "no pad token"
    return ml_collections.ConfigDict(d)


def default_config() -> ml_collections.ConfigDict:
    """The complete schema with defaults (the Me-LLaMA continual-pretraining optimizer recipe)."""
    c = ml_collections.ConfigDict()
    c.model = model_fields("tiny")
    c.init_from = ""
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, dcn_data=1, allow_plain_device_order=False))
    c.train = ml_collections.ConfigDict(dict(
        steps=1000, seq_len=4096, global_batch_size=8, micro_batches=1, seed=0,
        # LoRA (train/lora.py): rank 0 trains every parameter; rank > 0 trains adapters on `targets`
        # (comma-separated q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj) over a frozen base
        # loaded from init_from and kept in base_dtype.
        lora=ml_collections.ConfigDict(dict(rank=0, alpha=16.0, dropout=0.0, targets="q_proj,v_proj",
                                            base_dtype="float32"))))
    c.optim = ml_collections.ConfigDict(dict(
        learning_rate=8e-6, schedule="cosine", warmup_ratio=0.05, min_lr_ratio=0.0,
        b1=0.9, b2=0.95, eps=1e-8, weight_decay=1e-5, decay_norms=False, decay_embeddings=False,
        clip_norm=1.0))
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=3, async_save=True))
    c.eval = ml_collections.ConfigDict(dict(every_steps=0, batches=2, batch_size=0))
    c.log = ml_collections.ConfigDict(dict(every_steps=10, tensorboard=True, progress_bar=True,
                                           peak_flops_per_device=0.0))
    c.data = ml_collections.ConfigDict(dict(
        kind="synthetic",
        tokenizer="",  # sentencepiece tokenizer.model (or a directory holding one) for kind="mixture"
        # Logical data shards of the global batch (kind mixture/sft): the batch order depends on this, not
        # on the process count, so a run resumes on any number of hosts. 0: the process count of the run's
        # first start (recorded in its checkpoints).
        shards=0,
        synthetic=ml_collections.ConfigDict(dict(seed=1234, min_doc_len=8, max_doc_len=64, pad_fraction=0.05)),
        mixture=ml_collections.ConfigDict()))
    return c


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
            raise ConfigError(f"optim.learning_rate must be a positive finite number, got {self.learning_rate}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule={self.schedule!r}; expected one of {SCHEDULES}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.clip_norm < 0 or self.eps <= 0:
            raise ConfigError("optim.weight_decay and optim.clip_norm must be >= 0 and optim.eps > 0")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int = 1000
    seq_len: int = 4096
    global_batch_size: int = 8
    micro_batches: int = 1  # gradient accumulation inside the jitted step
    seed: int = 0
    lora: Any = None  # mellama_jax.model.lora.LoraConfig or None (full-parameter training)
    lora_base_dtype: str = "float32"  # storage dtype of the frozen base of a LoRA run

    def __post_init__(self):
        for name in ("steps", "seq_len", "global_batch_size", "micro_batches"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"train.{name} must be a positive integer, got {v!r}")
        if self.lora_base_dtype not in DTYPES:
            raise ConfigError(f"train.lora.base_dtype={self.lora_base_dtype!r}; expected one of {DTYPES}")
        if self.global_batch_size % self.micro_batches:
            raise ConfigError(f"train.global_batch_size={self.global_batch_size} is not divisible by "
                              f"train.micro_batches={self.micro_batches}")

    @property
    def micro_batch_size(self) -> int:
        return self.global_batch_size // self.micro_batches


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 1000  # 0: only at the end and on SIGTERM
    keep: int = 3
    async_save: bool = True

    def __post_init__(self):
        if self.every_steps < 0 or self.keep < 1:
            raise ConfigError(f"checkpoint.every_steps must be >= 0 and checkpoint.keep >= 1, "
                              f"got {self.every_steps}, {self.keep}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    every_steps: int = 0  # 0 disables held-out evaluation
    batches: int = 2  # batches per mixture component
    batch_size: int = 0  # 0: the training global batch size

    def __post_init__(self):
        if self.every_steps < 0 or self.batches < 1 or self.batch_size < 0:
            raise ConfigError("eval.every_steps >= 0, eval.batches >= 1 and eval.batch_size >= 0 are required")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    every_steps: int = 10
    tensorboard: bool = True
    progress_bar: bool = True
    peak_flops_per_device: float = 0.0  # 0: measure a jitted matmul at start-up (peak.py)

    def __post_init__(self):
        if self.every_steps < 1:
            raise ConfigError(f"log.every_steps must be >= 1, got {self.every_steps}")


@dataclasses.dataclass(frozen=True)
class SyntheticDataConfig:
    seed: int = 1234
    min_doc_len: int = 8
    max_doc_len: int = 64
    pad_fraction: float = 0.05

    def __post_init__(self):
        if not 2 <= self.min_doc_len <= self.max_doc_len:
            raise ConfigError("data.synthetic: need 2 <= min_doc_len <= max_doc_len")
        if not 0.0 <= self.pad_fraction < 1.0:
            raise ConfigError("data.synthetic.pad_fraction must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    kind: str = "synthetic"
    synthetic: SyntheticDataConfig = SyntheticDataConfig()
    mixture: Any = None  # ml_collections.ConfigDict for mellama_jax.data (kind="mixture")
    tokenizer: str = ""
    shards: int = 0

    def __post_init__(self):
        if self.shards < 0:
            raise ConfigError(f"data.shards={self.shards}: must be >= 0 (0: the process count at the first start)")
        if self.kind not in DATA_KINDS:
            raise ConfigError(f"data.kind={self.kind!r}; expected one of {DATA_KINDS}")
        if self.kind in ("mixture", "sft") and not self.tokenizer:
            raise ConfigError(f"data.kind={self.kind!r} needs data.tokenizer (path of the sentencepiece tokenizer.model)")


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
    raw: Any = dataclasses.field(default=None, compare=False, repr=False)  # the validated ConfigDict

    def __post_init__(self):
        if self.model.param_dtype != "float32":
            raise ConfigError(f"model.param_dtype={self.model.param_dtype!r}: training keeps float32 master "
                              f"parameters; set model.dtype for the compute dtype instead")
        if self.train.seq_len > self.model.max_position_embeddings:
            raise ConfigError(f"train.seq_len={self.train.seq_len} exceeds model.max_position_embeddings="
                              f"{self.model.max_position_embeddings}")

    @classmethod
    def from_config_dict(cls, cd: ml_collections.ConfigDict | Mapping) -> "TrainConfig":
        values = cd.to_dict() if isinstance(cd, ml_collections.ConfigDict) else dict(cd)
        check_keys(values, default_config().to_dict())
        model = dict(values["model"])
        if model.get("pad_token_id", -1) == -1:
            model["pad_token_id"] = None
        train = dict(values["train"])
        train["lora_base_dtype"] = train["lora"].get("base_dtype", "float32")
        train["lora"] = _lora_from_dict(train["lora"])
        data = dict(values["data"])
        mixture = data.pop("mixture")
        return cls(
            model=ModelConfig.from_dict(model, source="config.model"),
            mesh=MeshConfig.from_dict(values["mesh"]),
            train=LoopConfig(**train),
            optim=OptimConfig(**values["optim"]),
            checkpoint=CheckpointConfig(**values["checkpoint"]),
            eval=EvalConfig(**values["eval"]),
            log=LogConfig(**values["log"]),
            data=DataConfig(kind=data["kind"], tokenizer=data["tokenizer"], shards=data["shards"],
                            synthetic=SyntheticDataConfig(**data["synthetic"]),
                            mixture=ml_collections.ConfigDict(mixture)),
            init_from=values["init_from"],
            raw=ml_collections.ConfigDict(values),
        )

    def to_dict(self) -> dict:
        """Plain JSON-able dict (stored as the checkpoint's `config` item)."""
        return self.raw.to_dict() if self.raw is not None else dataclasses.asdict(self)


def _lora_from_dict(d: Mapping):
    if not d or d.get("rank") == 0:
        return None
    from mellama_jax.model.lora import LoraConfig
    targets = d["targets"]
    if isinstance(targets, str):
        targets = tuple(t.strip() for t in targets.split(",") if t.strip())
    try:
        return LoraConfig(rank=d["rank"], alpha=d["alpha"], dropout=d["dropout"], targets=targets)
    except ConfigError as e:  # name the config group the value came from
        raise ConfigError(f"config.train.{e}") from e


def check_keys(values: Mapping, schema: Mapping, prefix: str = "config") -> None:
    """Raise ConfigError naming every key of `values` missing from `schema` (recursively)."""
    unknown = []
    for key, value in values.items():
        path = f"{prefix}.{key}"
        if key not in schema:
            unknown.append(path)
        elif isinstance(schema[key], Mapping) and path.removeprefix("config.") not in OPAQUE_KEYS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path} must be a group of settings, got {value!r}")
            check_keys(value, schema[key], path)
    if unknown:
        known = ", ".join(sorted(schema))
        raise ConfigError(f"unknown config key(s) {unknown}; known keys under {prefix}: {known}")
