#!/usr/bin/env python
"""Convert a Hugging Face LLaMA-2 directory into a mellama_jax model checkpoint (orbax), streaming.

    mellama-convert-hf --hf_dir meta-llama/Llama-2-13b-hf --out_dir ckpt/llama2_13b \
        [--dtype float32|bfloat16] [--scan_layers true|false] [--overwrite] [--allow_pickle]

Reads safetensors (single file or sharded with an index) one tensor at a time; peak memory is the
checkpoint being built plus one tensor. Writes model_config.json + params/ (+ tokenizer/ when the HF
directory carries tokenizer files) into a temporary directory renamed into place at the end.
Pickled pytorch_model*.bin weights are refused unless --allow_pickle (unpickling can run code).
An HF directory without tokenizer.model (the sentencepiece model every text command reads) is named at
once: a warning, or an error before anything is converted with --require_tokenizer.
"""
from __future__ import annotations

import argparse
import sys

from mellama_jax import cli, paths
from mellama_jax.convert.hf import convert_hf_to_checkpoint
from mellama_jax.data.hf_tokenizer import TOKENIZER_JSON
from mellama_jax.data.tokenizer import MODEL_FILE


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "y"):
        return True
    if lowered in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hf_dir", required=True, help="HF directory with config.json and *.safetensors")
    p.add_argument("--out_dir", required=True, help="model checkpoint directory to create")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="parameter dtype of the checkpoint (default: the dtype of the HF tensors)")
    p.add_argument("--scan_layers", type=_bool, default=True,
                   help="stack layers on a leading axis (true, for training) or keep layers_i (false)")
    p.add_argument("--overwrite", action="store_true", help="replace --out_dir if it exists")
    p.add_argument("--allow_pickle", action="store_true",
                   help="accept pytorch_model*.bin pickle weights (only for files you trust)")
    p.add_argument("--require_tokenizer", action="store_true",
                   help=f"fail when --hf_dir has no {MODEL_FILE} (default: a warning)")
    p.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    return p.parse_args(argv)


def check_tokenizer(args: argparse.Namespace) -> None:
    """Name a missing tokenizer.model now, not at the first text command that needs it."""
    if paths.resolve(paths.join(args.hf_dir, MODEL_FILE)).is_file():
        return
    has_json = paths.resolve(paths.join(args.hf_dir, TOKENIZER_JSON)).is_file()
    message = (f"--hf_dir {args.hf_dir}: no {MODEL_FILE}"
               + (f" (only {TOKENIZER_JSON}, which is copied but not read)" if has_json else "")
               + f"; training, evaluation and text generation read the sentencepiece {MODEL_FILE}: copy the base "
               f"model's {MODEL_FILE} into --hf_dir first, or later into {args.out_dir}/tokenizer/")
    if args.require_tokenizer:
        raise cli.UsageError(message)
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    return cli.run(lambda a: run(parse_args(a)), argv)


def run(args: argparse.Namespace) -> int:
    check_tokenizer(args)
    out = convert_hf_to_checkpoint(args.hf_dir, args.out_dir, dtype=args.dtype, scan_layers=args.scan_layers,
                                   overwrite=args.overwrite, allow_pickle=args.allow_pickle,
                                   progress=not args.no_progress)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
