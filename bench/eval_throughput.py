"""Benchmark evaluation speed: examples/s of one generation task on the bench model, and the cost of
benchmark tasks evaluated inside training at the shipped default interval.

    python bench/eval_throughput.py [--records 32] [--max_new_tokens 32] [--batch_size 8] [--tokenizer DIR]

1. Throughput: the bench model (config.preset("bench_56m"), random fp32 weights, unscanned for decoding)
   with the real LLaMA-2 tokenizer runs `eval.runner.evaluate` on synthetic PubMedQA records, greedy,
   --max_new_tokens new tokens (EOS disabled by the random weights' luck only: rows stop at EOS like MIBE).
   One warm-up run compiles every shape first; the timed run reports examples/s.
2. In-loop cost: configs/tiny_pretrain.py trained with eval.tasks=pubmedqa evaluated at the shipped default
   (eval.task_every_steps=0: once, at the last step) on --records records; prints the training time of the
   steps, the evaluation's seconds (from metrics.jsonl) and the slowdown of the run it causes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from mellama_jax.api import Model  # noqa: E402
from mellama_jax.config import config_module, preset  # noqa: E402
from mellama_jax.data.tokenizer import Tokenizer  # noqa: E402
from mellama_jax.demo import mibe as synthetic  # noqa: E402
from mellama_jax.eval.runner import EvalConfig, evaluate  # noqa: E402
from mellama_jax.model import params as P  # noqa: E402
from mellama_jax.train.config import TrainConfig  # noqa: E402
from mellama_jax.train.loop import train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = "/work/shared/data/llama2-tokenizer"


def throughput(args, data: str, tokenizer: Tokenizer) -> float:
    cfg = preset("bench_56m", scan_layers=False)
    model = Model(config=cfg, params=P.init_params(cfg, jax.random.key(0)), tokenizer=tokenizer)
    run = EvalConfig(tasks=("pubmedqa",), data_dir=data, max_new_tokens=args.max_new_tokens,
                     batch_size=args.batch_size, progress=False)
    evaluate(model, run)  # compiles every (batch, prompt length) bucket
    start = time.perf_counter()
    (result,) = evaluate(model, run)
    seconds = time.perf_counter() - start
    n = len(result.examples)
    print(f"eval throughput: {n / seconds:.2f} examples/s ({n} PubMedQA records, batch {args.batch_size}, "
          f"<= {args.max_new_tokens} new tokens, bench_56m fp32, {jax.devices()[0].platform}, "
          f"{seconds:.1f} s)")
    return n / seconds


def in_loop_cost(args, data: str, tokenizer_dir: str) -> None:
    c = config_module(os.path.join(ROOT, "configs", "tiny_pretrain.py")).get_config()
    c.update_from_flattened_dict({
        "model.vocab_size": 32000, "log.progress_bar": False, "log.every_steps": 1, "eval.every_steps": 0,
        "checkpoint.every_steps": 0, "log.peak_flops_per_device": 1e11, "data.tokenizer": tokenizer_dir,
        "eval.tasks": "pubmedqa", "eval.task_data_dir": data, "eval.task_max_new_tokens": args.max_new_tokens})
    cfg = TrainConfig.from_config_dict(c)
    with tempfile.TemporaryDirectory() as workdir:
        train(cfg, workdir)
        records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [r for r in records if r["kind"] == "train"]
    step_seconds = sum(r["step_time_s"] for r in steps[1:])  # the first interval includes compilation
    per_step = step_seconds / max(len(steps) - 1, 1)
    (tasks,) = [r for r in records if r["kind"] == "tasks"]
    total = per_step * cfg.train.steps
    print(f"in-loop tasks at the default interval (once, at step {cfg.train.steps}): {tasks['seconds']:.1f} s "
          f"vs {total:.1f} s of training steps ({per_step * 1e3:.1f} ms/step) -> the run takes "
          f"{100 * tasks['seconds'] / total:.0f}% longer (tiny model, {args.records} records, "
          f"<= {args.max_new_tokens} new tokens; the first evaluation includes its compilation)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--tokenizer", default=TOKENIZER, help="directory of the LLaMA-2 tokenizer.model")
    args = p.parse_args(argv)
    tokenizer = Tokenizer(os.path.join(args.tokenizer, "tokenizer.model"))
    with tempfile.TemporaryDirectory() as data:
        synthetic.write_synthetic_benchmark(data, per_task=args.records, tasks=("pubmedqa",))
        throughput(args, data, tokenizer)
        in_loop_cost(args, data, os.path.join(args.tokenizer, "tokenizer.model"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
