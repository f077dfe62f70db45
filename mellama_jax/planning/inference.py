"""Ahead-of-time inference plan: will jitted generation of a model fit on a topology, with which batch, how fast.

`plan_generate(model_cfg, topology, batch=, prompt_len=, new_tokens=)` compiles the real decode function
(generate/decode.py: prefill + `lax.while_loop` over new tokens with the KV cache) for fake TPU devices of the
topology (libtpu, no TPU needed), with abstract per-layer parameters carrying their shardings, and reports per
chip: the weights (the compiled arguments), the KV cache (its exact size from the cache shape), the compiler's
temporaries, the largest batch that fits (estimated from the compile's per-row cost, then compiled to check)
and a roofline estimate of the speed:

* decode step time = max(bytes read per chip / HBM bandwidth, FLOPs per chip / peak FLOP/s), where a step reads
  the chip's weight shards and its share of the KV cache (the cache filled to its mean length over the run)
  and does 2 x parameters FLOPs per row; decoding is memory-bound at serving batch sizes;
* prefill time = 2 x parameters x prompt tokens FLOPs (plus attention) over the chips at peak;
* tokens/s = batch x new tokens / (prefill + new tokens x step time) over the whole topology.

Roofline numbers are upper bounds (no collective or kernel inefficiency); the memory figures are the
compiler's. The default mesh splits heads over the largest tensor axis that divides both the chip count and
the model's attention heads (latency; weights are not replicated more than needed) and the rest over data.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from mellama_jax.api import checked_param_shardings
from mellama_jax.config import ModelConfig
from mellama_jax.generate.batching import bucket_batch, bucket_prompt_length
from mellama_jax.generate.decode import DecodeSpec, decode_fn
from mellama_jax.model import params as P
from mellama_jax.parallel import MeshConfig, axis_rules, batch_sharding, data_parallel_size, make_mesh, replicated
from mellama_jax.planning import compiled as C
from mellama_jax.planning.topology import TpuTopology, fake_devices, parse_topology

MAX_BATCH = 4096  # the search stops here (a tiny model on a big chip would otherwise compile absurd batches)
MAX_CHECKS = 3  # compiles spent confirming the extrapolated largest batch


@dataclasses.dataclass(frozen=True)
class InferencePlan:
    topology: str
    mesh: dict
    batch: int  # rows decoded together (rounded up to the decode function's batch bucket)
    prompt_len: int  # padded prompt length (the prompt bucket)
    new_tokens: int
    hbm_bytes: int
    fits: bool
    weight_bytes: int = 0  # per chip: the compiled function's arguments (weights and the small inputs)
    cache_bytes: int = 0  # per chip: the KV cache of the batch
    temp_bytes: int = 0  # per chip: the compiler's temporaries (the cache lives here)
    total_bytes: int = 0  # per chip peak
    max_batch: int = 0  # the largest batch that fits (0: not even the smallest)
    max_batch_compiled: bool = False  # False: max_batch is the extrapolation only (no check compile asked for)
    decode_tokens_per_s: float = 0.0  # roofline, whole topology, during the decode loop
    tokens_per_s: float = 0.0  # roofline, whole topology, new tokens over prefill + decode
    seconds_per_batch: float = 0.0  # roofline: prefill + decode of one batch
    compile_seconds: float = 0.0
    error: str = ""

    def summary(self) -> str:
        gib = lambda b: f"{b / 1024 ** 3:.2f} GiB"
        mesh = " ".join(f"{k}={v}" for k, v in self.mesh.items())
        head = (f"{self.topology} mesh {mesh}: generate batch {self.batch}, prompt {self.prompt_len} + "
                f"{self.new_tokens} new tokens: ")
        if not self.fits:
            return head + f"does not fit ({gib(self.hbm_bytes)} HBM per chip): {self.error}"
        return (head + f"fits, {gib(self.total_bytes)} of {gib(self.hbm_bytes)} per chip (weights "
                f"{gib(self.weight_bytes)}, KV cache {gib(self.cache_bytes)}, temporaries {gib(self.temp_bytes)}); "
                f"largest batch that fits {self.max_batch}"
                f"{'' if self.max_batch_compiled else ' (extrapolated, not compiled)'}; roofline {self.decode_tokens_per_s:,.0f} tokens/s "
                f"decoding, {self.tokens_per_s:,.0f} tokens/s with prefill ({self.seconds_per_batch:.2f} s per batch)")


def default_mesh(cfg: ModelConfig, num_chips: int) -> MeshConfig:
    """Heads over the widest tensor axis that divides the chips and the heads; the rest of the chips on data."""
    tensor = max(d for d in range(1, num_chips + 1) if num_chips % d == 0 and cfg.num_heads % d == 0)
    return MeshConfig(data=num_chips // tensor, fsdp=1, tensor=tensor)


def cache_bytes_per_chip(cfg: ModelConfig, mesh, batch: int, length: int) -> int:
    """K and V of every layer for `batch` rows of `length` slots, as rules.CACHE_AXES splits them."""
    rows = batch // data_parallel_size(mesh) if batch % data_parallel_size(mesh) == 0 else batch
    tensor = mesh.shape.get("tensor", 1)
    kv_heads = cfg.num_kv_heads // tensor if cfg.num_kv_heads % tensor == 0 else cfg.num_kv_heads
    return 2 * cfg.num_layers * rows * length * kv_heads * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize


def _compile(cfg: ModelConfig, mesh, batch: int, prompt_len: int, new_tokens: int):
    spec = DecodeSpec(cfg=cfg, batch=batch, prompt_len=prompt_len, max_new_tokens=new_tokens, scanned_params=False)
    params = P.abstract_params(cfg, scanned=False, shardings=checked_param_shardings(cfg, mesh))
    rows, one = batch_sharding(mesh), replicated(mesh)
    key = jax.eval_shape(lambda: jax.random.key(0))
    args = (params, None,
            jax.ShapeDtypeStruct((batch, prompt_len), jnp.int32, sharding=rows),
            jax.ShapeDtypeStruct((batch, prompt_len), jnp.int32, sharding=rows),
            jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=one),
            jax.ShapeDtypeStruct((), jnp.int32, sharding=one),
            jax.ShapeDtypeStruct((1, 1), jnp.int32, sharding=one),
            jax.ShapeDtypeStruct((1,), jnp.int32, sharding=one))
    return decode_fn(spec, mesh).lower(*args).compile()


def _memory(cfg, mesh, batch, prompt_len, new_tokens, hbm_bytes) -> C.CompileReport:
    """The compiler's memory report of generation at `batch` (an out-of-memory compile: fits=False)."""
    fields = dict(topology="", remat_policy="", micro_batch_per_chip=batch, micro_batches=1, hbm_bytes=hbm_bytes)
    try:
        return C.from_executable(_compile(cfg, mesh, batch, prompt_len, new_tokens), **fields)
    except Exception as e:  # noqa: BLE001 - only out-of-memory is an answer; anything else propagates
        if not C.is_out_of_memory(e):
            raise
        return C.from_out_of_memory(e, **fields)


def roofline(cfg: ModelConfig, topology: TpuTopology, mesh, batch: int, prompt_len: int, new_tokens: int,
             weight_bytes: int) -> tuple[float, float, float]:
    """(decode tokens/s, tokens/s with prefill, seconds per batch) over the whole topology (module docstring)."""
    chip, chips = topology.chip, topology.num_chips
    n_params = P.count_params(cfg)
    replicas = chips // mesh.shape.get("tensor", 1)  # chips holding distinct rows (data x fsdp)
    rows_per_chip = max(batch / replicas, 1)
    mean_cache = cache_bytes_per_chip(cfg, mesh, batch, prompt_len + new_tokens // 2)
    step_bytes = weight_bytes + mean_cache
    step_flops = 2 * n_params * rows_per_chip / mesh.shape.get("tensor", 1)
    step = max(step_bytes / chip.hbm_bytes_per_s, step_flops / chip.peak_bf16_flops)
    prefill = P.flops_per_token(cfg, prompt_len) / 3 * batch * prompt_len / (chips * chip.peak_bf16_flops)
    seconds = prefill + new_tokens * step
    return batch / step, batch * new_tokens / seconds, seconds


def plan_generate(cfg: ModelConfig, topology: TpuTopology | str, *, batch: int, prompt_len: int, new_tokens: int,
                  dtype: str = "bfloat16", mesh_cfg: Optional[MeshConfig] = None,
                  devices: Optional[Sequence] = None, max_batch_checks: int = MAX_CHECKS) -> InferencePlan:
    """Compile generation for `topology` and report memory, the largest batch that fits and its speed.

    The largest batch is extrapolated from this compile; up to `max_batch_checks` more compiles confirm it
    (0: one compile in all, the extrapolation is reported as such)."""
    topology = parse_topology(topology) if isinstance(topology, str) else topology
    cfg = cfg.replace(scan_layers=False, dtype=dtype, param_dtype=dtype)
    mesh_cfg = mesh_cfg or default_mesh(cfg, topology.num_chips)
    devices = list(devices) if devices is not None else fake_devices(topology)
    with axis_rules(mesh_cfg.rules):
        mesh = make_mesh(mesh_cfg, devices=devices)
        dp = data_parallel_size(mesh)
        batch, prompt_len = bucket_batch(batch, dp), bucket_prompt_length(prompt_len)
        hbm = topology.chip.hbm_bytes
        fields = dict(topology=topology.name, mesh=dict(mesh.shape), batch=batch, prompt_len=prompt_len,
                      new_tokens=new_tokens, hbm_bytes=hbm)
        start = time.perf_counter()
        report = _memory(cfg, mesh, batch, prompt_len, new_tokens, hbm)
        fields["compile_seconds"] = time.perf_counter() - start
        if not report.fits:
            return InferencePlan(fits=False, total_bytes=report.total_bytes, error=report.error, **fields)
        weights = report.argument_bytes
        max_batch, compiled = _largest_batch(cfg, mesh, report, batch, prompt_len, new_tokens, hbm,
                                             checks=max_batch_checks)
        decode_tps, tps, seconds = roofline(cfg, topology, mesh, batch, prompt_len, new_tokens, weights)
        return InferencePlan(fits=True, weight_bytes=weights,
                             cache_bytes=cache_bytes_per_chip(cfg, mesh, batch, prompt_len + new_tokens),
                             temp_bytes=report.temp_bytes, total_bytes=report.total_bytes, max_batch=max_batch,
                             max_batch_compiled=compiled, decode_tokens_per_s=decode_tps, tokens_per_s=tps, seconds_per_batch=seconds, **fields)


def _largest_batch(cfg, mesh, report: C.CompileReport, batch: int, prompt_len: int, new_tokens: int,
                   hbm: int, *, checks: int) -> tuple[int, bool]:
    """Memory grows with the batch by the cache and the per-row temporaries: extrapolate from the compile at
    `batch`, round down to a batch bucket, and compile that to check (halving until it fits, at most `checks`
    compiles). Returns (batch, whether a compile confirmed it)."""
    fixed = report.argument_bytes + report.code_bytes
    per_row = max((report.total_bytes - fixed) / batch, 1)
    estimate = min(int((hbm - fixed) / per_row), MAX_BATCH)
    candidate = batch
    while bucket_batch(candidate * 2, data_parallel_size(mesh)) <= estimate:
        candidate = bucket_batch(candidate * 2, data_parallel_size(mesh))
    if checks == 0:
        return candidate, candidate == batch
    for _ in range(checks):
        if candidate <= batch:
            break
        if _memory(cfg, mesh, candidate, prompt_len, new_tokens, hbm).fits:
            return candidate, True
        candidate //= 2
    return batch, True


def larger_topologies(topology: TpuTopology, doublings: int = 3) -> list[str]:
    """The same generation's single slices with 2x, 4x, ... the chips: where to look when a plan does not fit."""
    prefix, count = topology.accelerator_type.rsplit("-", 1)  # Cloud's name of one slice: v5p-16, v5litepod-8
    return [parse_topology(f"{prefix}-{int(count) * topology.num_slices * 2 ** i}").name
            for i in range(1, doublings + 1)]


def smallest_fitting(cfg: ModelConfig, topologies: Sequence[str], **kwargs) -> Optional[InferencePlan]:
    """The plan on the first topology (smallest first) that fits, or None."""
    for name in topologies:
        plan = plan_generate(cfg, name, **kwargs)
        if plan.fits:
            return plan
    return None


__all__ = ["InferencePlan", "default_mesh", "plan_generate", "roofline", "smallest_fitting", "cache_bytes_per_chip",
           "larger_topologies"]
