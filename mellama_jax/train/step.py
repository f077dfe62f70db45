"""The jitted train step: gradient accumulation over micro-batches, clipping, AdamW, metrics.

`make_train_step` returns a plain function (state, batch) -> (state, metrics); `compile_train_step`
jits it with explicit in/out shardings and donation of the state, lowers it once on abstract inputs
(ShapeDtypeStructs carrying shardings, see aot.py) and returns the compiled executable.

Micro-batching: row r of the global batch goes to micro-batch r % M. With the batch sharded over the
data-parallel axes in contiguous blocks, each micro-batch keeps the same sharding and no data moves.
Gradients of the *summed* token loss are accumulated in fp32 (sharded like the params) and divided once
by the total token count, so M micro-batches give the same update as one step on the whole batch.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mellama_jax import parallel
from mellama_jax.data.mixture import ROW_DOMAIN
from mellama_jax.data.packing import BATCH_KEYS
from mellama_jax.train.loss import cross_entropy_rows, cross_entropy_sum
from mellama_jax.train.state import StateLayout, Trainable, TrainState

# Training batches also carry each row's mixture component (int32 [B]; every packed row holds one component's
# documents, data/mixture.py), for the per-component training loss; up to MAX_DOMAINS components are told apart.
TRAIN_KEYS = BATCH_KEYS + (ROW_DOMAIN,)
MAX_DOMAINS = 16


def loss_and_count(trainable: Trainable, params, frozen, batch: dict, rngs: dict | None = None
                   ) -> tuple[jax.Array, jax.Array]:
    """(summed token loss, counted tokens) of the model on one batch; `rngs` (e.g. {"dropout": key}) turns
    on the model's stochastic layers (LoRA dropout), None evaluates deterministically."""
    logits, _ = trainable.module().apply(trainable.variables(params, frozen), batch["tokens"], batch["positions"],
                                         batch["segment_ids"], deterministic=rngs is None, rngs=rngs)
    return cross_entropy_sum(logits, batch)


def loss_and_domains(trainable: Trainable, params, frozen, batch: dict, rngs: dict | None = None):
    """(summed token loss, (counted tokens, loss sum per component [MAX_DOMAINS], tokens per component))."""
    logits, _ = trainable.module().apply(trainable.variables(params, frozen), batch["tokens"], batch["positions"],
                                         batch["segment_ids"], deterministic=rngs is None, rngs=rngs)
    row_loss, row_count = cross_entropy_rows(logits, batch)
    onehot = jax.nn.one_hot(batch[ROW_DOMAIN], MAX_DOMAINS, dtype=jnp.float32)  # [B, D]; a row of -1 counts nowhere
    return jnp.sum(row_loss), (jnp.sum(row_count), row_loss @ onehot, row_count @ onehot)


def step_rngs(trainable: Trainable, step: jax.Array, micro: jax.Array | int = 0) -> dict | None:
    """Flax rngs of one (micro-)step: the trainable's `apply_rngs(step)` (a function of the step only, so a
    resumed run draws what an uninterrupted one would), folded with the micro-batch index."""
    apply_rngs = getattr(trainable, "apply_rngs", None)
    rngs = apply_rngs(step) if apply_rngs is not None else None
    if rngs is None:
        return None
    return {name: jax.random.fold_in(key, micro) for name, key in rngs.items()}


def split_micro_batches(batch: dict, micro_batches: int, mesh: Mesh | None) -> dict:
    """[B, T] -> [M, B/M, T] with micro-batch m holding rows m, M + m, 2M + m, ..."""
    def split(x):
        b = x.shape[0]
        y = jnp.swapaxes(x.reshape((b // micro_batches, micro_batches) + x.shape[1:]), 0, 1)
        if mesh is not None:
            spec = parallel.batch_sharding(mesh, x.ndim).spec
            y = jax.lax.with_sharding_constraint(y, NamedSharding(mesh, PartitionSpec(None, *spec)))
        return y
    return {k: split(v) for k, v in batch.items()}


def make_train_step(trainable: Trainable, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    micro_batches: int = 1, mesh: Mesh | None = None,
                    param_shardings=None) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    grad_fn = jax.value_and_grad(lambda p, f, b, r: loss_and_domains(trainable, p, f, b, r), has_aux=True)

    def constrain_like_params(tree):
        if param_shardings is None:
            return tree
        return jax.tree.map(jax.lax.with_sharding_constraint, tree, param_shardings)

    def step(state: TrainState, batch: dict):
        if micro_batches == 1:
            (loss_sum, (count, dom_loss, dom_count)), grads = grad_fn(state.params, state.frozen, batch,
                                                                      step_rngs(trainable, state.step))
            grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        else:
            def accumulate(carry, indexed):
                acc, sums = carry
                index, micro = indexed
                (loss_sum, aux), g = grad_fn(state.params, state.frozen, micro,
                                             step_rngs(trainable, state.step, index))
                acc = jax.tree.map(lambda a, x: a + x.astype(jnp.float32), acc, g)
                return (constrain_like_params(acc), jax.tree.map(jnp.add, sums, (loss_sum,) + aux)), None

            zeros = constrain_like_params(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params))
            sums = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros(MAX_DOMAINS, jnp.float32),
                    jnp.zeros(MAX_DOMAINS, jnp.float32))
            (grads, (loss_sum, count, dom_loss, dom_count)), _ = jax.lax.scan(
                accumulate, (zeros, sums), (jnp.arange(micro_batches), split_micro_batches(batch, micro_batches, mesh)))
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        loss = loss_sum / denom
        metrics = {"loss": loss, "perplexity": jnp.exp(loss), "grad_norm": grad_norm,
                   "learning_rate": schedule(state.step), "loss_tokens": count,
                   "domain_loss_sum": dom_loss, "domain_tokens": dom_count}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def row_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a per-row [B] field: the rows' axes of the batch sharding."""
    return parallel.batch_sharding(mesh, 1)


def abstract_batch(mesh: Mesh, global_batch_size: int, seq_len: int, *, train: bool = False) -> dict:
    """Abstract [B, T] fields (the eval step's batch); `train`: with the training batch's per-row domain."""
    sharding = parallel.batch_sharding(mesh)
    out = {k: jax.ShapeDtypeStruct((global_batch_size, seq_len), jnp.int32, sharding=sharding) for k in BATCH_KEYS}
    if train:
        out[ROW_DOMAIN] = jax.ShapeDtypeStruct((global_batch_size,), jnp.int32, sharding=row_sharding(mesh))
    return out


def jit_train_step(trainable: Trainable, tx: optax.GradientTransformation, schedule: optax.Schedule,
                   layout: StateLayout, mesh: Mesh, *, micro_batches: int = 1):
    """The train step under jax.jit with explicit in/out shardings and the state donated (not yet lowered)."""
    fn = make_train_step(trainable, tx, schedule, micro_batches=micro_batches, mesh=mesh,
                         param_shardings=layout.shardings.params)
    batch_sh = parallel.batch_sharding(mesh)
    return jax.jit(fn, in_shardings=(layout.shardings, {**{k: batch_sh for k in BATCH_KEYS},
                                                         ROW_DOMAIN: row_sharding(mesh)}),
                   out_shardings=(layout.shardings, parallel.replicated(mesh)), donate_argnums=(0,))


def compile_train_step(trainable: Trainable, tx: optax.GradientTransformation, schedule: optax.Schedule,
                       layout: StateLayout, mesh: Mesh, *, global_batch_size: int, seq_len: int,
                       micro_batches: int = 1):
    """jit with explicit shardings, state donated; lowered and compiled once on abstract inputs."""
    jitted = jit_train_step(trainable, tx, schedule, layout, mesh, micro_batches=micro_batches)
    with parallel.activation_sharding(mesh):
        lowered = jitted.lower(layout.abstract, abstract_batch(mesh, global_batch_size, seq_len, train=True))
    return lowered.compile()


def compile_eval_step(trainable: Trainable, layout: StateLayout, mesh: Mesh, *, batch_size: int, seq_len: int):
    """(params, frozen, batch) -> (summed loss, counted tokens), compiled once."""
    fn = lambda params, frozen, batch: loss_and_count(trainable, params, frozen, batch)
    batch_sh = parallel.batch_sharding(mesh)
    jitted = jax.jit(fn, in_shardings=(layout.shardings.params, layout.shardings.frozen,
                                       {k: batch_sh for k in BATCH_KEYS}),
                     out_shardings=parallel.replicated(mesh))
    with parallel.activation_sharding(mesh):
        lowered = jitted.lower(layout.abstract.params, layout.abstract.frozen,
                               abstract_batch(mesh, batch_size, seq_len))
    return lowered.compile()
