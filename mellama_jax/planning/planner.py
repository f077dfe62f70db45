"""Ahead-of-time planning: compile the real train step for a TPU topology from a CPU machine.

`plan_step(config, topology, remat=..., micro_batch=...)`:
  1. fake TPU devices for the topology (libtpu, topology.py), the mesh from the config's `mesh.*`
     (`mellama_jax.parallel.make_mesh`),
  2. the training engine's jitted step and abstract inputs for that mesh
     (`mellama_jax.train.aot.abstract_train_inputs(config, mesh)`: ShapeDtypeStructs with the config's
     shardings, so nothing is allocated),
  3. `lower(...).compile()` with the TPU compiler, then memory and FLOPs per chip (compiled.py). An
     out-of-memory compile becomes a "does not fit" report carrying the memory the compiler asked for.

`sweep` runs that over remat policies x micro-batch sizes and `choose` names the fastest plan that fits.

The micro-batch is given per chip (rows one chip runs per forward/backward); with the config's global
batch it fixes the gradient-accumulation count: micro_batches = global_batch / (micro_batch x data-parallel
chips). Multi-slice topologies put the slices on the mesh's data axis (`mesh.dcn_data`), so only the
gradient all-reduce crosses the data-centre network.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tempfile
import time
from typing import Iterable, Optional, Sequence

import ml_collections
from jax.experimental.serialize_executable import serialize

from mellama_jax import parallel
from mellama_jax.config import REMAT_POLICIES, ConfigError, ModelConfig
from mellama_jax.model import params as P
from mellama_jax.parallel import MeshConfig, axis_rules, make_mesh, resolve_mesh_shape
from mellama_jax.planning import compiled as C
from mellama_jax.planning.flops import jaxpr_matmul_flops
from mellama_jax.planning.topology import TpuTopology, fake_devices, parse_topology
from mellama_jax.train import aot

log = logging.getLogger(__name__)

# Cheapest to most recompute, for tie-breaking plans with equal FLOPs.
# Offloaded policies recompute what `full` does minus what they offload, and keep HBM like `full`.
REMAT_ORDER = ("none", "minimal_with_context", "minimal", "save_dots", "save_dot_except_mlpwi", "save_dot_except_mlp",
               "save_qkv_proj", "save_out_proj", "minimal_with_context_offloaded", "minimal_offloaded",
               "qkv_proj_offloaded", "full")
assert set(REMAT_ORDER) == set(REMAT_POLICIES)


@dataclasses.dataclass(frozen=True)
class StepShape:
    """How the config's global batch is split on a mesh."""
    global_batch: int
    seq_len: int
    data_parallel: int  # chips the batch is split over (data x fsdp)
    micro_batches: int

    @property
    def micro_batch_per_chip(self) -> int:
        return self.global_batch // (self.micro_batches * self.data_parallel)


def _for_topology(config: ml_collections.ConfigDict, topology: TpuTopology) -> ml_collections.ConfigDict:
    """A copy of `config` whose mesh spans the topology's slices (data axis over DCN)."""
    cfg = ml_collections.ConfigDict(config.to_dict())
    if topology.num_slices > 1 and cfg.mesh.dcn_data == 1:
        cfg.mesh.dcn_data = topology.num_slices
        if cfg.mesh.data != -1:
            cfg.mesh.data = cfg.mesh.data * topology.num_slices
        log.info("multi-slice %s: mesh.dcn_data=%d, mesh.data=%d", topology.name, cfg.mesh.dcn_data, cfg.mesh.data)
    return cfg


def data_parallel_chips(config: ml_collections.ConfigDict, topology: TpuTopology) -> int:
    """Chips the global batch is split over (mesh data x fsdp) for this topology."""

    mesh_cfg = MeshConfig.from_dict(_for_topology(config, topology).mesh.to_dict())
    data, fsdp, _ = resolve_mesh_shape(mesh_cfg, topology.num_chips)
    return data * fsdp


def adapt_config(config: ml_collections.ConfigDict, topology: TpuTopology, *, remat: Optional[str] = None,
                 micro_batch: Optional[int] = None) -> tuple[ml_collections.ConfigDict, StepShape]:
    """A copy of `config` for this topology, remat policy and per-chip micro-batch (None: the config's)."""
    cfg = _for_topology(config, topology)
    if remat is not None:
        if remat not in REMAT_POLICIES:
            raise ConfigError(f"remat policy {remat!r}; expected one of {REMAT_POLICIES}")
        cfg.model.remat_policy = remat
    dp = data_parallel_chips(config, topology)
    global_batch, seq_len = int(cfg.train.global_batch_size), int(cfg.train.seq_len)
    if micro_batch is None:
        micro_batches = int(cfg.train.micro_batches)
        rows = global_batch // micro_batches
        if rows % dp:
            raise ConfigError(f"train.global_batch_size={global_batch} / train.micro_batches={micro_batches} = "
                              f"{rows} rows per micro-batch cannot be split over the {dp} data-parallel chips "
                              f"of {topology.name}")
    else:
        if micro_batch < 1 or global_batch % (micro_batch * dp):
            raise ConfigError(f"micro-batch {micro_batch}/chip x {dp} data-parallel chips of {topology.name} does "
                              f"not divide train.global_batch_size={global_batch}")
        micro_batches = global_batch // (micro_batch * dp)
        cfg.train.micro_batches = micro_batches
    return cfg, StepShape(global_batch, seq_len, dp, micro_batches)


def micro_batch_choices(config: ml_collections.ConfigDict, topology: TpuTopology, limit: int = 16) -> list[int]:
    """Per-chip micro-batch sizes (powers of two up to `limit`) that split the global batch evenly."""
    dp = data_parallel_chips(config, topology)
    g = int(config.train.global_batch_size)
    return [m for m in (2 ** i for i in range(limit.bit_length())) if m <= limit and g % (m * dp) == 0]


def train_step_inputs(config: ml_collections.ConfigDict, mesh):
    """(jitted train step, abstract arguments with shardings) for `mesh`: the step the training loop runs."""
    return aot.abstract_train_inputs(config, mesh)


def compile_step(config: ml_collections.ConfigDict, mesh):
    """Trace, lower and compile the real train step for `mesh` on abstract inputs.

    Returns (executable, matmul FLOPs of one step, global). Raises what the compiler raises.
    """

    jitted, abstract_args = train_step_inputs(config, mesh)
    # The model's logical sharding constraints resolve against the mesh in context while tracing.
    with parallel.activation_sharding(mesh):
        traced = jitted.trace(*abstract_args)
        step_flops = jaxpr_matmul_flops(traced.jaxpr)
        lowered = traced.lower()
    return lowered.compile(), step_flops


def plan_step(config: ml_collections.ConfigDict, topology: TpuTopology | str, *, remat: Optional[str] = None,
              micro_batch: Optional[int] = None, save_executable: Optional[str] = None,
              devices: Optional[Sequence] = None) -> C.CompileReport:
    """Compile the train step for `topology` and report per-chip memory and FLOPs, or why it does not fit."""

    topology = parse_topology(topology) if isinstance(topology, str) else topology
    cfg, shape = adapt_config(config, topology, remat=remat, micro_batch=micro_batch)
    devices = list(devices) if devices is not None else fake_devices(topology)
    mesh_cfg = MeshConfig.from_dict(cfg.mesh.to_dict())
    mesh = make_mesh(mesh_cfg, devices=devices)
    fields = dict(topology=topology.name, remat_policy=str(cfg.model.remat_policy),
                  micro_batch_per_chip=shape.micro_batch_per_chip, micro_batches=shape.micro_batches,
                  hbm_bytes=topology.chip.hbm_bytes, mesh=dict(mesh.shape))
    model_cfg = ModelConfig.from_dict(_model_dict(cfg))
    fields["model_flops_per_chip"] = (P.flops_per_token(model_cfg, shape.seq_len) * shape.global_batch * shape.seq_len
                                      / topology.num_chips)
    log.info("compiling %s remat=%s micro_batch=%d/chip x%d ...", topology.name, fields["remat_policy"],
             shape.micro_batch_per_chip, shape.micro_batches)
    start = time.perf_counter()
    try:
        with axis_rules(mesh_cfg.rules):  # the config's logical-axis rules, as the training loop uses them
            executable, step_flops = compile_step(cfg, mesh)
    except Exception as e:  # noqa: BLE001 - only out-of-memory is an answer; anything else propagates
        if not C.is_out_of_memory(e):
            raise
        report = C.from_out_of_memory(e, compile_seconds=time.perf_counter() - start, **fields)
        log.info("%s", report.summary())
        return report
    fields["compile_seconds"] = time.perf_counter() - start
    fields["flops_per_chip"] = step_flops / topology.num_chips
    if save_executable:
        fields["executable_path"] = serialize_executable(executable, save_executable)
    report = C.from_executable(executable, **fields)
    log.info("%s", report.summary())
    return report


def _model_dict(cfg: ml_collections.ConfigDict) -> dict:
    return cfg.model.to_dict()


def serialize_executable(executable, path: str) -> str:
    """Write the compiled executable (jax.experimental.serialize_executable) atomically; return the path."""

    payload, in_tree, out_tree = serialize(executable)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".plan-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump({"executable": payload, "in_tree": in_tree, "out_tree": out_tree}, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return os.path.abspath(path)


def sweep(config: ml_collections.ConfigDict, topology: TpuTopology | str, *,
          remats: Iterable[str] = REMAT_ORDER, micro_batches: Optional[Iterable[int]] = None,
          stop_early: bool = True) -> list[C.CompileReport]:
    """Compile every (remat, micro-batch) pair, cheapest remat first.

    With `stop_early`, pairs that cannot win are skipped: once a remat policy fits at a micro-batch, more
    recompute at that micro-batch is not tried, and a micro-batch that does not fit under `full` remat
    rules out larger ones.
    """
    topology = parse_topology(topology) if isinstance(topology, str) else topology
    devices = fake_devices(topology)
    remats = [r for r in REMAT_ORDER if r in set(remats)]
    sizes = sorted(micro_batches) if micro_batches is not None else micro_batch_choices(config, topology)
    if not sizes:
        raise ConfigError(f"no per-chip micro-batch splits train.global_batch_size="
                          f"{config.train.global_batch_size} over the data-parallel chips of {topology.name}")
    reports = []
    for size in sizes:
        fitted = False
        for remat in remats:
            report = plan_step(config, topology, remat=remat, micro_batch=size, devices=devices)
            reports.append(report)
            if report.fits and stop_early:
                fitted = True
                break
        if stop_early and not fitted:
            break  # nothing fits at this size, larger micro-batches need more memory still
    return reports


def choose(reports: Iterable[C.CompileReport]) -> Optional[C.CompileReport]:
    """The fastest plan that fits: fewest FLOPs per chip per step (least recompute), then the largest
    micro-batch (fewest accumulation steps, so fewest parameter all-gathers), then the least memory."""
    fitting = [r for r in reports if r.fits]
    if not fitting:
        return None
    return min(fitting, key=lambda r: (round(r.flops_per_chip, -6), -r.micro_batch_per_chip, r.total_bytes))
