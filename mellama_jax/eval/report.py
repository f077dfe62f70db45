"""Writing an evaluation run: per-example JSONL, a JSON summary and a markdown table.

Layout of the output directory:

    <out_dir>/summary.json          run settings (matching mode, template, decoding) + metrics per task
    <out_dir>/report.md             the same as a markdown table
    <out_dir>/examples/<task>.jsonl one line per example: prompt, output, prediction, gold, correct, scores

Everything is written into a temporary sibling directory that is renamed to <out_dir> at the end, so an
interrupted run never leaves a directory that looks complete.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Sequence

import jax

from mellama_jax.checkpoints.fileio import local_output_dir
from mellama_jax.eval.runner import EvalConfig, TaskResult

MATCHING_TEXT = {
    "mibe": "mibe (Me-LLaMA's own scoring rules, per task: docs/evaluation.md)",
    "strict": "strict (the output must lead with exactly one choice / well-formed answer)",
}


def summary_dict(results: Sequence[TaskResult], cfg: EvalConfig, model_name: str) -> dict[str, Any]:
    return {
        "model": model_name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "data_dir": cfg.data_dir,
            "matching": cfg.matching,
            "template": cfg.template,
            "mode": cfg.mode,
            "decoding": "sampled (self-consistency)" if cfg.sampling else "greedy",
            "max_new_tokens": cfg.max_new_tokens,
            "length_normalize": cfg.length_normalize,
            "limit": cfg.limit,
            "shots": cfg.num_fewshot,
            "fewshot_seeds": cfg.fewshot_seeds if cfg.num_fewshot else 0,
            "self_consistency": cfg.self_consistency,
            "temperature": cfg.temperature,
            "seed": cfg.seed,
            "bertscore_model": cfg.bertscore_model,
            "bartscore_model": cfg.bartscore_model,
            "bartscore_weights": cfg.bartscore_weights,
            "spacy_model": cfg.spacy_model,
        },
        "tasks": {
            r.task.name: {
                "family": r.task.family,
                "data_file": r.data_file,
                "mode": r.mode,
                "num_examples": len(r.examples),
                "num_no_prediction": sum(e.prediction is None for e in r.examples),
                "num_truncated_prompts": sum(e.truncated for e in r.examples),
                "primary_metric": r.task.primary_metric,
                "metrics": r.metrics,
                "metrics_by_matching": r.metrics_by_matching,
                "protocol": r.protocol,
                "std_by_matching": r.std_by_matching,
                "per_seed_metrics": list(r.per_seed),
                "seconds": round(r.seconds, 2),
            } for r in results
        },
    }


def markdown_table(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    lines = [
        f"# Evaluation of {summary['model']}",
        "",
        f"At most {s['max_new_tokens']} new tokens, template `{s['template']}`; the protocol of each number is "
        "in the `protocol` column (few-shot: mean ± std over seeds).",
        f"Answer matching: {MATCHING_TEXT[s['matching']]}.",
    ]
    if s["mode"] == "loglik":
        norm = "length-normalised " if s["length_normalize"] else ""
        lines.append(f"Multiple-choice tasks scored by {norm}log-likelihood of each choice (no generation).")
    lines.append("The same outputs are scored both ways: `mibe` = Me-LLaMA's reference rule (comparable with "
                 "the paper), `strict` = the corrected scorer; other metrics are those of the run's matching.")
    if any(t["family"] == "summarization" for t in summary["tasks"].values()):
        lines.append("Summaries: " + "; ".join(_model_score_note(s, *score) for score in MODEL_SCORES) + ".")
    lines += ["", "| task | family | n | protocol | metric | mibe | strict | other metrics | no prediction |",
              "|---|---|---:|---|---|---:|---:|---|---:|"]
    for name, t in summary["tasks"].items():
        metrics = dict(t["metrics"])
        primary = t["primary_metric"]
        metrics.pop(primary)
        metrics.pop("no_prediction_rate", None)
        both = t.get("metrics_by_matching") or {s["matching"]: t["metrics"]}
        std = t.get("std_by_matching") or {}
        cells = " | ".join(_cell(both, std, m, primary) for m in ("mibe", "strict"))
        others = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.startswith("f1["))
        lines.append(f"| {name} | {t['family']} | {t['num_examples']} | {t.get('protocol', '')} | {primary} | "
                     f"{cells} | {others} | {t['num_no_prediction']} |")
    return "\n".join(lines) + "\n"


# The reference's model-based summary scores: (name, metric key, setting holding the local model, flag).
MODEL_SCORES = (("BERTScore F1", "bert_score_f1", "bertscore_model", "--bertscore_model"),
                ("BARTScore", "bart_score", "bartscore_model", "--bartscore_model"))


def _model_score_note(settings: dict, name: str, key: str, setting: str, flag: str) -> str:
    model = settings.get(setting)
    return f"{name} (`{key}`) with `{model}`" if model else f"{name} not computed (pass {flag} DIR)"


def _cell(both: dict, std: dict, matching: str, metric: str) -> str:
    if matching not in both:
        return "-"
    value = f"{both[matching][metric]:.4f}"
    return value + (f" ± {std[matching][metric]:.4f}" if matching in std else "")


def write_report(out_dir: str, results: Sequence[TaskResult], cfg: EvalConfig, model_name: str, *,
                 overwrite: bool = False) -> dict[str, Any]:
    summary = summary_dict(results, cfg, model_name)
    # Multi-host: every process ran the same evaluation (SPMD); all enter the atomic directory together
    # (it synchronises them), and process 0 alone writes the files.
    with local_output_dir(out_dir, overwrite=overwrite) as tmp:  # gs://: staged, uploaded, COMMIT marker last
        if jax.process_index() != 0:
            return summary
        os.makedirs(os.path.join(tmp, "examples"))
        for r in results:
            with open(os.path.join(tmp, "examples", f"{r.task.name}.jsonl"), "w", encoding="utf-8") as f:
                for e in r.examples:
                    f.write(json.dumps(e.to_json(), ensure_ascii=False) + "\n")
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(markdown_table(summary))
    return summary
