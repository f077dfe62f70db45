"""Train-step throughput on CPU: mellama_jax vs transformers + torch, with MFU against a measured peak.

Bench model (docs/sources.md): config.preset("bench_56m") — hidden 512, 8 layers, 8 heads / 4 kv heads,
vocab 32000 (about 56M parameters) — fp32, AdamW, batch 4 x 256. In one process it measures
  1. ours: the engine's compiled train step (build_engine: grads + clipping + AdamW + metrics, state donated),
  2. torch: transformers' LlamaForCausalLM of the same config (sdpa attention, all cores) trained with
     torch.optim.AdamW + clip_grad_norm_, once per --torch_adamw variant (default: torch's own choice for
     CPU tensors, the single-tensor loop; and fused=True, torch's fused CPU kernel); the ratio is taken
     against the fastest of them,
  3. the peak: a jitted float32 2048^3 matmul, timed over a window of as many FLOPs as one train step,
and prints tokens/s, MFU (model FLOPs per token x tokens/s / peak) and the ratio ours / torch. Last, what
bounds the step: the step's projection matmuls (forward and both backward products) timed as bare
matmuls in XLA and in torch.

Measuring on a shared machine. The three are interleaved — every round runs one step of ours, one of
torch and one peak window, in a rotating order — and each reports its best round, so all three are seen
under the same (best) machine conditions; medians are printed too. Each is also timed in process CPU
seconds (all threads), which other processes' load distorts much less than wall time: `cpu-MFU` is
model FLOPs per CPU-second over peak FLOPs per CPU-second.

    python bench/train_step.py [--rounds 6] [--no_scan] [--remat none] [--skip_torch] [--torch_adamw default,fused]
"""
from __future__ import annotations

import os

# One CPU device, all cores: the fake-device flag that tests use would split the machine.
os.environ["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                   if not f.startswith("--xla_force_host_platform_device_count"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# torch's OpenMP workers otherwise keep spinning for a while after each torch call and take the cores from
# the JAX call timed next (seen here: JAX decode at batch 1 halved). Passive waiting costs torch nothing
# measurable here; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mellama_jax.data.synthetic import SyntheticSource  # noqa: E402
from mellama_jax.model import params as P  # noqa: E402
from mellama_jax.train.batches import global_batch  # noqa: E402
from mellama_jax.train.config import TrainConfig, default_config, model_fields  # noqa: E402
from mellama_jax.train.loop import build_engine  # noqa: E402
from mellama_jax.train.state import init_state  # noqa: E402

BATCH, SEQ = 4, 256
PEAK_N = 2048


def bench_config(scan: bool, remat: str) -> TrainConfig:
    c = default_config()
    c.model = model_fields("bench_56m", dtype="float32", scan_layers=scan, remat_policy=remat)
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
    c.train.seq_len, c.train.global_batch_size, c.train.steps = SEQ, BATCH, 1000
    c.optim.learning_rate, c.optim.warmup_ratio = 1e-4, 0.0
    return TrainConfig.from_config_dict(c)


@dataclasses.dataclass
class Timings:
    """Wall and process-CPU seconds of each timed round of one contender."""
    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)

    def time(self, fn: Callable[[], None]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)


def ours(cfg: TrainConfig) -> tuple[Callable[[], None], float]:
    """(one train step, blocking; compile seconds) for the engine's compiled step."""
    start = time.perf_counter()
    engine = build_engine(cfg)
    compile_s = time.perf_counter() - start
    state = init_state(engine.trainable, engine.tx, engine.layout, jax.random.key(0))
    src = SyntheticSource(cfg.data.synthetic, vocab_size=cfg.model.vocab_size, seq_len=SEQ, global_batch_size=BATCH)
    batches = [global_batch(src.make_batch(i), engine.mesh, BATCH) for i in range(4)]
    holder = {"state": state, "i": 0}

    def step():
        batch = batches[holder["i"] % len(batches)]
        holder["state"], metrics = engine.train_step(holder["state"], batch)
        jax.block_until_ready((holder["state"], metrics))
        holder["i"] += 1
    return step, compile_s


def torch_step(cfg: TrainConfig, adamw: str) -> tuple[Callable[[], None], str]:
    """(one train step of transformers + torch, a description of its settings)."""
    import torch
    import transformers
    torch.set_num_threads(os.cpu_count() or 1)  # every core, as XLA uses
    hf = transformers.LlamaConfig(**{k: v for k, v in cfg.model.to_hf_config().items() if k != "architectures"})
    hf._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(hf).train()
    kwargs = {} if adamw == "default" else {adamw: True}
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps,
                            weight_decay=o.weight_decay, **kwargs)
    rng = np.random.default_rng(0)
    data = [torch.as_tensor(rng.integers(3, cfg.model.vocab_size, (BATCH, SEQ))) for _ in range(4)]
    counter = {"i": 0}

    def step():
        x = data[counter["i"] % len(data)]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        counter["i"] += 1
    desc = (f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
            f"sdpa attention, AdamW {adamw}")
    return step, desc


def peak_window(step_flops: float) -> tuple[Callable[[], None], float]:
    """(a timed unit of back-to-back jitted f32 2048^3 matmuls doing about one step's FLOPs, its FLOPs)."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (PEAK_N, PEAK_N), jnp.float32)
    b = jax.random.normal(k2, (PEAK_N, PEAK_N), jnp.float32)
    matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    matmul(a, b).block_until_ready()
    count = max(1, round(step_flops / (2.0 * PEAK_N ** 3)))

    def window():
        for _ in range(count):
            matmul(a, b).block_until_ready()
    return window, 2.0 * PEAK_N ** 3 * count


def projection_shapes(cfg: TrainConfig) -> list[tuple[int, int, int, int]]:
    """(rows, fan_in, fan_out, count per step) of every projection matmul of one train step."""
    m, rows = cfg.model, BATCH * SEQ
    E, F, L = m.hidden_size, m.intermediate_size, m.num_layers
    q, kv = m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
    return [(rows, E, q, L), (rows, q, E, L), (rows, E, kv, 2 * L), (rows, E, F, 2 * L), (rows, F, E, L),
            (rows, E, m.vocab_size, 1)]


def projection_matmuls(cfg: TrainConfig, with_torch: bool) -> dict[str, float]:
    """Seconds the step's projections take as bare matmuls (forward x @ W and both backward products,
    dy @ W^T and x^T @ dy) in XLA and in torch: the floor each framework's GEMMs put under a train step."""
    rng = np.random.default_rng(0)
    out = {"jax": 0.0, "torch": 0.0, "flops": 0.0}
    three = jax.jit(lambda x, w, dy: (x @ w, dy @ w.T, x.T @ dy))
    for rows, fan_in, fan_out, count in projection_shapes(cfg):
        x, w, dy = (rng.standard_normal(s, np.float32) for s in ((rows, fan_in), (fan_in, fan_out), (rows, fan_out)))
        xs = [jnp.asarray(a) for a in (x, w, dy)]
        jax.block_until_ready(three(*xs))
        out["jax"] += count * min(_timed(lambda: jax.block_until_ready(three(*xs))) for _ in range(5))
        if with_torch:
            import torch
            ts = [torch.from_numpy(a) for a in (x, w, dy)]
            torch_three = lambda: (ts[0] @ ts[1], ts[2] @ ts[1].T, ts[0].T @ ts[2])
            torch_three()
            out["torch"] += count * min(_timed(torch_three) for _ in range(5))
        out["flops"] += count * 3 * 2.0 * rows * fan_in * fan_out
    return out


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timed rounds (best is reported)")
    parser.add_argument("--no_scan", action="store_true", help="unrolled layers instead of a scan")
    parser.add_argument("--remat", default="none")
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument("--torch_adamw", default="default,fused",
                        help="comma-separated torch AdamW implementations to time: default (torch's own choice "
                             "for CPU tensors), foreach, fused")
    args = parser.parse_args()

    cfg = bench_config(scan=not args.no_scan, remat=args.remat)
    tokens = BATCH * SEQ
    flops_per_token = P.flops_per_token(cfg.model, SEQ)
    step_flops = flops_per_token * tokens
    load_before = os.getloadavg()[0]

    contenders: dict[str, Callable[[], None]] = {}
    contenders["mellama_jax"], compile_s = ours(cfg)
    torch_desc = ""
    if not args.skip_torch:
        for variant in args.torch_adamw.split(","):
            if variant not in ("default", "foreach", "fused"):
                parser.error(f"--torch_adamw: unknown variant {variant!r}; expected default, foreach or fused")
            contenders[f"torch/{variant}"], torch_desc = torch_step(cfg, variant)
        torch_desc = torch_desc.rsplit(", AdamW", 1)[0] + f", AdamW variants: {args.torch_adamw}"
    contenders["peak"], peak_flops = peak_window(step_flops)
    for fn in contenders.values():  # warm-up (torch allocator, XLA thread pool)
        fn()
    timings = {name: Timings() for name in contenders}
    names = list(contenders)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            timings[name].time(contenders[name])

    peak = timings["peak"]
    peak_best, peak_cpu = peak_flops / min(peak.wall), peak_flops / min(peak.cpu)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, {os.cpu_count()} CPU cores, load average "
          f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}; {args.rounds} interleaved rounds, best (median)")
    print(f"model {P.count_params(cfg.model) / 1e6:.1f}M params, batch {BATCH} x {SEQ}, fp32, AdamW, "
          f"scan_layers={cfg.model.scan_layers}, remat={cfg.model.remat_policy}; "
          f"model FLOPs/token {flops_per_token / 1e6:.1f}M; our compile {compile_s:.1f} s")
    if torch_desc:
        print(f"reference: {torch_desc}")
    print(f"peak (jitted f32 {PEAK_N}^3 matmul): {peak_best / 1e9:.1f} GFLOP/s "
          f"(median {peak_flops / statistics.median(peak.wall) / 1e9:.1f}); per CPU-second {peak_cpu / 1e9:.1f}")
    tps = {}
    for name in names[:-1]:
        t = timings[name]
        tps[name] = tokens / min(t.wall)
        cpu_mfu = step_flops / min(t.cpu) / peak_cpu
        print(f"{name:15s}: {tps[name]:7.1f} tokens/s (median {tokens / statistics.median(t.wall):7.1f})  "
              f"{min(t.wall) * 1e3:8.1f} ms/step  MFU {flops_per_token * tps[name] / peak_best:6.1%}  "
              f"cpu-MFU {cpu_mfu:6.1%}")
    torch_names = [n for n in tps if n.startswith("torch/")]
    if torch_names:
        best = max(torch_names, key=tps.get)
        cpu_ratio = min(timings[best].cpu) / min(timings["mellama_jax"].cpu)
        print(f"ratio mellama_jax / fastest torch ({best}): {tps['mellama_jax'] / tps[best]:.2f}x tokens/s "
              f"({cpu_ratio:.2f}x per CPU-second); targets: >= 1.5x torch, MFU >= 65% of the measured peak")
    # What bounds the step: the same projections as bare matmuls, in each framework.
    mm = projection_matmuls(cfg, with_torch=bool(torch_names))
    line = (f"projection matmuls alone (fwd + both bwd products, {mm['flops'] / 1e9:.0f} GFLOP/step): XLA "
            f"{mm['jax'] * 1e3:.0f} ms ({mm['flops'] / mm['jax'] / 1e9:.0f} GFLOP/s)")
    if torch_names:
        line += f", torch {mm['torch'] * 1e3:.0f} ms ({mm['flops'] / mm['torch'] / 1e9:.0f} GFLOP/s)"
    print(line + f"; our whole step {min(timings['mellama_jax'].wall) * 1e3:.0f} ms")
    if not all(math.isfinite(x) for t in timings.values() for x in t.wall):
        raise SystemExit("non-finite timing")


if __name__ == "__main__":
    main()
