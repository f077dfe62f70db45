"""Token-weighted next-token cross-entropy over packed rows (the batch contract in docs/architecture.md).

The logit at position t predicts tokens[t+1]; it counts only where loss_mask[t+1] == 1 and
segment_ids[t+1] == segment_ids[t] != 0, so no loss crosses a document boundary or touches padding.
Functions return the *sum* of losses and the number of counted tokens: gradient accumulation and data
parallelism then add sums and divide once, which weights every token equally however the batch is split.

Layout for speed: the [B, T, V] logits are the largest activation of a step (32k vocab), so the loss never
slices, gathers from or copies them. Targets and weights are shifted instead (position T-1 gets weight 0),
and the gradient is written by hand (`token_losses`' custom VJP): one elementwise pass softmax(z) - one-hot(t)
over the logits, instead of autodiff's pad + scatter into a zeroed [B, T, V] buffer and a separate select.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def shifted_targets(batch: dict) -> tuple[jax.Array, jax.Array]:
    """(targets int32 [B, T], weights float32 [B, T]): position t predicts tokens[t+1] with weight 1 where that
    prediction is counted; the last position predicts nothing (weight 0, target 0)."""
    tokens, seg, mask = batch["tokens"], batch["segment_ids"], batch["loss_mask"]
    same_doc = (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] != 0)
    weights = (same_doc & (mask[:, 1:] != 0)).astype(jnp.float32)
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 1)))
    return pad(tokens[:, 1:].astype(jnp.int32)), pad(weights)


@jax.custom_vjp
def token_losses(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log softmax(logits)[target] per position: float32 logits [B, T, V], int32 targets [B, T] -> [B, T]."""
    return _token_losses_fwd(logits, targets)[0]


def _token_losses_fwd(logits, targets):
    # logsumexp(z) - z[target]; both are single reductions over the vocab. The target logit is a masked sum
    # (not a gather), which partitions like the logits when the vocab is sharded over `tensor`.
    peak = jnp.max(logits, axis=-1)
    lse = peak + jnp.log(jnp.sum(jnp.exp(logits - peak[..., None]), axis=-1))
    target_logit = jnp.sum(jnp.where(_is_target(logits, targets), logits, 0.0), axis=-1)
    return lse - target_logit, (logits, lse, targets)


def _token_losses_bwd(residuals, g):
    # d/dz (lse - z[t]) = softmax(z) - onehot(t): one elementwise pass over the logits, written once.
    logits, lse, targets = residuals
    dlogits = (jnp.exp(logits - lse[..., None]) - _is_target(logits, targets)) * g[..., None]
    return dlogits, None


def _is_target(logits, targets):
    return jnp.arange(logits.shape[-1], dtype=jnp.int32) == targets[..., None]


token_losses.defvjp(_token_losses_fwd, _token_losses_bwd)


def cross_entropy_sum(logits: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(sum of per-token losses, number of counted tokens) for float logits [B, T, V]."""
    targets, weights = shifted_targets(batch)
    losses = token_losses(logits.astype(jnp.float32), targets) * weights  # astype: no-op for float32 logits
    return jnp.sum(losses), jnp.sum(weights)


def cross_entropy_rows(logits: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(summed loss per row [B], counted tokens per row [B]): for losses split by the rows' mixture component."""
    targets, weights = shifted_targets(batch)
    losses = token_losses(logits.astype(jnp.float32), targets) * weights
    return jnp.sum(losses, axis=1), jnp.sum(weights, axis=1)
