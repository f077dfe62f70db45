"""On one NVIDIA GPU: train-step MFU and greedy decode of mellama_jax vs transformers + torch on the same GPU.

    python bench/gpu.py [--train_layers 4] [--batch_sizes 1,8,32] [--skip_train] [--skip_decode] [--json_out F]

Model: LLaMA-2 7B's shape (config.preset("llama2_7b"): hidden 4096, 32 heads, MLP 11008, vocab 32000),
random weights, bf16 compute.
  * Train step: `--train_layers` layers of that shape (the whole 32 with AdamW states does not fit one GPU
    beside the reference), fp32 parameters and AdamW state, bf16 compute, `--batch` x `--seq` tokens, remat
    `--remat` (default `full`, and torch then checkpoints every layer: without remat 4 such layers at 2 x 4096
    need 62 GiB on our side alone). Ours: the engine's compiled step (attention `cudnn`, and `xla` for
    comparison). Reference:
    transformers' LlamaForCausalLM, fp32 master weights under torch.autocast(bfloat16), sdpa attention
    (flash on this GPU), fused AdamW, clip_grad_norm_ — the standard torch recipe. MFU counts model FLOPs
    as MaxText does (model.params.flops_per_token: causal attention halved) against the GPU's dense bf16
    peak (`--peak_tflops`, the datasheet's 989 for H100/H200 SXM) and against a bf16 matmul measured here.
  * Decode: all 32 layers, bf16 weights (13.5 GB), a `--prompt_len` prompt and `--new_tokens` new tokens,
    EOS disabled. Ours: `mellama_jax.generate.generate`. Reference: transformers' `generate` (greedy, its
    default dynamic cache) on the same weights. Also printed: the HBM-bandwidth bound at batch 1 (the measured
    copy's traffic, bytes read + written per second, over the bytes of weights every step reads).

Timing: one warm-up call each (compile excluded), then `--repeats` rounds alternating ours and torch; best
round reported, with the median. JAX is limited to half the GPU memory so torch has the other half.
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

from mellama_jax.config import preset  # noqa: E402
from mellama_jax.convert.mapping import params_from_hf  # noqa: E402
from mellama_jax.data.synthetic import SyntheticSource  # noqa: E402
from mellama_jax.generate import generate  # noqa: E402
from mellama_jax.model import params as P  # noqa: E402
from mellama_jax.train.batches import global_batch  # noqa: E402
from mellama_jax.train.config import TrainConfig, default_config, model_fields  # noqa: E402
from mellama_jax.train.loop import build_engine  # noqa: E402
from mellama_jax.train.state import init_state  # noqa: E402

TORCH_DEVICE = "cuda"


def best_and_median(times: list[float]) -> tuple[float, float]:
    return min(times), statistics.median(times)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measured_peaks() -> dict:
    """bf16 8192^3 matmul TFLOP/s and device-to-device copy GB/s (bytes read + written), measured here."""
    n = 8192
    a = jnp.ones((n, n), jnp.bfloat16)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    t = min(timed(lambda: mm(a).block_until_ready()) for _ in range(10))
    big = jnp.ones((1 << 30,), jnp.float32)  # 4 GiB
    cp = jax.jit(lambda x: x + 1.0)
    cp(big).block_until_ready()
    c = min(timed(lambda: cp(big).block_until_ready()) for _ in range(5))
    return {"matmul_tflops": 2 * n ** 3 / t / 1e12, "copy_gbps": 2 * big.nbytes / c / 1e9}


# ----------------------------------------------------------------------------------------------- train step
def train_config(model: str, layers: int, batch: int, seq: int, attention: str, remat: str) -> TrainConfig:
    c = default_config()
    c.model = model_fields(model, num_layers=layers, dtype="bfloat16", param_dtype="float32",
                           attention=attention, remat_policy=remat, scan_layers=True)
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
    c.train.seq_len, c.train.global_batch_size, c.train.steps = seq, batch, 1000
    c.optim.learning_rate, c.optim.warmup_ratio = 1e-5, 0.0
    return TrainConfig.from_config_dict(c)


def our_train_step(cfg: TrainConfig):
    start = time.perf_counter()
    engine = build_engine(cfg)
    state = init_state(engine.trainable, engine.tx, engine.layout, jax.random.key(0))
    B, T = cfg.train.global_batch_size, cfg.train.seq_len
    src = SyntheticSource(cfg.data.synthetic, vocab_size=cfg.model.vocab_size, seq_len=T, global_batch_size=B)
    batches = [global_batch(src.make_batch(i), engine.mesh, B) for i in range(2)]
    holder = {"state": state, "i": 0, "loss": None}

    def step():
        holder["state"], metrics = engine.train_step(holder["state"], batches[holder["i"] % 2])
        holder["loss"] = float(metrics["loss"])  # blocks until the step is done
        holder["i"] += 1
    step()
    return step, time.perf_counter() - start, holder


def torch_train_step(cfg: TrainConfig):
    import torch  # noqa: PLC0415 - the reference, only in this benchmark
    import transformers  # noqa: PLC0415
    hf = transformers.LlamaConfig(**{k: v for k, v in cfg.model.to_hf_config().items() if k != "architectures"})
    hf._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(TORCH_DEVICE):
        model = transformers.LlamaForCausalLM(hf).float().train()
    if cfg.model.remat_policy != "none":
        model.gradient_checkpointing_enable()  # whole layers recomputed, as our "full"
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps,
                            weight_decay=o.weight_decay, fused=True)
    B, T = cfg.train.global_batch_size, cfg.train.seq_len
    g = torch.Generator(device=TORCH_DEVICE).manual_seed(0)
    data = [torch.randint(3, cfg.model.vocab_size, (B, T), device=TORCH_DEVICE, generator=g) for _ in range(2)]
    counter = {"i": 0}

    def step():
        x = data[counter["i"] % 2]
        with torch.autocast(TORCH_DEVICE, dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        counter["i"] += 1
    step()
    desc = f"torch {torch.__version__}, transformers {transformers.__version__}, sdpa, autocast bf16, fused AdamW"
    return step, desc, (model, opt, data)


def bench_train(args, peaks) -> list[dict]:
    rows = []
    cfgs = {a: train_config(args.model, args.train_layers, args.batch, args.seq, a, args.remat) for a in args.attentions.split(",")}
    m = next(iter(cfgs.values())).model
    flops_per_token = P.flops_per_token(m, args.seq)
    tokens = args.batch * args.seq
    print(f"train step: {args.model} shape with {m.num_layers} layers ({P.count_params(m) / 1e9:.2f}B params), "
          f"batch {args.batch} x {args.seq}, fp32 params + AdamW, bf16 compute, remat {args.remat}; "
          f"{flops_per_token / 1e9:.1f} GFLOP/token", flush=True)
    contenders = {}
    for attention, cfg in cfgs.items():
        step, compile_s, _ = our_train_step(cfg)
        contenders[f"mellama_jax ({attention} attention)"] = step
        print(f"  compiled ours with {attention} attention in {compile_s:.0f}s", flush=True)
    torch_state = None
    if not args.skip_torch:
        step, desc, torch_state = torch_train_step(next(iter(cfgs.values())))
        contenders["torch"] = step
        print(f"  reference: {desc}", flush=True)
    times = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for name, step in contenders.items():
            times[name].append(timed(step))
    for name, ts in times.items():
        best, med = best_and_median(ts)
        tps = tokens / best
        mfu = flops_per_token * tps / (args.peak_tflops * 1e12)
        row = {"what": "train", "who": name, "step_s": best, "median_s": med, "tokens_per_s": tps, "mfu": mfu,
               "mfu_of_measured_matmul": flops_per_token * tps / (peaks["matmul_tflops"] * 1e12)}
        rows.append(row)
    ref = next((r for r in rows if r["who"] == "torch"), None)
    for r in rows:
        ratio = f" | {r['tokens_per_s'] / ref['tokens_per_s']:.2f}x torch" if ref and r is not ref else ""
        print(f"  {r['who']:34s} {r['step_s'] * 1e3:8.1f} ms/step (median {r['median_s'] * 1e3:.1f}) "
              f"{r['tokens_per_s']:9.0f} tok/s  MFU {100 * r['mfu']:.1f}% of {args.peak_tflops:.0f} TFLOP/s "
              f"({100 * r['mfu_of_measured_matmul']:.1f}% of the measured matmul){ratio}", flush=True)
    del torch_state, contenders
    if TORCH_DEVICE == "cuda":
        import torch  # noqa: PLC0415 - the reference, only in this benchmark
        torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------------------------- decode
def decode_models(model: str, seed: int):
    import torch  # noqa: PLC0415 - the reference, only in this benchmark
    import transformers  # noqa: PLC0415
    cfg = preset(model, dtype="bfloat16", param_dtype="bfloat16", scan_layers=True)
    hf_config = transformers.LlamaConfig(**cfg.to_hf_config())
    hf_config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(TORCH_DEVICE):
        hf = transformers.LlamaForCausalLM(hf_config).to(torch.bfloat16).eval()
    hf.generation_config.eos_token_id = None
    state = hf.state_dict()

    def get(name):  # bf16 tensor -> numpy bfloat16 without a float32 copy
        return state[name].view(torch.int16).cpu().numpy().view(ml_dtypes.bfloat16)
    params = jax.tree.map(jnp.asarray, params_from_hf(cfg, get, scanned=True))
    return cfg, params, hf


def bench_decode(args, peaks) -> list[dict]:
    import torch  # noqa: PLC0415 - the reference, only in this benchmark
    cfg, params, hf = decode_models(args.model, args.seed)
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params)) - cfg.vocab_size * cfg.hidden_size * 2
    bound = peaks["copy_gbps"] * 1e9 / weight_bytes  # one read of every weight per step at the copy's traffic rate
    print(f"decode: {args.model}, {P.count_params(cfg) / 1e9:.2f}B params, bf16, prompt {args.prompt_len}, "
          f"{args.new_tokens} new tokens; batch-1 bandwidth bound ~{bound:.0f} tok/s "
          f"({weight_bytes / 1e9:.1f} GB of weights read per step)", flush=True)
    rng = np.random.default_rng(args.seed)
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        prompts = np.concatenate([np.ones((batch, 1), np.int64),
                                  rng.integers(3, cfg.vocab_size, (batch, args.prompt_len - 1))], axis=1)

        def ours():
            return generate(cfg, params, prompts.tolist(), max_new_tokens=args.new_tokens, eos_id=-1)

        def theirs():
            ids = torch.as_tensor(prompts, device=TORCH_DEVICE)
            with torch.no_grad():
                out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                                  do_sample=False, pad_token_id=0)
            if TORCH_DEVICE == "cuda":
                torch.cuda.synchronize()
            return out[:, args.prompt_len:].tolist()
        first = timed(ours)
        a, b = ours(), (None if args.skip_torch else theirs())
        ts_ours, ts_torch = [], []
        for _ in range(args.repeats):
            ts_ours.append(timed(ours))
            if not args.skip_torch:
                ts_torch.append(timed(theirs))
        tokens = batch * args.new_tokens
        row = {"what": "decode", "batch": batch, "jax_tokens_per_s": tokens / min(ts_ours), "first_call_s": first}
        line = f"  batch {batch:3d}: mellama_jax {row['jax_tokens_per_s']:8.1f} tok/s (first call {first:.1f}s)"
        if b is not None:
            row["torch_tokens_per_s"] = tokens / min(ts_torch)
            row["ratio"] = row["jax_tokens_per_s"] / row["torch_tokens_per_s"]
            prefix = [next((i for i, (x, y) in enumerate(zip(p, q)) if x != y), len(p)) for p, q in zip(a, b)]
            row["shortest_common_prefix"] = min(prefix)
            line += (f" | transformers {row['torch_tokens_per_s']:8.1f} tok/s | {row['ratio']:.2f}x"
                     f" | shortest common prefix {min(prefix)}/{args.new_tokens} (bf16 near-ties on random weights)")
        print(line, flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llama2_7b", help="a config.PRESETS name")
    ap.add_argument("--train_layers", type=int, default=4)
    ap.add_argument("--attentions", default="cudnn,xla", help="our attention backends to time (config.ATTENTION_BACKENDS)")
    ap.add_argument("--remat", default="full", help="our remat policy; torch checkpoints whole layers unless none")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch_sizes", default="1,8,32")
    ap.add_argument("--prompt_len", type=int, default=128)
    ap.add_argument("--new_tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (datasheet)")
    ap.add_argument("--skip_train", action="store_true")
    ap.add_argument("--skip_decode", action="store_true")
    ap.add_argument("--skip_torch", action="store_true")
    ap.add_argument("--json_out")
    args = ap.parse_args(argv)
    gpus = jax.devices("gpu") if TORCH_DEVICE == "cuda" else jax.devices()
    import torch  # noqa: PLC0415 - the reference, only in this benchmark
    print(f"{gpus[0].device_kind}; jax {jax.__version__}, torch {torch.__version__}", flush=True)
    peaks = measured_peaks()
    print(f"measured: bf16 matmul {peaks['matmul_tflops']:.0f} TFLOP/s, copy {peaks['copy_gbps']:.0f} GB/s", flush=True)
    rows = [dict(what="peaks", **peaks)]
    if not args.skip_train:
        rows += bench_train(args, peaks)
    if not args.skip_decode:
        rows += bench_decode(args, peaks)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
