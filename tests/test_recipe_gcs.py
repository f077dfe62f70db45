"""The staged recipe with its workdir on a GCS server (gcp-storage-emulator on localhost, tests/gcs_server.py).

Every stage writes into the bucket: demo data and tokenizer (written locally, uploaded), prepared inputs,
checkpoints, evaluation reports, exports, stage markers and report.md with its plot. A rerun skips every
finished stage; the stage config the report prints is read from the bucket by the training CLI.
"""
import json
import os
import subprocess
import sys

import pytest
from etils import epath

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("prepare", "pretrain", "instruct", "evaluate", "export", "report")


def _run(args):
    env = dict(os.environ)  # the GCS server's endpoint variables (set by the fixture) reach the subprocess
    env.pop("XLA_FLAGS", None)  # as a user runs it: one process, its real devices
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_recipe_with_a_gcs_workdir_runs_every_stage_and_skips_them_on_rerun(gcs):
    wd = gcs.fresh_prefix("recipe")
    cmd = ["mellama_jax.recipe", "--config", os.path.join(ROOT, "configs/demo_smoke.py"), "--workdir", wd]
    done = _run(cmd)
    assert done.returncode == 0, done.stderr[-3000:]
    root = epath.Path(wd)
    for stage in STAGES:
        assert (root / stage / "DONE.json").exists(), stage
    assert not any(p.name.endswith(".tmp") for p in root.glob("*/*")), "temporary files left in the bucket"
    export = json.loads((root / "export" / "DONE.json").read_text())
    assert export["transformers_check"]["status"] == "ok"  # the merged export, read back from the bucket
    for sub in ("hf_merged", "hf_base", "peft"):
        assert export[sub].startswith("gs://") and (epath.Path(export[sub]) / "COMMIT").exists(), sub
    report = (root / "report.md").read_text()
    assert (root / "loss_curves.png").exists() and "![loss curves](loss_curves.png)" in report

    again = _run(cmd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(f"{s}: already complete, skipped" in again.stdout for s in STAGES), again.stdout

    # The report's stage command reads its config file from the bucket.
    train_cmd = next(line for line in report.splitlines() if line.startswith("python -m mellama_jax.train"))
    assert f"--config {wd}/pretrain/config.py" in train_cmd
    dry = _run(train_cmd.split()[2:] + ["--dry_run"])
    assert dry.returncode == 0, dry.stderr[-3000:]
