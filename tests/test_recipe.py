"""The recipe driver end to end on configs/demo_smoke.py, its workdir on a GCS server (gcp-storage-emulator on
localhost, tests/gcs_server.py) as on a pod: killed mid-training, rerun, finished, exported, rerun again.

Every stage writes into the bucket: demo data and tokenizer (written locally, uploaded), checkpoints,
evaluation reports, exports, stage markers, report.md and its plot. The stage config the report prints is read
from the bucket by the training CLI. (Local workdirs: test_recipe_init_from.py runs the whole recipe, and
test_cli.py interrupts and resumes it.)
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from etils import epath

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recipe(workdir, *extra):
    env = dict(os.environ)  # the GCS server's endpoint variables (set by the fixture) reach the subprocess
    env.pop("XLA_FLAGS", None)  # the recipe runs as a user would: one process, its real devices
    env["JAX_PLATFORMS"] = "cpu"
    return [sys.executable, "-m", "mellama_jax.recipe", "--config", os.path.join(ROOT, "configs/demo_smoke.py"),
            "--workdir", str(workdir), *extra], env


def _checkpoints(workdir):
    d = workdir / "pretrain" / "run" / "checkpoints"
    # A step counts once orbax committed it (on object storage: its commit_success file).
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / "commit_success.txt").exists()) \
        if d.exists() else []


def _read(p) -> str:
    return epath.Path(p).read_text()


@pytest.mark.slow
def test_recipe_on_gcs_killed_then_rerun_finishes_every_stage(gcs):
    wd = epath.Path(gcs.fresh_prefix("recipe"))
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
    logged_before_kill = len(_read(metrics).splitlines()) if metrics.exists() else 0
    killed_at = max(_checkpoints(wd))
    assert killed_at < 8
    assert (wd / "prepare" / "DONE.json").exists()
    assert not (wd / "pretrain" / "DONE.json").exists()

    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prepare: already complete, skipped" in done.stdout

    # Training resumed from a checkpoint instead of starting over: the rerun's first logged step is past the
    # first log step (2, also the first checkpoint), and it runs on to the last step.
    rerun = [json.loads(line) for line in _read(metrics).splitlines()[logged_before_kill:]]
    steps = [r["step"] for r in rerun if r["kind"] == "train"]
    assert steps and steps[0] > 2 and steps == sorted(set(steps)) and steps[-1] == 8, steps
    for stage in ("prepare", "pretrain", "instruct", "evaluate", "export", "report"):
        assert (wd / stage / "DONE.json").exists(), stage
    assert not any(p.name.endswith(".tmp") for p in wd.glob("*/*")), "temporary files left in the bucket"
    export = json.loads(_read(wd / "export" / "DONE.json"))
    assert export["transformers_check"]["status"] == "ok"  # the merged export loads in transformers, generates
    for sub in ("hf_merged", "hf_base", "peft"):
        assert export[sub].startswith("gs://") and (epath.Path(export[sub]) / "COMMIT").exists(), sub
    # The exports' model cards carry the runs' own numbers (metrics.jsonl, the evaluate stage's summaries).
    for sub, stage, kind in (("hf_merged", "instruct", "instruction-tuned"),
                             ("hf_base", "pretrain", "continually pretrained")):
        card = _read(epath.Path(export[sub]) / "README.md")
        rows = [json.loads(line) for line in _read(wd / stage / "run" / "metrics.jsonl").splitlines()]
        last = [r for r in rows if r["kind"] == "train"][-1]
        assert kind in card and f"{last['loss']:.4f} (step {last['step']})" in card, sub
        summary = json.loads(_read(wd / "evaluate" / ("tuned" if stage == "instruct" else "base") / "summary.json"))
        for task, t in summary["tasks"].items():  # both matching rules, and the file the task ran on
            metric, by_rule = t["primary_metric"], t["metrics_by_matching"]
            assert (f"| {task} | `{os.path.basename(t['data_file'])}` | {metric} | {by_rule['mibe'][metric]:.4f} | "
                    f"{by_rule['strict'][metric]:.4f} |") in card, task
    base_card = _read(epath.Path(export["hf_base"]) / "README.md")
    pretrain_rows = [json.loads(line) for line in _read(wd / "pretrain" / "run" / "metrics.jsonl").splitlines()]
    data = [r for r in pretrain_rows if r["kind"] == "data"][-1]
    components = [k.removeprefix("tokens/") for k in data if k.startswith("tokens/")]
    assert components and all(f"| {c} | " in base_card and f"{int(data['tokens/' + c]):,}" in base_card
                              for c in components)
    report = _read(wd / "report.md")
    for heading in ("Loss curves", "Data mixture", "Evaluation", "Export", "Reproduce"):
        assert heading in report
    assert (wd / "loss_curves.png").exists() and "![loss curves](loss_curves.png)" in report

    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("already complete, skipped") == 7

    # The report's stage command reads its config file from the bucket (the CLI downloads it first).
    train_cmd = next(line for line in report.splitlines() if line.startswith("python -m mellama_jax.train"))
    assert f"--config {wd}/pretrain/config.py" in train_cmd
    dry = subprocess.run([sys.executable, *train_cmd.split()[1:], "--dry_run"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
