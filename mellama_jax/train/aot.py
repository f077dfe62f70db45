"""The train step for ahead-of-time planning, on abstract inputs (no parameters allocated).

`abstract_train_inputs(config, mesh)` lays out the state as ShapeDtypeStructs carrying shardings over any mesh
(real devices, or fake TPU devices from `jax.experimental.topologies.get_topology_desc`) and returns the jitted
step the loop would run with its abstract inputs; the planner (planning/) lowers and compiles it:
`memory_analysis()` says whether it fits (an OOM surfaces as RESOURCE_EXHAUSTED, as on the pod) and
`cost_analysis()` gives its FLOPs.
"""
from __future__ import annotations

from typing import Any

from mellama_jax import parallel
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.loop import check_batch_divisibility, make_trainable
from mellama_jax.train.optimizer import make_optimizer
from mellama_jax.train.state import state_layout
from mellama_jax.train.step import abstract_batch, jit_train_step


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
