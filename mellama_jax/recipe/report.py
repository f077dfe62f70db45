"""`report.md` for a recipe run: loss curves, achieved mixture, evaluation table, throughput, commands."""
from __future__ import annotations

import json
import os
import statistics
import tempfile
from typing import Iterable

from mellama_jax import paths
from mellama_jax.recipe.commands import EVALUATED, evaluate_command
from mellama_jax.recipe.stages import is_done, read_summary, write_text_atomic


def read_metrics(path: str) -> list[dict]:
    """Records of a metrics.jsonl (missing file -> empty list; a torn last line from a kill is skipped)."""
    if not paths.resolve(path).exists():
        return []
    out = []
    with paths.open_file(path, "r") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _series(records: Iterable[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    latest: dict[int, float] = {}
    for r in records:
        if r.get("kind") == kind and isinstance(r.get(key), (int, float)):
            latest[int(r["step"])] = float(r[key])  # a resumed run may log a step twice: keep the last
    for s in sorted(latest):
        steps.append(s)
        values.append(latest[s])
    return steps, values


def plot_losses(curves: dict[str, list[dict]], out_png: str) -> str:
    """One panel per stage: training loss, plus held-out loss per mixture component when logged."""
    import matplotlib  # noqa: PLC0415 - slow to import; needed only for the report's plots
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - slow to import; needed only for the report's plots

    fig, axes = plt.subplots(1, max(len(curves), 1), figsize=(6 * max(len(curves), 1), 4), squeeze=False)
    for ax, (title, records) in zip(axes[0], curves.items()):
        steps, loss = _series(records, "train", "loss")
        ax.plot(steps, loss, label="train loss")
        eval_keys = sorted({k for r in records if r.get("kind") == "eval" for k in r
                            if k.endswith("loss") and k not in ("loss",)})
        for key in eval_keys:
            s, v = _series(records, "eval", key)
            ax.plot(s, v, marker="o", linestyle="--", label=f"held-out {key}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def throughput(records: list[dict]) -> dict[str, float]:
    """Median tokens/s and MFU over the logged training steps (the first log, with compile, excluded)."""
    train = [r for r in records if r.get("kind") == "train"]
    out = {}
    for key in ("tokens_per_sec", "mfu"):
        vals = [float(r[key]) for r in train[1:] if isinstance(r.get(key), (int, float))]
        if vals:
            out[key] = statistics.median(vals)
    return out


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4f}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def eval_comparison(base: dict, tuned: dict) -> str:
    """Rows task/metric/matching rule with base and tuned scores side by side: every score the two
    summaries (mellama_jax.eval) hold, under both matching rules."""
    base, tuned = _task_metrics(base), _task_metrics(tuned)
    rows = []
    for task in sorted(set(base) | set(tuned)):
        b, t = base.get(task, {}), tuned.get(task, {})
        for metric, rule in sorted(set(b) | set(t), key=lambda mr: (mr[0], RULE_ORDER.get(mr[1], 9), mr[1])):
            bv, tv = b.get((metric, rule)), t.get((metric, rule))
            rows.append([task, metric, rule, bv if bv is not None else "–", tv if tv is not None else "–"])
    return markdown_table(["task", "metric", "matching", "base (pretrained)", "instruction-tuned"], rows)


RULE_ORDER = {"mibe": 0, "strict": 1}


def _task_metrics(summary: dict) -> dict[str, dict[tuple[str, str], float]]:
    """task -> (metric, matching rule) -> value, from each task's `metrics_by_matching` (its `metrics`
    under the run's own rule when a summary has no per-rule scores)."""
    rule = (summary.get("settings") or {}).get("matching", "?")
    out = {}
    for name, t in summary.get("tasks", {}).items():
        by_rule = t.get("metrics_by_matching") or {rule: t.get("metrics", {})}
        out[name] = {(k, r): v for r, metrics in by_rule.items() for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not k.startswith("f1[")}
    return out


def _eval_data(*summaries: dict) -> str:
    """Where the evaluation's test sets came from: the data directory and each task's file."""
    dirs = sorted({d for s in summaries if (d := (s.get("settings") or {}).get("data_dir"))})
    files = sorted({os.path.basename(t["data_file"]) for s in summaries
                    for t in (s.get("tasks") or {}).values() if t.get("data_file")})
    where = ", ".join(f"`{d}`" for d in dirs) or "(data directory not recorded)"
    return f"Test data: {where}" + (f" — files {', '.join(f'`{f}`' for f in files)}" if files else "") + "."


def mixture_section(prepare: dict, pretrain_records: list[dict], targets: dict[str, float]) -> str:
    """Target vs achieved token share per domain: in the prepared corpus and in what training consumed."""
    corpus_tokens = {}
    corpus = prepare.get("corpus") or {}
    for name, comp in (corpus.get("components") or {}).items():
        tokens = (comp.get("train") or {}).get("tokens") if isinstance(comp, dict) else None
        if isinstance(tokens, (int, float)):
            corpus_tokens[name] = tokens
    shares = {}
    for r in pretrain_records:
        for k, v in r.items():
            if k.startswith("share/") and isinstance(v, (int, float)):
                shares[k.split("/", 1)[1]] = v  # the last logged value: cumulative over the run
    total_target = sum(targets.values()) or 1.0
    rows = []
    for name in targets:
        rows.append([name, targets[name] / total_target, shares.get(name, "–"),
                     int(corpus_tokens[name]) if name in corpus_tokens else "–"])
    return markdown_table(["domain", "target token share", "achieved share (tokens trained on)",
                           "tokens in prepared corpus"], rows)


def write_recipe_report(recipe) -> str:
    """Write <workdir>/report.md (+ loss_curves.png) from the stage outputs; return its path."""

    wd = recipe.workdir
    summaries = {s: read_summary(wd, s) for s in ("prepare", "pretrain", "instruct", "evaluate", "export")
                 if is_done(wd, s)}
    curves = {}
    for stage in ("pretrain", "instruct"):
        records = read_metrics(os.path.join(wd, stage, "run", "metrics.jsonl"))
        if records:
            curves[stage] = records
    png = None
    if curves:  # matplotlib writes local files: plot into a temporary file, then copy it into the workdir
        png = os.path.join(wd, "loss_curves.png")
        with tempfile.TemporaryDirectory(prefix="mellama-plot-") as tmp:
            local_png = plot_losses(curves, os.path.join(tmp, "loss_curves.png"))
            paths.resolve(local_png).copy(paths.resolve(png), overwrite=True)

    targets = {c["name"]: float(c["weight"]) for c in recipe.c.mixture.to_dict().get("components", [])}
    lines = ["# Me-LLaMA recipe report", "",
             f"Work directory: `{wd}`", ""]
    if png:
        lines += ["## Loss curves", "", f"![loss curves]({os.path.basename(png)})", ""]
    lines += ["## Data mixture (biomedical : clinical : general)", "",
              mixture_section(summaries.get("prepare", {}), curves.get("pretrain", []), targets), ""]
    lines += ["## Training", ""]
    rows = []
    for stage in ("pretrain", "instruct"):
        s = summaries.get(stage)
        if not s:
            continue
        tp = throughput(curves.get(stage, []))
        heldout = {k: v for k, v in s.get("heldout", {}).items()}
        rows.append([stage, s.get("step", "–"), s.get("train", {}).get("loss", "–"),
                     ", ".join(f"{k} {v:.3f}" for k, v in sorted(heldout.items())) or "–",
                     tp.get("tokens_per_sec", "–"), tp.get("mfu", "–"), s.get("seconds", "–")])
    lines += [markdown_table(["stage", "steps", "final train loss", "held-out", "tokens/s (median)",
                              "MFU (median)", "wall s"], rows), ""]
    ev = summaries.get("evaluate")
    if ev:
        settings = ev.get("tuned", {}).get("settings", {})
        lines += ["## Evaluation (MIBE tasks)", "",
                  f"Zero-shot, greedy, at most {settings.get('max_new_tokens')} new tokens, template "
                  f"`{settings.get('template')}`. Every output is scored under both answer-matching rules: `mibe` "
                  f"= Me-LLaMA's rule (comparable with the paper), `strict` = the corrected scorer.",
                  _eval_data(ev.get("base", {}), ev.get("tuned", {})), "",
                  eval_comparison(ev.get("base", {}), ev.get("tuned", {})), ""]
    ex = summaries.get("export")
    if ex:
        lines += ["## Export", "",
                  f"- merged Hugging Face model: `{ex.get('hf_merged')}`",
                  f"- base Hugging Face model: `{ex.get('hf_base')}`",
                  f"- PEFT adapter (on the base): `{ex.get('peft')}`", ""]
        chk = ex.get("transformers_check") or {}
        if chk.get("status") == "ok":
            lines += ["transformers `AutoModelForCausalLM` loaded the merged export and generated greedily:", "",
                      "```", chk["prompt"] + chk["generated"], "```", ""]
        elif chk:
            lines += [f"transformers check: {chk.get('status')}", ""]
    seconds = {s: f"{v['seconds']:.1f}" if isinstance(v.get("seconds"), (int, float)) else "–"
               for s, v in summaries.items()}
    lines += ["## Stage times (s)", "", markdown_table(list(seconds), [list(seconds.values())]), ""]
    lines += ["## Reproduce", "", "```bash", recipe.command or "make demo",
              "# stage by stage, with the same tools (each stage's resolved config is <stage>/config.py):",
              *(f"python -m mellama_jax.train --config {wd}/{s}/config.py --workdir {wd}/{s}/run"
                for s in ("pretrain", "instruct")),
              *(evaluate_command(recipe, name, os.path.join(wd, "eval_again", name)) for name in EVALUATED),
              f"mellama-convert-jax --ckpt_dir {wd}/instruct/model --out_dir {wd}/hf_again --merge_lora",
              "```", ""]
    path = os.path.join(wd, "report.md")
    write_text_atomic(path, "\n".join(lines))
    return path
