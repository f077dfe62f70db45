"""Stopping a training run early loses nothing: Ctrl-C (SIGINT) and a preemption notice (SIGTERM) save the step
in progress, and a rerun of the same command continues bitwise as if never stopped (per-step losses, params).

One uninterrupted run is the reference; each signal lands mid-run (once the first of 150 steps is logged), the
command exits with its status (130 interrupted, 75 preempted), and its workdir holds a checkpoint at
the step where it stopped (not the last periodic one: checkpoint.every_steps=0).
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_pretrain.py")
STEPS = 150
DEADLINE_S = 20


def _command(workdir):
    return [sys.executable, "-m", "mellama_jax.train", "--config", TINY, "--workdir", str(workdir),
            f"--config.train.steps={STEPS}", "--config.checkpoint.every_steps=0", "--config.eval.every_steps=0",
            "--config.log.every_steps=1", "--config.log.progress_bar=false", "--config.log.tensorboard=false",
            f"--config.checkpoint.preemption_deadline_s={DEADLINE_S}"]


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's laptop
    return env


def _losses(workdir) -> dict[int, float]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"}


def _steps(workdir) -> list[int]:
    return sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())


def _params(workdir):
    import jax

    import mellama_jax
    return jax.tree.leaves(jax.device_get(mellama_jax.load(str(workdir)).params))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    wd = tmp_path_factory.mktemp("reference") / "w"
    r = subprocess.run(_command(wd), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return _losses(wd), _params(wd)


def _stop_mid_run(workdir, signum):
    """Start the run, send `signum` once it logs that training starts; (exit status, stderr, seconds to exit)."""
    proc = subprocess.Popen(_command(workdir), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # the loop's signal handlers are in place when it logs this line
        seen.append(line)
        if " params on mesh " in line:
            break
    assert proc.poll() is None, "".join(seen)[-3000:]
    metrics, start = workdir / "metrics.jsonl", time.monotonic()
    # Some steps in: the first step's loss is logged (a fixed delay lands before step 1 on a loaded machine).
    while not (metrics.exists() and '"kind": "train"' in metrics.read_text()):
        assert proc.poll() is None and time.monotonic() - start < 300, "".join(seen)[-3000:]
        time.sleep(0.05)
    proc.send_signal(signum)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + err, time.monotonic() - sent


def _assert_rerun_is_bitwise(workdir, reference, stopped_at):
    losses, params = reference
    r = subprocess.run(_command(workdir), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = _losses(workdir)
    assert sorted(got) == list(range(1, STEPS + 1))  # every step logged once: before the stop, then after
    assert got == losses, [(n, got[n], losses[n]) for n in sorted(got) if got[n] != losses[n]][:3]
    for a, b in zip(_params(workdir), params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert 0 < stopped_at < STEPS


def test_ctrl_c_saves_the_interrupted_step_and_the_rerun_is_bitwise(tmp_path, reference):
    wd = tmp_path / "w"
    status, err, _ = _stop_mid_run(wd, signal.SIGINT)
    assert status == 130, err[-3000:]
    assert "Traceback" not in err and "interrupted" in err, err[-3000:]
    steps = _steps(wd)
    assert len(steps) == 1 and steps[0] == max(_losses(wd)), (steps, err[-2000:])  # the step it stopped at
    _assert_rerun_is_bitwise(wd, reference, steps[0])


def test_preemption_notice_saves_within_the_deadline_and_the_rerun_is_bitwise(tmp_path, reference):
    wd = tmp_path / "w"
    status, err, seconds = _stop_mid_run(wd, signal.SIGTERM)
    assert status == 75, err[-3000:]  # EXIT_PREEMPTED: launchers rerun on it
    assert "Traceback" not in err, err[-3000:]
    assert seconds < DEADLINE_S, seconds
    steps = _steps(wd)
    assert len(steps) == 1 and steps[0] == max(_losses(wd)), (steps, err[-2000:])
    _assert_rerun_is_bitwise(wd, reference, steps[0])
