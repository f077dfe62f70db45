"""Rematerialisation policies by name (ModelConfig.remat_policy), named and defined as MaxText names them.

The decoder block tags intermediate values with `checkpoint_name` (llama.py): query_proj / key_proj /
value_proj (after RoPE), attention_out (the attention context, before the output projection), out_proj,
mlp_gate / mlp_up (MaxText's mlpwi_0 / mlpwi_1) and mlp_out (mlpwo). A policy says which of them are kept
for the backward pass; everything else is recomputed. Memory falls from `none` to `full`:

  none                     no remat: every intermediate is kept
  minimal_with_context     every projection output + the attention context
  minimal                  every projection output (q/k/v, out_proj, the MLP's three)
  save_dots                every matmul without batch dimensions (jax's checkpoint_dots_with_no_batch_dims)
  save_dot_except_mlpwi    q/k/v, out_proj and the MLP output (not its two wide inputs)
  save_dot_except_mlp      q/k/v and out_proj
  save_qkv_proj            q/k/v
  save_out_proj            out_proj
  full                     nothing: the whole block is recomputed
  *_offloaded              (minimal, minimal_with_context, qkv_proj) the same tensors, kept in host memory
                           (pinned_host) instead of HBM: device memory of `full`, recompute of the saved set

The AOT planner (mellama-plan --sweep) tries them to find the fastest that fits.
"""
from __future__ import annotations

import jax

# Names the block tags (see llama.py).
QKV_NAMES = ("query_proj", "key_proj", "value_proj")
CONTEXT_NAMES = ("attention_out",)
OUT_PROJ_NAMES = ("out_proj",)
MLP_IN_NAMES = ("mlp_gate", "mlp_up")
MLP_OUT_NAMES = ("mlp_out",)

SAVED_NAMES: dict[str, tuple[str, ...]] = {
    "minimal_with_context": QKV_NAMES + CONTEXT_NAMES + OUT_PROJ_NAMES + MLP_IN_NAMES + MLP_OUT_NAMES,
    "minimal": QKV_NAMES + OUT_PROJ_NAMES + MLP_IN_NAMES + MLP_OUT_NAMES,
    "save_dot_except_mlpwi": QKV_NAMES + OUT_PROJ_NAMES + MLP_OUT_NAMES,
    "save_dot_except_mlp": QKV_NAMES + OUT_PROJ_NAMES,
    "save_qkv_proj": QKV_NAMES,
    "save_out_proj": OUT_PROJ_NAMES,
}
# Offloaded variants: which saved set goes to host memory.
OFFLOADED: dict[str, str] = {"minimal_offloaded": "minimal",
                             "minimal_with_context_offloaded": "minimal_with_context",
                             "qkv_proj_offloaded": "save_qkv_proj"}
HOST_MEMORY = "pinned_host"


def policy(name: str):
    """Return (use_remat, jax checkpoint policy or None)."""
    cp = jax.checkpoint_policies
    if name == "none":
        return False, None
    if name == "full":
        return True, cp.nothing_saveable
    if name == "save_dots":
        return True, cp.checkpoint_dots_with_no_batch_dims
    if name in SAVED_NAMES:
        return True, cp.save_only_these_names(*SAVED_NAMES[name])
    if name in OFFLOADED:
        return True, cp.save_and_offload_only_these_names(
            names_which_can_be_saved=[], names_which_can_be_offloaded=list(SAVED_NAMES[OFFLOADED[name]]),
            offload_src="device", offload_dst=HOST_MEMORY)
    raise ValueError(f"unknown remat policy {name!r}")
