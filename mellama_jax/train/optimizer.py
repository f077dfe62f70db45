"""AdamW with a weight-decay mask, warmup + cosine schedule and global-norm clipping (optax).

The schedule is derived from a warmup *ratio* of the total steps, as the Me-LLaMA recipe states it
(Me-LLaMA, docs/sources.md: β 0.9/0.95, lr 8e-6, wd 1e-5, warmup 5%, cosine). Conventions match transformers'
`get_cosine_schedule_with_warmup` and torch's AdamW (decoupled decay scaled by the learning rate), which the
tests use as references.
"""
from __future__ import annotations

import optax

from mellama_jax.train.config import OptimConfig


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """lr(step): linear warmup from 0 over round(warmup_ratio * total) steps, then decay to min_lr_ratio."""
    warmup = int(round(cfg.warmup_ratio * total_steps))
    peak = cfg.learning_rate
    end = peak * cfg.min_lr_ratio
    decay_steps = max(total_steps - warmup, 1)
    if cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.min_lr_ratio)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    else:
        after = optax.constant_schedule(peak)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params: dict, cfg: OptimConfig) -> dict:
    """True where weight decay applies: every kernel; norms and the input embedding only if configured."""
    def mask(tree, path=()):
        if isinstance(tree, dict):
            return {k: mask(v, path + (k,)) for k, v in tree.items()}
        if any(p.endswith("norm") for p in path):
            return cfg.decay_norms
        if path[:1] == ("embed",):
            return cfg.decay_embeddings
        return True
    return mask(params)


def make_optimizer(cfg: OptimConfig, total_steps: int, params_structure: dict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain and its schedule. `params_structure` only provides the tree for the decay mask."""
    schedule = learning_rate_schedule(cfg, total_steps)
    parts = []
    if cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             mask=decay_mask(params_structure, cfg)))
    return optax.chain(*parts), schedule
