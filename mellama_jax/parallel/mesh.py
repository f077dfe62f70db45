"""Device mesh construction and multi-process (multi-host) initialisation.

`make_mesh(MeshConfig)` lays out devices as (data, fsdp, tensor). Sizes of -1 take the remaining devices.
`dcn_data` > 1 splits the data axis across slices (multi-slice TPU over the data-centre network), so the
only traffic over DCN is the data-parallel gradient all-reduce.

Axes are created as Auto (GSPMD propagation); jax.make_mesh's default of Explicit axes would make
ordinary indexing of sharded arrays a type error.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

from mellama_jax.config import ConfigError, ModelConfig
from mellama_jax.config_groups import PARSE, typed
from mellama_jax.parallel.rules import (
    LOGICAL_AXIS_RULES,
    MESH_AXES,
    Rules,
    current_rules,
    rules_as_strings,
    rules_from_strings,
)

log = logging.getLogger(__name__)


def _parse_rules(group, where: str) -> Rules:
    try:
        return rules_from_strings(group, where)
    except ValueError as e:
        raise ConfigError(str(e)) from e


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    dcn_data: int = 1  # number of slices; the data axis is split dcn_data x (data / dcn_data)
    # logical axis -> mesh axes (rules.py; the config group maps names to comma-separated mesh axes); made
    # current by the training loop
    rules: Rules = dataclasses.field(default=LOGICAL_AXIS_RULES, metadata={PARSE: _parse_rules})
    # Topology-aware placement (mesh_utils) failing is an error: a plain device-order mesh on a TPU pod or
    # across slices runs, but slowly (collectives cross the wrong links). True accepts that, with a warning.
    allow_plain_device_order: bool = False

    @classmethod
    def from_dict(cls, d, source: str = "config.mesh") -> "MeshConfig":
        """From the config group `mesh`; errors name `source.<field>`."""
        return typed(cls, d, source)

    def to_config_dict(self) -> ml_collections.ConfigDict:
        """The config group `mesh` with these values (the defaults of the training config's schema)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["rules"] = ml_collections.ConfigDict(rules_as_strings(self.rules))
        return ml_collections.ConfigDict(values)


MESH_FLAG = "--config.mesh."


def mesh_from_flags(args: Sequence[str]) -> tuple[MeshConfig | None, list[str]]:
    """The mesh of a serving command from training's flags: `--config.mesh.<field>=<value>` (or `... <value>`)
    set fields of the training config's `mesh` group (MeshConfig), e.g. `--config.mesh.data=2
    --config.mesh.tensor=4`; `--config.mesh.rules.<logical axis>=<mesh axes>` changes one sharding rule.
    Returns (MeshConfig, or None when no such flag is given; the other arguments). A serving mesh's unset
    axes default to data=1, fsdp=-1 (the rest), tensor=1, as in training."""
    fields = {f.name: f for f in dataclasses.fields(MeshConfig)}
    values: dict = {}
    rules: dict[str, str] = {}
    rest, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith(MESH_FLAG):
            rest.append(arg)
            i += 1
            continue
        key, eq, text = arg[len(MESH_FLAG):].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"{arg}: expected a value, e.g. {arg}=2")
            text, i = args[i + 1], i + 1
        i += 1
        if key.startswith("rules."):
            rules[key[len("rules."):]] = text
        elif key in fields and key != "rules":
            values[key] = _flag_value(f"{MESH_FLAG}{key}", text, type(getattr(MeshConfig(), key)))
        else:
            raise ConfigError(f"{MESH_FLAG}{key}: unknown mesh field; known: "
                              f"{', '.join(sorted(fields))} (rules.<logical axis>)")
    if not values and not rules:
        return None, rest
    if rules:
        values["rules"] = rules  # entries changed from the default table
    return MeshConfig.from_dict(values, source="--config.mesh"), rest


def _flag_value(flag: str, text: str, kind: type):
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{flag}={text}: expected true or false")
        return text.lower() in ("true", "1")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{flag}={text}: expected {kind.__name__}") from None


def resolve_mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    for name, s in zip(MESH_AXES, sizes):
        if s == 0 or s < -1:
            raise ConfigError(f"config.mesh.{name}={s}: sizes must be positive or -1 (the rest)")
    if sizes.count(-1) > 1:
        raise ConfigError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))}: fixed axes ({known} devices) do not divide "
                              f"the {num_devices} available devices")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                          f"but {num_devices} are available")
    if cfg.dcn_data < 1 or sizes[0] % cfg.dcn_data:
        raise ConfigError(f"config.mesh.dcn_data={cfg.dcn_data} must divide the data axis ({sizes[0]})")
    return tuple(sizes)


def make_mesh(cfg: MeshConfig | None = None, devices: Sequence | None = None) -> Mesh:
    cfg = cfg or MeshConfig()
    devices = list(devices if devices is not None else jax.devices())
    shape = resolve_mesh_shape(cfg, len(devices))
    dev_array = None
    if devices[0].platform == "tpu" or cfg.dcn_data > 1:
        try:
            if cfg.dcn_data > 1:
                ici = (shape[0] // cfg.dcn_data, shape[1], shape[2])
                dcn = (cfg.dcn_data, 1, 1)
                dev_array = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
            else:
                dev_array = mesh_utils.create_device_mesh(shape, devices)
        except Exception as e:  # noqa: BLE001 - any failure is reported; the fallback is opt-in
            what = (f"topology-aware device placement of mesh {dict(zip(MESH_AXES, shape))} "
                    f"(dcn_data={cfg.dcn_data}) on {len(devices)} {devices[0].platform} devices failed: "
                    f"{type(e).__name__}: {e}")
            if not cfg.allow_plain_device_order:
                raise ConfigError(f"{what}. Fix the mesh shape for this topology, or set "
                                  f"--config.mesh.allow_plain_device_order=True to run on a plain device-order mesh "
                                  f"(slower collectives)") from e
            log.warning("%s; using plain device order (mesh.allow_plain_device_order=True)", what)
    if dev_array is None:
        dev_array = np.asarray(devices, dtype=object).reshape(shape)
    kwargs = {}
    if hasattr(jax.sharding, "AxisType"):
        kwargs["axis_types"] = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return Mesh(dev_array, MESH_AXES, **kwargs)


# Model dimensions a serving mesh must split evenly: the rules table drops an axis from a dimension it does
# not divide (kv heads of a GQA model on a wide tensor axis are replicated on purpose), but a tensor axis that
# splits no attention head or an fsdp axis that splits no embedding is a mistyped mesh, not a choice.
_MUST_DIVIDE = (("heads", "num_heads"), ("mlp", "intermediate_size"), ("embed", "hidden_size"))


def check_mesh_fits_model(shape, cfg: ModelConfig, *, source: str = "mesh") -> None:
    """Raise ConfigError when a mesh axis of `shape` (axis -> size) does not divide the model dimension the
    current rules shard over it (attention heads and MLP width over tensor, the embedding over fsdp)."""
    shape = dict(shape)
    table = dict(current_rules())
    for logical, field in _MUST_DIVIDE:
        size = getattr(cfg, field)
        for axis in table.get(logical, ()):
            if shape.get(axis, 1) > 1 and size % shape[axis]:
                raise ConfigError(f"{source}.{axis}={shape[axis]} does not divide the model's {field}={size}; "
                                  f"pick a {axis} size that divides it")


def describe_mesh(shape) -> str:
    """'data=1 fsdp=8 tensor=1' for a mesh's `.shape` (or any axis -> size mapping): the one spelling the
    planner and the training CLI's --dry_run print, so a plan and its launch can be compared by eye."""
    return " ".join(f"{axis}={int(size)}" for axis, size in dict(shape).items())


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_count: int | None = None) -> None:
    """Start jax.distributed when running on several processes.

    Explicit arguments (local multi-process runs, launch/local.py) win; otherwise Cloud TPU and SLURM
    environments are detected and jax's own cluster detection fills in the rest. A single process with
    no cluster environment does nothing.
    """
    if local_device_count:
        jax.config.update("jax_num_cpu_devices", int(local_device_count))
    if coordinator is not None:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
        return
    on_tpu_pod = bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",")) or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ
    on_slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if on_tpu_pod or on_slurm:
        jax.distributed.initialize()  # jax's cluster detection reads TPU metadata / SLURM variables
        log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
