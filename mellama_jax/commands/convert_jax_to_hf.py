#!/usr/bin/env python
"""Export a mellama_jax model checkpoint as a Hugging Face LLaMA directory (sharded safetensors).

    mellama-convert-jax --ckpt_dir ckpt/me_llama_13b --out_dir hf/me_llama_13b \
        [--dtype bfloat16] [--max_shard_size 5GB] [--overwrite] [--merge_lora] [--peft_dir DIR]

Writes model-0000i-of-0000n.safetensors + model.safetensors.index.json (or one model.safetensors),
config.json with every LLaMA-2 value explicit, generation_config.json (greedy; BOS 1, EOS 2, no pad), the
tokenizer files (tokenizer.json giving sentencepiece's exact ids; an instruction-tuned run's prompt
template as chat_template) and a model card README.md (base model, data mixture and tokens, recipe,
evaluation table, license, intended use) into a temporary directory renamed into place at the end. The result loads with
`transformers.AutoModelForCausalLM.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)`.

--ckpt_dir is a model checkpoint directory or a training workdir (its latest complete step, or --step).

LoRA checkpoints (a LoRA training workdir, or a model checkpoint with lora_config.json + lora/):
  --merge_lora                  folds the adapters into the exported weights (one standalone HF model);
  --peft_dir DIR                writes the adapters alone as a PEFT adapter directory
                                (adapter_config.json + adapter_model.safetensors, PEFT's tensor names);
  --out_dir D --peft_dir P      without --merge_lora: the frozen base goes to D and the adapter to P, whose
                                adapter_config.json names D as its base_model_name_or_path, so
                                `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(D), P)` works.
"""
from __future__ import annotations

import argparse
import sys

from mellama_jax import cli, paths
from mellama_jax.checkpoints.rundir import load_checkpoint
from mellama_jax.convert.export import convert_checkpoint_to_hf
from mellama_jax.convert.hf import is_hf_dir
from mellama_jax.convert.peft import export_peft


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt_dir", required=True,
                   help="model checkpoint directory (model_config.json + params/) or training workdir")
    p.add_argument("--step", type=int, default=None, help="training workdir only: the step to export")
    p.add_argument("--out_dir", default=None, help="HF directory to create")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="tensor dtype of the export (default: the checkpoint's parameter dtype)")
    p.add_argument("--max_shard_size", default="2GB", help="largest safetensors shard, e.g. 2GB, 500MB, 1GiB")
    p.add_argument("--overwrite", action="store_true", help="replace existing output directories")
    p.add_argument("--merge_lora", action="store_true",
                   help="fold the checkpoint's LoRA adapters into the exported base weights")
    p.add_argument("--peft_dir", default=None, help="also/only write the LoRA adapters as a PEFT directory")
    p.add_argument("--chat_template", default=None, choices=("none", "me_llama", "llama2_chat", "alpaca"),
                   help="prompt template stored as the tokenizer's chat_template (default: the SFT run's "
                        "template; none for base models)")
    p.add_argument("--eval_dir", action="append", default=None,
                   help="evaluation output directory (summary.json) for the model card's table; repeatable, "
                        "e.g. one per matching rule (default: the run workdir's eval*/ directories)")
    p.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    args = p.parse_args(argv)
    if args.out_dir is None and args.peft_dir is None:
        p.error("give --out_dir (HF model export) and/or --peft_dir (LoRA adapter export)")
    return args


def export_peft_dir(ckpt_dir: str, peft_dir: str, *, overwrite: bool, base_model: str = "",
                    step: int | None = None) -> str:
    """The LoRA adapters of `ckpt_dir` (model checkpoint or training workdir) as a PEFT adapter directory.

    base_model: recorded as the adapter's base_model_name_or_path; default: the run's init_from when that
    is a Hugging Face directory (else empty: name the base with --out_dir).
    """
    cfg, _, extras = load_checkpoint(ckpt_dir, step=step)
    if extras["adapters"] is None:
        raise ValueError(f"{ckpt_dir}: no LoRA adapters (not a LoRA run; no lora_config.json + lora/) to "
                         f"export with --peft_dir")
    reference = extras.get("base") or ""
    if not base_model and reference and is_hf_dir(reference):
        base_model = paths.as_str(reference)
    return export_peft(peft_dir, cfg, extras["lora_config"], extras["adapters"], base_model_name_or_path=base_model,
                       overwrite=overwrite)


def main(argv=None) -> int:
    return cli.run(lambda a: run(parse_args(a)), argv)


def run(args: argparse.Namespace) -> int:
    base_model = ""
    if args.out_dir is not None:
        # With --peft_dir and no --merge_lora, --out_dir receives the base the adapter applies to.
        base_only = args.peft_dir is not None and not args.merge_lora
        out = convert_checkpoint_to_hf(args.ckpt_dir, args.out_dir, dtype=args.dtype,
                                       max_shard_size=args.max_shard_size, overwrite=args.overwrite,
                                       merge_lora=args.merge_lora, base_only=base_only, step=args.step,
                                       progress=not args.no_progress, eval_dirs=args.eval_dir,
                                       chat_template="" if args.chat_template == "none" else args.chat_template)
        print(f"wrote {out}")
        if base_only:
            base_model = out  # absolute local path or gs:// URL
    if args.peft_dir is not None:
        print(f"wrote {export_peft_dir(args.ckpt_dir, args.peft_dir, overwrite=args.overwrite, base_model=base_model, step=args.step)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
