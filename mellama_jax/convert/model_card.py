"""The model card (README.md) of a Hugging Face export: what the model is, how it was trained, how it scored.

Facts come from the training run, never typed by hand: the run's config (base model, data mixture,
optimizer, steps, LoRA) and its metrics.jsonl (training/held-out loss, tokens seen per mixture component),
summarised by `checkpoints.run_record.training_run` when a workdir is exported to a model checkpoint (stored there as
training_run.json, so the card can be written later from the checkpoint alone), and the evaluation
summaries (eval/report.py's summary.json) passed to the export or found in the workdir's eval*/ dirs.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from mellama_jax import paths as path_layer
from mellama_jax.config import ModelConfig
from mellama_jax.model import params as P

EVAL_SUMMARY = "summary.json"  # in an evaluation output directory (eval/report.py)
# sha256 of Meta's LLaMA-2 tokenizer.model (tests/assets/llama2-tokenizer/README.md)
LLAMA2_TOKENIZER_SHA256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"
LLAMA2_NOTICE = ("Llama 2 is licensed under the LLAMA 2 Community License, Copyright (c) Meta Platforms, Inc. "
                 "All Rights Reserved.")
MATCHING_RULES = ("mibe", "strict")  # eval/report.py MATCHING_TEXT


# ---------------------------------------------------------------- gathering the facts
def find_eval_summaries(directory: str | None) -> list[str]:
    """summary.json files of evaluation runs inside `directory` (its eval*/ subdirectories, any depth 2)."""
    if not directory:
        return []
    pattern = [os.path.join(directory, "eval*", EVAL_SUMMARY), os.path.join(directory, "eval*", "*", EVAL_SUMMARY)]
    return sorted({p for pat in pattern for p in path_layer.glob(pat)})


def load_eval_summaries(summaries: Iterable[str]) -> list[dict]:
    """Each summary.json (or evaluation output directory holding one), local or on object storage."""
    out = []
    for p in summaries:
        path = os.path.join(p, EVAL_SUMMARY) if path_layer.resolve(p).is_dir() else p
        out.append(json.loads(path_layer.resolve(path).read_text()))
    return out


# ---------------------------------------------------------------- writing the card
def model_card(cfg: ModelConfig, *, run: dict | None, evals: list[dict], chat_template: str | None,
               lora: str, tokenizer_sha256: str | None, model_name: str) -> str:
    """README.md text. lora: "merged" (adapters folded into the weights), "base" (the frozen base of a
    PEFT adapter export), or "" (full-parameter training / no LoRA)."""
    config = (run or {}).get("config") or {}
    llama2_vocab = tokenizer_sha256 == LLAMA2_TOKENIZER_SHA256
    base = config.get("init_from") or ""
    meta = ["---", f"license: {'llama2' if llama2_vocab else 'other'}", "library_name: transformers",
            "pipeline_tag: text-generation", "language:", "- en", "tags:", "- medical", "- clinical", "- llama",
            "- mellama_jax"]
    if base and not os.path.isabs(base):
        meta.append(f"base_model: {base}")
    meta.append("---")
    kind = {"sft": "instruction-tuned", "mixture": "continually pretrained"}.get(
        (config.get("data") or {}).get("kind"), "trained")
    lines = meta + ["", f"# {model_name}", "",
                    f"A LLaMA-2-architecture causal language model ({P.count_params(cfg) / 1e6:,.1f}M parameters, "
                    f"{cfg.num_layers} layers, hidden size {cfg.hidden_size}, vocabulary {cfg.vocab_size:,}, "
                    f"context {cfg.max_position_embeddings:,} tokens), {kind} with "
                    f"mellama_jax (a JAX/Flax reproduction of the Me-LLaMA recipe) "
                    f"and exported to transformers' LLaMA format."]
    lines += ["", "## Training", ""] + _training_section(config, run, lora)
    lines += ["", "## Evaluation", ""] + _evaluation_section(evals)
    lines += ["", "## How to use", ""] + _usage_section(chat_template)
    lines += ["", "## Intended use and limitations", ""] + _limitations(kind)
    lines += ["", "## License", ""] + _license(llama2_vocab)
    return "\n".join(lines) + "\n"


def _training_section(config: dict, run: dict | None, lora: str) -> list[str]:
    if not run:
        return ["No training run is recorded with this checkpoint (it was not exported from a mellama_jax "
                "training workdir), so its training data and recipe are unknown here."]
    train, optim, data = config.get("train") or {}, config.get("optim") or {}, config.get("data") or {}
    metrics = run.get("metrics") or {}
    step = run.get("step")
    tokens_per_step = int(train.get("global_batch_size", 0)) * int(train.get("seq_len", 0))
    rows = [("base model (init_from)", f"`{config.get('init_from')}`" if config.get("init_from")
             else "random initialisation")]
    rows.append(("objective", {"sft": "instruction tuning (loss on responses only)",
                               "mixture": "continual pretraining (next-token loss on the data mixture)",
                               "synthetic": "synthetic token data (smoke test)"}.get(data.get("kind"),
                                                                                     str(data.get("kind")))))
    rows.append(("steps", f"{step:,} of {int(train.get('steps', step)):,} planned" if step is not None else "?"))
    if tokens_per_step:
        rows.append(("tokens per step", f"{train['global_batch_size']} sequences × {train['seq_len']:,} tokens = "
                                        f"{tokens_per_step:,} (packed rows, padding included)"))
        if step is not None:
            rows.append(("tokens processed", f"{tokens_per_step * step:,}"))
    if optim:
        rows.append(("optimizer", f"AdamW, peak learning rate {optim.get('learning_rate')}, {optim.get('schedule')} "
                                  f"schedule, warmup {optim.get('warmup_ratio')}, β1 {optim.get('b1')}, β2 "
                                  f"{optim.get('b2')}, weight decay {optim.get('weight_decay')}, gradient "
                                  f"clipping {optim.get('clip_norm')}"))
    lora_cfg = train.get("lora") or {}
    if lora_cfg.get("rank"):
        how = {"merged": "merged into these weights", "base": "NOT in these weights (this is the frozen base; "
               "the adapter is exported separately in PEFT format)"}.get(lora, "")
        desc = (f"LoRA rank {lora_cfg['rank']}, alpha {lora_cfg.get('alpha')}, dropout {lora_cfg.get('dropout')}, "
                f"targets {lora_cfg.get('targets')}")
        rows.append(("fine-tuning", f"{desc}; {how}" if how else desc))
    else:
        rows.append(("fine-tuning", "all parameters"))
    first, last = metrics.get("first_train") or {}, metrics.get("train") or {}
    if "loss" in last:
        rows.append(("training loss", f"{first.get('loss', float('nan')):.4f} (step {first.get('step')}) → "
                                      f"{last['loss']:.4f} (step {last.get('step')})"))
    heldout = {k: v for k, v in (metrics.get("eval") or {}).items() if k not in ("step", "kind", "time")}
    if heldout:
        rows.append(("held-out loss", ", ".join(f"{k} {v:.4f}" for k, v in sorted(heldout.items())) +
                     f" (step {metrics['eval'].get('step')})"))
    out = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    out += [""] + _mixture_section(data, metrics.get("data") or {})
    return out


def _mixture_section(data: dict, stats: dict) -> list[str]:
    mixture = data.get("mixture") or {}
    if data.get("kind") == "sft":
        instruct = mixture.get("instruct") or {}
        sources = [s.get("path") or s.get("name") or str(s) for s in instruct.get("sources") or []
                   if isinstance(s, dict)]
        seen = sum(v for k, v in stats.items() if k.startswith("tokens/"))
        names = ", ".join(f"`{os.path.basename(s)}`" for s in sources)
        return [f"Instruction data: {len(sources)} source(s) ({names}), template `{instruct.get('template', 'me_llama')}`"
                + (f"; {int(seen):,} tokens seen (from metrics.jsonl)." if seen else ".")]
    components = mixture.get("components") or []
    if not components:
        return []
    unit = mixture.get("weight_unit", "tokens")
    out = [f"Data mixture (weights in {unit}; tokens and shares as achieved by the data loader, from metrics.jsonl):",
           "", "| component | weight | tokens seen | share |", "|---|---:|---:|---:|"]
    for c in components:
        name = c.get("name", "?")
        tokens, share = stats.get(f"tokens/{name}"), stats.get(f"share/{name}")
        out.append(f"| {name} | {c.get('weight')} | {f'{int(tokens):,}' if tokens is not None else '—'} | "
                   f"{f'{share:.3f}' if share is not None else '—'} |")
    return out


def _evaluation_section(evals: list[dict]) -> list[str]:
    """Every score the summaries hold: each run scores its outputs under both matching rules
    (`metrics_by_matching`); older summaries carry only their own rule's `metrics`."""
    if not evals:
        return ["Not evaluated as part of this export. `mellama-evaluate` runs the Me-LLaMA benchmark suite "
                "(every output is scored under both answer-matching rules, `mibe` and `strict`)."]
    scores: dict[str, dict[str, dict]] = {}  # rule -> task -> metrics
    entries: dict[str, dict] = {}  # task -> its summary entry (data file, metric, n)
    for s in evals:
        rule = (s.get("settings") or {}).get("matching", "?")
        for task, t in (s.get("tasks") or {}).items():
            entries.setdefault(task, t)
            for r, metrics in (t.get("metrics_by_matching") or {rule: t.get("metrics", {})}).items():
                scores.setdefault(r, {}).setdefault(task, metrics)
    rules = [r for r in MATCHING_RULES if r in scores] + sorted(set(scores) - set(MATCHING_RULES))
    first = evals[0].get("settings") or {}
    data_dirs = sorted({d for s in evals if (d := (s.get("settings") or {}).get("data_dir"))})
    out = [f"Zero-shot, greedy decoding, at most {first.get('max_new_tokens')} new tokens, template "
           f"`{first.get('template')}`. Answer matching: `mibe` = Me-LLaMA's loose rule (the first choice found "
           f"anywhere in the output); `strict` = the output must lead with exactly one well-formed answer."]
    if data_dirs:
        out += ["", "Test data: " + ", ".join(f"`{d}`" for d in data_dirs) + " (each task's file below)."]
    out += ["", "| task | data | metric | " + " | ".join(f"score ({r})" for r in rules) + " | n |",
            "|---|---|---|" + "---:|" * len(rules) + "---:|"]
    for task in sorted(entries):
        t = entries[task]
        metric = t["primary_metric"]
        cells = []
        for r in rules:
            value = (scores[r].get(task) or {}).get(metric)
            cells.append(f"{value:.4f}" if isinstance(value, (int, float)) else "—")
        data = os.path.basename(t["data_file"]) if t.get("data_file") else "—"
        out.append(f"| {task} | `{data}` | {metric} | " + " | ".join(cells) + f" | {t['num_examples']} |")
    missing = [r for r in MATCHING_RULES if r not in scores]
    if missing:
        out += ["", f"Not scored with the {', '.join(f'`{m}`' for m in missing)} matching rule."]
    return out


def _usage_section(chat_template: str | None) -> list[str]:
    out = ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
           'tok = AutoTokenizer.from_pretrained("PATH")', 'model = AutoModelForCausalLM.from_pretrained("PATH")']
    if chat_template:
        out += ['messages = [{"role": "user", "content": "What is the first-line therapy for asthma?"}]',
                "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
                "return_dict=True)",
                "out = model.generate(**ids, max_new_tokens=128, do_sample=False)",
                "print(tok.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True))", "```", "",
                f"The tokenizer carries the `{chat_template}` prompt template this model was instruction-tuned "
                f"with, as a chat template: `apply_chat_template` gives exactly the token ids of training "
                f"(each turn `<s>` + prompt + answer + `</s>`). Prompting with raw text instead of the template "
                f"gives a model it was not trained on (Me-LLaMA users saw echoed prompts)."]
    else:
        out += ['ids = tok("Discharge summary: 72 y/o M with CHF", return_tensors="pt")',
                "out = model.generate(**ids, max_new_tokens=64, do_sample=False)", "print(tok.decode(out[0]))",
                "```", "", "A base (not instruction-tuned) model: it continues text; it does not follow "
                "instructions."]
    out += ["", "The tokenizer files reproduce the sentencepiece ids the model was trained on, including runs of "
            "spaces (tokenizer.json; see the project's docs/tokenizer.md). A literal `<s>`/`</s>` in your text "
            "is read as a control token by transformers unless you pass `split_special_tokens=True`."]
    return out


def _limitations(kind: str) -> list[str]:
    return [
        "For research on medical and clinical language processing. It is **not** a medical device and must not "
        "be used for diagnosis, treatment or any decision about a patient without qualified human review.",
        "",
        "- It can produce fluent, confident and wrong medical statements (hallucinated findings, doses, "
        "citations); benchmark scores above do not measure safety or factuality in practice.",
        "- Training text (biomedical literature, clinical notes, general text) carries its biases, outdated "
        "guidance and coverage gaps; performance on populations, languages and note styles outside it is unknown.",
        "- Clinical notes used for training may contain protected health information despite de-identification; "
        "models trained on credentialed data (e.g. MIMIC, PhysioNet's data use agreement) may not be shareable.",
        "- English only was evaluated." + (" It was not aligned for safety (no RLHF)." if kind == "instruction-tuned"
                                           else ""),
    ]


def _license(llama2_vocab: bool) -> list[str]:
    who = ("The base model is Meta's LLaMA-2" if llama2_vocab
           else "If the base model is Meta's LLaMA-2 (or derived from it)")
    return [f"{who}: use and redistribution are subject to the Llama 2 Community License Agreement and Meta's "
            f"Acceptable Use Policy (https://ai.meta.com/llama/license/).", "", f"> {LLAMA2_NOTICE}", "",
            "Training data keep their own licenses and data use agreements."]
