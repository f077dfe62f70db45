"""The recipe driver end to end on configs/demo_smoke.py: killed mid-training, rerun, finished, exported."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recipe(workdir, *extra):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the recipe runs as a user would: one process, its real devices
    env["JAX_PLATFORMS"] = "cpu"
    return [sys.executable, "-m", "mellama_jax.recipe", "--config", os.path.join(ROOT, "configs/demo_smoke.py"),
            "--workdir", str(workdir), *extra], env


def _checkpoints(workdir):
    d = os.path.join(workdir, "pretrain", "run", "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


@pytest.mark.slow
def test_recipe_killed_then_rerun_finishes_every_stage(tmp_path):
    wd = tmp_path / "run"
    cmd, env = _recipe(wd)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not _checkpoints(wd) and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    assert _checkpoints(wd), "no checkpoint was written in time"
    proc.send_signal(signal.SIGKILL)  # no chance to save: the rerun must continue from the checkpoint
    proc.wait()
    metrics = wd / "pretrain" / "run" / "metrics.jsonl"
    logged_before_kill = len(open(metrics).readlines()) if metrics.exists() else 0
    killed_at = max(_checkpoints(wd))
    assert killed_at < 8
    assert os.path.exists(wd / "prepare" / "DONE.json")
    assert not os.path.exists(wd / "pretrain" / "DONE.json")

    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prepare: already complete, skipped" in done.stdout

    # Training resumed from a checkpoint instead of starting over: the rerun's first logged step is past the
    # first log step (2, also the first checkpoint), and it runs on to the last step.
    rerun = [json.loads(line) for line in open(metrics).readlines()[logged_before_kill:]]
    steps = [r["step"] for r in rerun if r["kind"] == "train"]
    assert steps and steps[0] > 2 and steps == sorted(set(steps)) and steps[-1] == 8, steps
    for stage in ("prepare", "pretrain", "instruct", "evaluate", "export", "report"):
        assert os.path.exists(wd / stage / "DONE.json"), stage
    export = json.load(open(wd / "export" / "DONE.json"))
    assert export["transformers_check"]["status"] == "ok"  # the merged export loads in transformers, generates
    for sub in ("hf_merged", "hf_base", "peft"):
        assert os.path.isdir(export[sub])
    # The exports' model cards carry the runs' own numbers (metrics.jsonl, the evaluate stage's summaries).
    for sub, stage, kind in (("hf_merged", "instruct", "instruction-tuned"),
                             ("hf_base", "pretrain", "continually pretrained")):
        card = open(os.path.join(export[sub], "README.md")).read()
        rows = [json.loads(line) for line in open(wd / stage / "run" / "metrics.jsonl")]
        last = [r for r in rows if r["kind"] == "train"][-1]
        assert kind in card and f"{last['loss']:.4f} (step {last['step']})" in card, sub
        summary = json.load(open(wd / "evaluate" / ("tuned" if stage == "instruct" else "base") / "summary.json"))
        for task, t in summary["tasks"].items():
            assert f"| {task} | {t['primary_metric']} | {t['metrics'][t['primary_metric']]:.4f} |" in card, task
    base_card = open(os.path.join(export["hf_base"], "README.md")).read()
    pretrain_rows = [json.loads(line) for line in open(wd / "pretrain" / "run" / "metrics.jsonl")]
    data = [r for r in pretrain_rows if r["kind"] == "data"][-1]
    components = [k.removeprefix("tokens/") for k in data if k.startswith("tokens/")]
    assert components and all(f"| {c} | " in base_card and f"{int(data['tokens/' + c]):,}" in base_card
                              for c in components)
    report = open(wd / "report.md").read()
    for heading in ("Loss curves", "Data mixture", "Evaluation", "Export", "Reproduce"):
        assert heading in report
    assert os.path.exists(wd / "loss_curves.png")

    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("already complete, skipped") == 6
