"""SFT input-pipeline throughput and packing efficiency on a Me-LLaMA-chat-shaped synthetic set, against bare
sentencepiece encoding of the same text in the same run.

The set has the shape of Me-LLaMA-chat's 214,595 instruction samples: sources in their own published shapes
and in roughly the paper's proportions (general: Alpaca, Dolly, ShareGPT multi-turn; medical: HealthCareMagic
and iCliniq question/answer, MedInstruct; PMC and MIMIC tasks with long inputs in MIBE's query/answer shape),
with words drawn from a small clinical vocabulary at lengths typical of each source. Ours: indexing (one parse
and shape check per record, reported apart), then `make_sft_iterator` (render the template, tokenize with
offsets for the completion mask, pack into rows) for one packing cycle (the packer's bins) per round. Reference: the tokenizer alone encoding the
same rendered conversations (prompt + response per turn, one encode_batch call per 32 records) for the same
records, for as long as ours took, alternating in --rounds windows so that machine-speed drift hits both alike.

    python bench/sft_pipeline.py [--samples 214595] [--seq_len 4096] [--batch 8] [--rounds 3]

Reports examples/s, tokens/s (real tokens of emitted rows) and the packing efficiency (real tokens / row
positions) and completion fraction (tokens the loss counts / real tokens). One process, no worker processes.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDS = ("patient presents with fever cough chest pain dyspnea history of diabetes hypertension the a and of to "
         "in was is with for on blood pressure heart rate lab results show elevated troponin creatinine glucose "
         "treatment plan includes aspirin metformin insulin follow up in two weeks imaging ct scan mri biopsy "
         "tumor protein gene expression cell therapy trial dose response significant p value cohort study").split()
# source: (share of the set, shape, prompt words, response words, turns)
SOURCES = {
    "alpaca": (0.24, "alpaca", (8, 40), (20, 120), 1),
    "dolly": (0.07, "dolly", (8, 120), (20, 150), 1),
    "sharegpt": (0.12, "sharegpt", (10, 80), (60, 300), 3),
    "healthcaremagic": (0.15, "messages", (40, 150), (60, 200), 1),
    "icliniq": (0.03, "messages", (40, 150), (60, 200), 1),
    "medinstruct": (0.03, "alpaca", (10, 60), (20, 150), 1),
    "pmc_tasks": (0.27, "mibe", (200, 700), (5, 80), 1),
    "mimic_tasks": (0.09, "mibe", (400, 1500), (10, 120), 1),
}


def _text(r: random.Random, lo_hi) -> str:
    return " ".join(r.choice(WORDS) for _ in range(r.randint(*lo_hi)))


def _record(r: random.Random, shape: str, prompt, response, turns) -> dict:
    if shape == "alpaca":
        return {"instruction": _text(r, (5, 20)), "input": _text(r, prompt), "output": _text(r, response)}
    if shape == "dolly":
        return {"instruction": _text(r, (5, 20)), "context": _text(r, prompt), "response": _text(r, response),
                "category": "closed_qa"}
    if shape == "sharegpt":
        turns_ = []
        for _ in range(r.randint(1, turns)):
            turns_ += [{"from": "human", "value": _text(r, prompt)}, {"from": "gpt", "value": _text(r, response)}]
        return {"conversations": turns_}
    if shape == "messages":
        return {"messages": [{"role": "system", "content": "You are a doctor answering patients."},
                             {"role": "user", "content": _text(r, prompt)},
                             {"role": "assistant", "content": _text(r, response)}]}
    return {"query": _text(r, prompt), "answer": _text(r, response)}


def write_set(root: str, samples: int, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    paths = []
    for name, (share, shape, prompt, response, turns) in SOURCES.items():
        path = os.path.join(root, f"{name}.jsonl")
        with open(path, "w") as f:
            for _ in range(max(1, round(share * samples))):
                f.write(json.dumps(_record(r, shape, prompt, response, turns)) + "\n")
        paths.append(path)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=214_595)
    p.add_argument("--seq_len", type=int, default=4096)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--template", default="llama2_chat")
    args = p.parse_args(argv)

    from mellama_jax.data import instruct as I
    from mellama_jax.data.errors import DataReport
    from mellama_jax.data.loader import MIN_PACKING_BINS, make_sft_iterator
    from mellama_jax.data.sources import RecordSource, SourceConfig
    from mellama_jax.data.templates import render_prompt
    from mellama_jax.data.tokenizer import Tokenizer
    tok = Tokenizer.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "assets",
                                      "llama2-tokenizer"))
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        paths = write_set(work, args.samples)
        written = time.perf_counter() - t0
        cfg = dict(components=[], instruct=dict(sources=paths, template=args.template))
        t0 = time.perf_counter()
        it = make_sft_iterator(cfg, tok, seq_len=args.seq_len, global_batch_size=args.batch, seed=0,
                               process_index=0, process_count=1)
        index_s = time.perf_counter() - t0  # indexing: parse + shape check of every record
        t0 = time.perf_counter()
        next(it)  # the first batch packs a full set of bins (data.num_packing_bins) first: latency, reported apart
        first_batch_s = time.perf_counter() - t0
        # The bare tokenizer's input: the same records rendered as the pipeline renders them (before timing).
        src = RecordSource.build([SourceConfig(x) for x in paths], lambda c: I.instruct_check(), DataReport())
        order = list(range(len(src)))
        random.Random(1).shuffle(order)
        blocks = []
        for start in range(0, min(len(order), 8192), 32):
            texts, n = [], 0
            for j in order[start:start + 32]:
                conv = I.parse_record(src[j][0])[0]
                n += 1
                for i, (prompt, response) in enumerate(conv.turns):
                    texts.append(render_prompt(args.template, prompt, conv.input if i == 0 else None,
                                               system=conv.system if i == 0 else None) + response)
            blocks.append((n, texts))

        ours = {"seconds": 0.0, "tokens": 0, "rows": 0}
        bare = {"seconds": 0.0, "tokens": 0, "examples": 0}
        bins = max(2 * args.batch, MIN_PACKING_BINS)
        for _ in range(args.rounds):
            # One whole packing cycle (the packer emits its bins' rows together, then refills them).
            t0 = time.perf_counter()
            for _ in range(bins // args.batch):
                b = next(it)
                ours["tokens"] += int((b["segment_ids"] != 0).sum())
                ours["rows"] += len(b["tokens"])
            spent = time.perf_counter() - t0
            ours["seconds"] += spent
            t0 = time.perf_counter()
            k = 0
            while time.perf_counter() - t0 < spent:
                n, texts = blocks[k % len(blocks)]
                ids = tok.encode_batch(texts, bos=True, eos=True)
                bare["examples"] += n
                bare["tokens"] += sum(len(x) for x in ids)
                k += 1
            bare["seconds"] += time.perf_counter() - t0
        stats = it.stats()
    # Examples in the emitted rows: segments (an SFT conversation is one segment unless split as overlong).
    tokens_per_example = bare["tokens"] / max(bare["examples"], 1)
    ours_tps = ours["tokens"] / ours["seconds"]
    bare_tps = bare["tokens"] / bare["seconds"]
    result = {
        "samples": args.samples, "seq_len": args.seq_len, "batch": args.batch, "template": args.template,
        "write_set_s": round(written, 1), "index_s": round(index_s, 1), "first_batch_s": round(first_batch_s, 1),
        "ours_tokens_per_s": round(ours_tps), "ours_examples_per_s": round(ours_tps / tokens_per_example, 1),
        "bare_tokenizer_tokens_per_s": round(bare_tps), "bare_examples_per_s": round(bare["examples"] / bare["seconds"], 1),
        "ratio_tokens_per_s": round(ours_tps / bare_tps, 3),
        "packing_efficiency": round(stats["data/packing_efficiency"], 4),
        "completion_fraction": round(stats["data/target_fraction"], 4),
        "mean_tokens_per_example": round(tokens_per_example, 1),
        "rows_timed": ours["rows"],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
