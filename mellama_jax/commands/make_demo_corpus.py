"""Write the demo's synthetic corpus, instruction sets and MIBE eval files (and optionally its tokenizer).

    mellama-make-demo-corpus --out_dir runs/demo/data [--seed 0] [--scale 1.0] [--tokenizer_vocab 1024]

Layout: see mellama_jax/demo/corpus.py. With --tokenizer_vocab, also trains `OUT_DIR/tokenizer/tokenizer.model`
on the corpus (LLaMA-2 sentencepiece options).
"""
import json
import os
import sys
import time

from mellama_jax import cli
from mellama_jax.data.tokenizer import train_tokenizer
from mellama_jax.demo import corpus as demo


def main(argv=None) -> int:
    return cli.run(_main, argv)


def _main(argv) -> int:
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the number of corpus documents")
    p.add_argument("--tokenizer_vocab", type=int, default=0, help="also train a tokenizer of this vocab size")
    args = p.parse_args(argv)
    start = time.time()
    paths = demo.write_demo_data(args.out_dir, seed=args.seed, scale=args.scale)
    if args.tokenizer_vocab:
        tok = train_tokenizer(demo.demo_texts(args.out_dir), os.path.join(args.out_dir, "tokenizer"),
                              vocab_size=args.tokenizer_vocab)
        paths["tokenizer"] = tok.model_path
    print(json.dumps(paths, indent=2))
    print(f"demo data written to {args.out_dir} in {time.time() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
