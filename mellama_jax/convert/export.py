"""Any of our checkpoints (a model checkpoint directory or a training workdir) -> a Hugging Face directory.

The weights go through `hf.save_hf_checkpoint`; the export also gets a model card from the training run and
its evaluations (`model_card.py`) and the run's chat template (`data/templates.py`).
"""
from __future__ import annotations

import logging
import os

from mellama_jax import paths
from mellama_jax.checkpoints import run_record
from mellama_jax.checkpoints.rundir import load_checkpoint
from mellama_jax.convert import mapping, model_card
from mellama_jax.convert.hf import HFCheckpointError, parse_size, progress_bar, save_hf_checkpoint
from mellama_jax.data.templates import get_template, hf_chat_template
from mellama_jax.data.tokenizer import MODEL_FILE, Tokenizer
from mellama_jax.model.lora import merge_lora as merge

log = logging.getLogger(__name__)

# The one case an exported tokenizer cannot reproduce through transformers' own mechanisms (docs/tokenizer.md).
LITERAL_SPECIAL_TOKENS_WARNING = (
    "%s: transformers reads a literal <s>, </s> or <unk> typed in raw text as the control token, where training "
    "(sentencepiece) read it as text; pass split_special_tokens=True to AutoTokenizer calls on untrusted text")


def convert_checkpoint_to_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *, dtype=None,
                             max_shard_size: int | str = "2GB", overwrite: bool = False,
                             merge_lora: bool = False, base_only: bool = False, step: int | None = None,
                             progress: bool = True, chat_template: str | None = None,
                             eval_dirs: list[str] | None = None) -> str:
    """Our model checkpoint directory, or a training workdir (latest step unless `step`) -> HF directory.

    A checkpoint carrying LoRA adapters must say what to export: `merge_lora=True` folds W + scale·A·B into
    the weights; `base_only=True` writes the frozen base alone, the base for the PEFT adapter that
    `mellama_jax.convert.peft.export_peft` writes (mellama-convert-jax --peft_dir).

    The export also gets a model card (README.md, model_card.py) from the training run recorded with the
    checkpoint and the evaluation summaries in `eval_dirs` (default: the run workdir's eval*/ dirs), and the
    tokenizer carries the run's SFT template as a Jinja chat_template. chat_template: a template name
    (templates.TEMPLATE_NAMES) to use instead, or "" for none; None: the run's (instruction-tuned runs only).
    """
    if paths.resolve(out_dir).exists() and not overwrite:
        raise FileExistsError(f"{paths.as_str(out_dir)}: output directory already exists; pass "
                              f"overwrite=True (--overwrite) to replace it")
    if merge_lora and base_only:
        raise ValueError("merge_lora and base_only exclude each other (merged weights or the bare base)")
    parse_size(max_shard_size)  # validate before restoring
    if chat_template:
        get_template(chat_template)
    cfg, params, extras = load_checkpoint(ckpt_dir, step=step)
    run = run_record.run_of(extras)
    template = run_record.chat_template_name(run) if chat_template is None else (chat_template or None)
    if eval_dirs is None:
        eval_dirs = model_card.find_eval_summaries((run or {}).get("workdir"))
    tok_dir = extras["tokenizer_dir"]
    sha = Tokenizer.load(tok_dir).sha256 if tok_dir and paths.resolve(paths.join(tok_dir, MODEL_FILE)).is_file() else None
    lora = "merged" if merge_lora else ("base" if base_only and extras["adapters"] is not None else "")
    card = model_card.model_card(cfg, run=run, evals=model_card.load_eval_summaries(eval_dirs),
                                 chat_template=template, tokenizer_sha256=sha, lora=lora,
                                 model_name=os.path.basename(os.path.abspath(os.fspath(out_dir))))
    if extras["adapters"] is not None and not base_only:
        if not merge_lora:
            raise HFCheckpointError(f"{ckpt_dir}: holds LoRA adapters; pass merge_lora=True (--merge_lora) to "
                                    f"fold them into the exported weights, or export them with --peft_dir")
        params = merge(cfg, extras["lora_config"], params, extras["adapters"])
    if tok_dir:
        log.warning(LITERAL_SPECIAL_TOKENS_WARNING, paths.as_str(out_dir))
    with progress_bar(progress, "write HF tensors", out_dir, total=len(mapping.hf_tensor_names(cfg))) as on_tensor:
        return save_hf_checkpoint(out_dir, cfg, params, dtype=dtype, max_shard_size=max_shard_size,
                                  tokenizer_dir=tok_dir, overwrite=overwrite, on_tensor=on_tensor,
                                  chat_template=hf_chat_template(template) if template else None, model_card=card)
