"""Ahead-of-time compilation of the real train step on abstract inputs (no parameters allocated).

`lower_train_step(cfg, devices)` builds the mesh over any device list (real devices, or fake TPU devices from
`jax.experimental.topologies.get_topology_desc`), lays out the state as ShapeDtypeStructs carrying
shardings and compiles the step the loop would run. `memory_analysis()` of the result says whether it fits
(an OOM surfaces as RESOURCE_EXHAUSTED, as on the pod) and `cost_analysis()` gives its FLOPs; the planner
(mellama-plan) sweeps meshes and remat policies with it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from mellama_jax import parallel
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.loop import check_batch_divisibility, make_trainable
from mellama_jax.train.optimizer import make_optimizer
from mellama_jax.train.state import StateLayout, state_layout
from mellama_jax.train.step import abstract_batch, compile_train_step, jit_train_step


@dataclasses.dataclass
class CompiledStep:
    compiled: Any  # jax Compiled: .memory_analysis(), .cost_analysis(), .as_text()
    layout: StateLayout  # abstract state (ShapeDtypeStructs with shardings)
    batch: dict  # abstract batch
    mesh: Any


def lower_train_step(cfg: TrainConfig, devices: Sequence | None = None) -> CompiledStep:
    with parallel.axis_rules(cfg.mesh.rules):
        return _lower_train_step(cfg, devices)


def _lower_train_step(cfg: TrainConfig, devices: Sequence | None) -> CompiledStep:
    mesh = parallel.make_mesh(cfg.mesh, devices)
    check_batch_divisibility(cfg, mesh)
    trainable = make_trainable(cfg)
    tx, schedule = make_optimizer(cfg.optim, cfg.train.steps, trainable.abstract_trainable())
    layout = state_layout(trainable, tx, mesh)
    compiled = compile_train_step(trainable, tx, schedule, layout, mesh, global_batch_size=cfg.train.global_batch_size,
                                  seq_len=cfg.train.seq_len, micro_batches=cfg.train.micro_batches)
    batch = abstract_batch(mesh, cfg.train.global_batch_size, cfg.train.seq_len, train=True)
    return CompiledStep(compiled, layout, batch, mesh)


def abstract_train_inputs(config, mesh) -> tuple[Any, tuple]:
    """(jitted train step, (abstract state, abstract batch)) for `mesh`: exactly the step the loop runs, not
    yet traced, so callers (the planner) can trace it, count its FLOPs and `.lower(*args).compile()` it.
    `config` is a training ConfigDict or a TrainConfig."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_config_dict(config)
    with parallel.axis_rules(cfg.mesh.rules):
        return _abstract_train_inputs(cfg, mesh)


def _abstract_train_inputs(cfg: TrainConfig, mesh) -> tuple[Any, tuple]:
    check_batch_divisibility(cfg, mesh)
    trainable = make_trainable(cfg)
    tx, schedule = make_optimizer(cfg.optim, cfg.train.steps, trainable.abstract_trainable())
    layout = state_layout(trainable, tx, mesh)
    jitted = jit_train_step(trainable, tx, schedule, layout, mesh, micro_batches=cfg.train.micro_batches)
    return jitted, (layout.abstract, abstract_batch(mesh, cfg.train.global_batch_size, cfg.train.seq_len, train=True))
