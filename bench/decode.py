"""Greedy decoding speed: mellama_jax's jitted generate vs transformers `generate` on the same weights.

    python bench/decode.py [--batch_sizes 1,8] [--prompt_len 32] [--new_tokens 128] [--repeats 5]

The bench model is docs/sources.md's (config.preset("bench_56m"): hidden 512, 8 layers, 8 heads, 4 kv heads,
vocab 32000, ~56M parameters, fp32). It is initialised at random in transformers' LlamaForCausalLM and
converted with convert.mapping.params_from_hf, so both sides decode with the same weights. EOS is disabled
on both sides so every row generates exactly --new_tokens tokens.

Timing: compile excluded (one warm-up call each), then --repeats rounds that alternate JAX and torch, so
load from other processes hits both alike; best round reported. tokens/s counts new tokens (batch x
new_tokens / seconds, prefill included on both sides). Also reported: how many rows produce the same
tokens on both sides (fp32 on different kernels may flip a near-tie late in a random model).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# torch's OpenMP workers otherwise keep spinning for a while after each torch call and take the cores from
# the JAX call timed next (seen here: JAX decode at batch 1 halved). Passive waiting costs torch nothing
# measurable here; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import mellama_jax.generate.decode as decode_module  # noqa: E402
from mellama_jax.config import preset  # noqa: E402
from mellama_jax.convert.mapping import params_from_hf  # noqa: E402
from mellama_jax.generate import generate  # noqa: E402
from mellama_jax.model import params as P  # noqa: E402

TARGETS = {1: 2.0}  # >= 2x transformers at batch 1 (docs/benchmarks.md); other batches are reported as measured


def build_models(seed: int, scanned: bool):
    import torch
    import transformers
    cfg = preset("bench_56m")
    hf_config = transformers.LlamaConfig(**cfg.to_hf_config())
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    hf.generation_config.eos_token_id = None
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = params_from_hf(cfg, state.__getitem__, scanned=scanned)
    params = jax.tree.map(jax.numpy.asarray, params)
    return cfg.replace(scan_layers=scanned), params, hf


def time_call(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch_sizes", default="1,8")
    ap.add_argument("--prompt_len", type=int, default=32)
    ap.add_argument("--new_tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scanned", action="store_true", help="pass scanned params (split per layer in each call)")
    ap.add_argument("--skip_torch", action="store_true")
    ap.add_argument("--torch_threads", type=int, default=0, help="0 = torch's default")
    ap.add_argument("--json_out", help="also write the results as JSON here")
    ap.add_argument("--xla_default_dots", action="store_true",
                    help="compile our decode with XLA's default CPU options (dots on YNNPACK) instead of "
                         "generate.decode.CPU_DECODE_OPTIONS, to re-measure what those options buy")
    args = ap.parse_args(argv)
    if args.xla_default_dots:
        decode_module.CPU_DECODE_OPTIONS.clear()

    import torch
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    cfg, params, hf = build_models(args.seed, args.scanned)
    options = decode_module.compiler_options() or "XLA defaults"
    print(f"bench_56m: {P.count_params(cfg) / 1e6:.1f}M params, fp32, prompt {args.prompt_len}, "
          f"{args.new_tokens} new tokens, jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), best of {args.repeats}; "
          f"our decode compiled with {options}", flush=True)
    rng = np.random.default_rng(args.seed)
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        prompts = np.concatenate([np.ones((batch, 1), np.int64),
                                  rng.integers(3, cfg.vocab_size, (batch, args.prompt_len - 1))], axis=1)

        def run_jax():
            return generate(cfg, params, prompts.tolist(), max_new_tokens=args.new_tokens, eos_id=-1)

        def run_torch():
            ids = torch.as_tensor(prompts)
            with torch.no_grad():
                out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                                  do_sample=False, pad_token_id=0)
            return out[:, args.prompt_len:].tolist()

        compile_s, jax_out = time_call(run_jax)
        jax_times, torch_times = [], []
        torch_out = None
        if not args.skip_torch:
            torch_out = run_torch()  # warm-up
        for _ in range(args.repeats):
            jax_times.append(time_call(run_jax)[0])
            if not args.skip_torch:
                torch_times.append(time_call(run_torch)[0])
        tokens = batch * args.new_tokens
        row = {"batch": batch, "jax_tokens_per_s": tokens / min(jax_times), "first_call_s": compile_s}
        assert all(len(r) == args.new_tokens for r in jax_out)
        if torch_out is not None:
            row["torch_tokens_per_s"] = tokens / min(torch_times)
            row["ratio"] = row["jax_tokens_per_s"] / row["torch_tokens_per_s"]
            row["target_ratio"] = TARGETS.get(batch)
            row["rows_identical"] = sum(a == b for a, b in zip(jax_out, torch_out))
            prefix = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
                      for a, b in zip(jax_out, torch_out)]
            row["shortest_common_prefix"] = min(prefix)
        results.append(row)
        line = f"batch {batch}: mellama_jax {row['jax_tokens_per_s']:7.1f} tok/s (first call {compile_s:.1f}s)"
        if torch_out is not None:
            target = f", target >= {row['target_ratio']:.0f}x" if row["target_ratio"] else ""
            line += (f" | transformers {row['torch_tokens_per_s']:7.1f} tok/s | ratio {row['ratio']:.2f}x{target}"
                     f" | identical rows {row['rows_identical']}/{batch} (shortest common prefix "
                     f"{row['shortest_common_prefix']})")
        print(line, flush=True)
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} cores)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
