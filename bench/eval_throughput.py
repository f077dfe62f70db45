"""Benchmark evaluation speed against lm-evaluation-harness's HF backend, the cost of length bucketing, and
the cost of benchmark tasks evaluated inside training at the shipped default interval.

    python bench/eval_throughput.py [--records 32] [--max_new_tokens 32] [--batch_size 8] [--tokenizer DIR]
                                    [--no_in_loop]

One model, one record set, one run:

* Model: config.preset("bench_56m") with random fp32 weights (seed 0), exported with our HF export
  (convert/hf.save_hf_checkpoint, tokenizer files from the real LLaMA-2 tokenizer.model). Our evaluator loads
  that directory with `mellama_jax.load` (unscanned, for decoding); lm-eval's HFLM loads the same directory
  (transformers LlamaForCausalLM, fp32, CPU). Same weights, same batch size, BOS on both sides.
* Records: PubMedQA-shaped records (demo/mibe.py) whose contexts carry 0..--max_context_sentences extra
  sentences, so prompt lengths spread over several length buckets as real abstracts do.
* Generate mode: our `eval.runner.evaluate` (greedy, <= --max_new_tokens, stop at EOS) vs
  `HFLM.generate_until` on the same prompt strings (greedy, max_gen_toks = --max_new_tokens, EOS stop).
* Loglik mode: our `evaluate(mode="loglik")` (each of yes/no/maybe scored) vs `HFLM.loglikelihood` on the
  same (prompt, " " + choice) requests.
* Length bucketing: ours as shipped (length-sorted batches, each padded to its own power-of-two bucket) vs
  ours with it off (every batch padded to the longest prompt/request of the run: one shape).
Every side runs once untimed first (compilation, first-call costs), then once timed; examples/s counts
records (a loglik record is 3 requests). lm-eval is timed at its backend (the task framework around it
adds a little); ours at `evaluate`, which includes tokenising, judging and metrics.

In-loop cost: configs/tiny_pretrain.py trained with eval.tasks=pubmedqa evaluated at the shipped default
(eval.task_every_steps=0: once, at the last step) on --records records; prints the training time of the
steps, the evaluation's seconds (from metrics.jsonl) and the slowdown of the run it causes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from unittest import mock

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import mellama_jax  # noqa: E402
from mellama_jax.config import config_module, preset  # noqa: E402
from mellama_jax.convert.hf import save_hf_checkpoint  # noqa: E402
from mellama_jax.data.templates import render_prompt  # noqa: E402
from mellama_jax.demo import mibe as synthetic  # noqa: E402
from mellama_jax.eval.runner import EvalConfig, evaluate, load_tasks  # noqa: E402
from mellama_jax.generate import generation  # noqa: E402
from mellama_jax.model import params as P  # noqa: E402
from mellama_jax.train.config import TrainConfig  # noqa: E402
from mellama_jax.train.loop import train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = "/work/shared/data/llama2-tokenizer"
TASK = "pubmedqa"


def write_records(data_dir: str, n: int, max_sentences: int, seed: int = 0) -> None:
    """PubMedQA-shaped records with contexts of varied length (a random number of extra findings)."""
    r = random.Random(seed)
    records = synthetic.make_records(TASK, n, seed)
    for rec in records:
        extra = " ".join(f"Patients given {r.choice(synthetic.DRUGS)} had {r.choice(synthetic.PROBLEMS)} "
                         f"checked by {r.choice(synthetic.TESTS)} at {r.randrange(2, 52)} weeks."
                         for _ in range(r.randrange(max_sentences + 1)))
        rec["query"] = rec["query"].replace("Context: ", f"Context: {extra} " if extra else "Context: ", 1)
    with open(os.path.join(data_dir, f"{TASK}.jsonl"), "w") as f:
        f.writelines(json.dumps(rec) + "\n" for rec in records)


class OneShape:
    """The loaded model with length bucketing off: every generation batch is padded to `prompt_len` tokens
    and every scoring batch to `seq_len` positions (right padding: causal attention keeps rows unchanged)."""

    def __init__(self, model, prompt_len: int, seq_len: int):
        self.model, self.prompt_len, self.seq_len = model, prompt_len, seq_len
        self.tokenizer, self.config = model.tokenizer, model.config

    def generate(self, prompts, **kwargs):
        with mock.patch.object(generation, "bucket_prompt_length", lambda n: max(n, self.prompt_len)):
            return self.model.generate(prompts, **kwargs)

    def logits(self, tokens):
        tokens = np.asarray(tokens)
        padded = np.zeros((tokens.shape[0], max(self.seq_len, tokens.shape[1])), tokens.dtype)
        padded[:, :tokens.shape[1]] = tokens
        return self.model.logits(padded)[:, :tokens.shape[1]]


def timed(what: str, fn):
    """(result, seconds) of the second of two calls: the first compiles / warms up."""
    start = time.perf_counter()
    fn()
    warm = time.perf_counter()
    out = fn()
    end = time.perf_counter()
    print(f"  {what}: warm-up {warm - start:.1f} s, timed {end - warm:.1f} s", file=sys.stderr, flush=True)
    return out, end - warm


def compare(args, data: str, hf_dir: str) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model = mellama_jax.load(hf_dir, scan_layers=False)
    tok = model.tokenizer
    gen_cfg = EvalConfig(tasks=(TASK,), data_dir=data, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size, progress=False)
    ll_cfg = EvalConfig(tasks=(TASK,), data_dir=data, mode="loglik", batch_size=args.batch_size, progress=False)
    (prepared,) = load_tasks(gen_cfg)
    task, records = prepared.task, prepared.records
    prompts = [render_prompt(gen_cfg.template, task.prompt(r)) for r in records]
    choices = [task.candidates(r) for r in records]
    lengths = [len(tok.encode(p, bos=True)) for p in prompts]
    longest_request = max(len(tok.encode(p + " " + c, bos=True)) for p, cs in zip(prompts, choices) for c in cs)
    unbucketed = OneShape(model, prompt_len=max(lengths), seq_len=longest_request)
    hf = HFLM(pretrained=hf_dir, device="cpu", dtype="float32", batch_size=args.batch_size, add_bos_token=True)
    gen_kwargs = {"until": [], "max_gen_toks": args.max_new_tokens, "do_sample": False}
    gen_requests = [Instance("generate_until", {}, (p, gen_kwargs), i) for i, p in enumerate(prompts)]
    ll_requests = [Instance("loglikelihood", {}, (p, " " + c), i) for i, (p, cs) in enumerate(zip(prompts, choices))
                   for c in cs]
    n = len(records)
    print(f"{n} PubMedQA-shaped records, prompts {min(lengths)}..{max(lengths)} tokens (median "
          f"{statistics.median(lengths):.0f}), batch {args.batch_size}, bench_56m fp32 from one HF export, "
          f"{jax.devices()[0].platform} ({os.cpu_count()} cores); each side warmed up by an untimed run first")

    rows = []
    (ours,), s_ours = timed("ours, generate", lambda: evaluate(model, gen_cfg))
    (flat,), s_flat = timed("ours without bucketing, generate", lambda: evaluate(unbucketed, gen_cfg))
    theirs, s_hf = timed("lm-eval HF, generate", lambda: hf.generate_until(gen_requests, disable_tqdm=True))
    same = sum(e.output.strip() == t.strip() for e, t in zip(ours.examples, theirs))
    same_flat = sum(a.output == b.output for a, b in zip(ours.examples, flat.examples))
    rows.append(("generate", s_ours, s_flat, s_hf,
                 f"<= {args.max_new_tokens} new tokens; outputs equal to lm-eval's on {same}/{n}, "
                 f"bucketing on/off equal on {same_flat}/{n}"))
    (ours,), s_ours = timed("ours, loglik", lambda: evaluate(model, ll_cfg))
    (flat,), s_flat = timed("ours without bucketing, loglik", lambda: evaluate(unbucketed, ll_cfg))
    theirs, s_hf = timed("lm-eval HF, loglik", lambda: hf.loglikelihood(ll_requests, disable_tqdm=True))
    best = [int(np.argmax([ll for ll, _ in theirs[k:k + len(cs)]]))
            for k, cs in zip(np.cumsum([0] + [len(cs) for cs in choices]), choices)]
    same = sum(e.output == cs[b] for e, cs, b in zip(ours.examples, choices, best))
    same_flat = sum(a.output == b.output for a, b in zip(ours.examples, flat.examples))
    rows.append(("loglik", s_ours, s_flat, s_hf, f"{len(ll_requests)} requests; picks equal to lm-eval's on "
                 f"{same}/{n}, bucketing on/off equal on {same_flat}/{n}"))

    print(f"{'mode':9}{'ours ex/s':>11}{'lm-eval HF ex/s':>17}{'ours/HF':>9}{'no bucketing ex/s':>19}"
          f"{'bucketing gain':>16}")
    for mode, s_ours, s_flat, s_hf, note in rows:
        print(f"{mode:9}{n / s_ours:11.2f}{n / s_hf:17.2f}{s_hf / s_ours:8.2f}x{n / s_flat:19.2f}"
              f"{s_flat / s_ours:15.2f}x  ({note})")


def in_loop_cost(args, data: str, tokenizer_dir: str) -> None:
    c = config_module(os.path.join(ROOT, "configs", "tiny_pretrain.py")).get_config()
    c.update_from_flattened_dict({
        "model.vocab_size": 32000, "log.progress_bar": False, "log.every_steps": 1, "eval.every_steps": 0,
        "checkpoint.every_steps": 0, "log.peak_flops_per_device": 1e11, "data.tokenizer": tokenizer_dir,
        "eval.tasks": TASK, "eval.task_data_dir": data, "eval.task_max_new_tokens": args.max_new_tokens})
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
    p.add_argument("--max_context_sentences", type=int, default=8,
                   help="extra context sentences per record: 0..N, ~20 tokens each")
    p.add_argument("--tokenizer", default=TOKENIZER, help="directory of the LLaMA-2 tokenizer.model")
    p.add_argument("--no_in_loop", action="store_true", help="skip the in-training evaluation cost")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        data, hf_dir = (stack.enter_context(tempfile.TemporaryDirectory()) for _ in range(2))
        write_records(data, args.records, args.max_context_sentences)
        cfg = preset("bench_56m", scan_layers=False)
        save_hf_checkpoint(hf_dir, cfg, P.init_params(cfg, jax.random.key(0)), tokenizer_dir=args.tokenizer,
                           overwrite=True)
        compare(args, data, hf_dir)
        if not args.no_in_loop:
            in_loop_cost(args, data, os.path.join(args.tokenizer, "tokenizer.model"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
