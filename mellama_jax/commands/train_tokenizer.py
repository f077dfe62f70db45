"""Train a LLaMA-2-style sentencepiece tokenizer (BPE, byte fallback, split digits, whitespace kept).

    mellama-train-tokenizer --input 'runs/demo/data/corpus/**/*.jsonl*' --text_fields title,abstract,text \
        --vocab_size 1024 --out_dir runs/demo/tokenizer

Inputs are JSONL (.gz/.zst), Parquet or plain-text files (.txt: one sentence per line). The output directory
gets `tokenizer.model` and, with --hf, the Hugging Face tokenizer files (data/hf_tokenizer.py).
"""
import glob
import sys

from mellama_jax import cli
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.hf_tokenizer import save_hf_tokenizer
from mellama_jax.data.sources import RecordSource, SourceConfig, text_check, text_of
from mellama_jax.data.tokenizer import train_tokenizer


def iter_texts(patterns, fields, strict):
    report = DataReport(strict=strict)
    for pattern in patterns:
        paths = sorted(glob.glob(pattern, recursive=True))
        if not paths:
            raise DataError(f"{pattern}: no file matches")
        for path in paths:
            if path.endswith(".txt"):
                with open(path, encoding="utf-8") as f:
                    yield from f
                continue
            # A corpus mixes record kinds (abstracts: title/abstract, notes: text); a record needs any one field.
            src = RecordSource.build([SourceConfig(path, text_fields=fields)], lambda c: text_check(c.text_fields),
                                     report)
            for i in range(len(src)):
                rec, _, flds = src[i]
                yield text_of(rec, flds)
    if report.total:
        print(f"skipped input: {report.summary()}", file=sys.stderr)


def main(argv=None) -> int:
    return cli.run(_main, argv)


def _main(argv) -> int:
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--input", action="append", required=True, help="file or glob; repeatable")
    p.add_argument("--text_fields", default="text", help="comma-separated record fields holding text")
    p.add_argument("--vocab_size", type=int, default=32000)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--input_sentence_size", type=int, default=0, help="sample this many sentences (0 = all)")
    p.add_argument("--strict", action="store_true", help="fail on the first bad record")
    p.add_argument("--hf", action="store_true",
                   help="also write the Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json, ...)")
    args = p.parse_args(argv)
    fields = tuple(f.strip() for f in args.text_fields.split(",") if f.strip())
    tok = train_tokenizer(iter_texts(args.input, fields, args.strict), args.out_dir, vocab_size=args.vocab_size,
                          input_sentence_size=args.input_sentence_size)
    if args.hf:
        save_hf_tokenizer(tok, args.out_dir)
    print(f"wrote {tok.model_path} (vocab {tok.vocab_size}, sha256 {tok.sha256[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
