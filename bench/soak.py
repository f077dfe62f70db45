"""Soak of checkpoint recovery (issue #28): random faults into a tiny pretraining, rerun until done, bitwise check.

    python bench/soak.py --iterations 20 [--seed 0] [--backends local,gcs] [--budget_s 3600]

Each iteration trains configs/tiny_pretrain.py (12 steps, a checkpoint every 4) with the training command, in a
fresh workdir on local disk or on the GCS test server (tests/gcs_server.py, gcp-storage-emulator on localhost),
and injects ONE fault drawn from the seeded generator:
    sigkill        SIGKILL at a random moment of the run
    sigkill-save   SIGKILL while a checkpoint is being written (as soon as a step's temporary directory appears)
    sigterm        SIGTERM (a preemption notice) at a random moment: the run saves and exits 75
    damage         the finished run's newest step gets one file kind (tests/test_checkpoint_damage.py STEP_FILES)
                   missing, empty, cut or garbled
    503            (gcs only) the server answers the next K requests 503 at a random moment of the run
then reruns the same command until it ends with "finished at step 12" (at most --max_reruns times) and compares
the final params (`load_training_params`) and every step's loss in metrics.jsonl (the last record of a step
wins, as a rerun re-logs the steps it redoes) bitwise with an uninterrupted run. It prints one line per
iteration, the fault of every failure, every rerun that recovered but printed a traceback, and
"recovered bitwise k/N". Exit status 0 only when all N recovered bitwise with no traceback.
Not in CI: each iteration starts two or more training processes (~20-60 s each on a loaded 2-core machine).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import jax
import numpy as np
from etils import epath

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from gcs_server import GcsServer  # noqa: E402
from test_checkpoint_damage import KINDS, STEP_FILES, damage  # noqa: E402  (the damage kinds, described once)

from mellama_jax.checkpoints import rundir  # noqa: E402
from mellama_jax.train.stopping import EXIT_PREEMPTED  # noqa: E402

STEPS = 12
OVERRIDES = {"train.steps": STEPS, "checkpoint.every_steps": 4, "checkpoint.keep": 3, "eval.every_steps": 0,
             "log.every_steps": 1, "log.progress_bar": False,
             "log.peak_flops_per_device": 1e11}  # a given peak: no matmul timed at start
FAULTS_ANY = ("sigkill", "sigkill-save", "sigterm", "damage")
FAULTS_GCS = ("503",)


def command(workdir):
    return [sys.executable, "-m", "mellama_jax.train", "--config", "configs/tiny_pretrain.py", "--workdir", workdir,
            *[f"--config.{k}={v}" for k, v in OVERRIDES.items()]]


def env():
    return dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest", JAX_PLATFORMS="cpu")


def losses(workdir):
    out = {}
    for line in epath.Path(workdir, "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "train":
            out[r["step"]] = r["loss"]
    return out


def names_under(gcs, workdir):
    """Every file name under workdir/checkpoints, asked of the server directly on gs:// (no client cache)."""
    if not workdir.startswith("gs://"):
        root = os.path.join(workdir, "checkpoints")
        return [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs] + \
            [os.path.relpath(d, root) for d, _, _ in os.walk(root)]
    bucket, prefix = workdir[len("gs://"):].split("/", 1)
    query = urllib.parse.urlencode({"prefix": f"{prefix}/checkpoints/"})
    try:
        with urllib.request.urlopen(f"{gcs.url}/storage/v1/b/{bucket}/o?{query}", timeout=5) as r:
            return [item["name"][len(prefix) + len("/checkpoints/"):] for item in json.load(r).get("items", [])]
    except OSError:
        return []


def save_in_flight(names, on_gcs):
    """A step being written: orbax's temporary directory (local disk), or on object storage (no renames there)
    a step with files but no commit marker yet."""
    if not on_gcs:
        return any("tmp" in n for n in names)
    steps = {n.split("/", 1)[0] for n in names if "/" in n}
    return any(not any(n == f"{s}/commit_success.txt" for n in names) for s in steps)


def run_with_fault(workdir, fault, rng, gcs, ref_seconds):
    """Start the training command and inject `fault` while it runs; returns (returncode, stderr, note)."""
    proc = subprocess.Popen(command(workdir), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    start, note = time.monotonic(), ""
    if fault == "sigkill-save":
        while proc.poll() is None and not save_in_flight(names_under(gcs, workdir), workdir.startswith("gs://")):
            time.sleep(0.05 if workdir.startswith("gs://") else 0.01)  # the test server is single-threaded
        note = f"after {time.monotonic() - start:.1f}s (a save in flight)"
        proc.send_signal(signal.SIGKILL)
    elif fault in ("sigkill", "sigterm", "503"):
        at = rng.uniform(0.2, 1.0) * ref_seconds
        while proc.poll() is None and time.monotonic() - start < at:
            time.sleep(0.05)
        if fault == "503":
            count = rng.randint(3, 20)
            gcs.fail_next(count)
            note = f"{count}x503 at {at:.1f}s"
        else:
            proc.send_signal(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
            note = f"at {at:.1f}s"
    _, err = proc.communicate()
    if fault == "503":
        gcs.fail_next(0)  # whatever of the burst was left unanswered ends here
    return proc.returncode, err, note


def rerun_until_done(workdir, max_reruns):
    """Rerun the command until it finishes; returns (reruns, tracebacks of runs that exited 0 or 75, last stderr)."""
    tracebacks, err = [], ""
    for n in range(1, max_reruns + 1):
        r = subprocess.run(command(workdir), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
        err = r.stderr
        if r.returncode in (0, EXIT_PREEMPTED) and "Traceback" in r.stderr:
            tracebacks.append(r.stderr[r.stderr.index("Traceback"):][:1500])
        if r.returncode == 0 and f"finished at step {STEPS}" in r.stdout:
            return n, tracebacks, err
    return None, tracebacks, err


def same_params(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b)), strict=True))


def iteration(i, backend, fault, rng, gcs, tmp, ref, ref_seconds, max_reruns):
    workdir = gcs.fresh_prefix(f"soak{i}") if backend == "gcs" else os.path.join(tmp, f"soak{i}")
    if fault == "damage":
        subprocess.run(command(workdir), cwd=ROOT, env=env(), capture_output=True, check=True, timeout=900)
        name, kind = rng.choice(list(STEP_FILES)), rng.choice(KINDS)
        damage(f"{workdir}/checkpoints/{STEPS}", name, kind)
        note = f"{name} {kind}"
    else:
        code, err, note = run_with_fault(workdir, fault, rng, gcs, ref_seconds)
        note += f", exit {code}"
        if fault in ("503", "sigterm") and code not in (0, EXIT_PREEMPTED) and "Traceback" in err:
            note += " with a traceback"
    reruns, tracebacks, err = rerun_until_done(workdir, max_reruns)
    if reruns is None:
        return False, note, tracebacks, f"not finished after {max_reruns} reruns: {err[-800:]}"
    _, params, _ = rundir.load_training_params(workdir)
    got = losses(workdir)
    problems = []
    if not same_params(params, ref[0]):
        problems.append("final params differ")
    if got != ref[1]:
        problems.append(f"losses differ at steps {sorted(s for s in ref[1] if got.get(s) != ref[1][s])}")
    return not problems, f"{note}, {reruns} rerun(s)", tracebacks, "; ".join(problems)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", default="local,gcs", help="comma-separated: local, gcs (alternating)")
    p.add_argument("--max_reruns", type=int, default=4)
    p.add_argument("--budget_s", type=float, default=3600, help="stop starting iterations after this many seconds")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    backends = args.backends.split(",")
    gcs = GcsServer().start() if "gcs" in backends else None
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            ref_dir = os.path.join(tmp, "reference")
            subprocess.run(command(ref_dir), cwd=ROOT, env=env(), capture_output=True, check=True, timeout=900)
            ref_seconds = time.monotonic() - t0
            ref = (rundir.load_training_params(ref_dir)[1], losses(ref_dir))
            print(f"uninterrupted run: {ref_seconds:.0f}s, {len(ref[1])} steps", flush=True)
            done, ok, failures, traced = 0, 0, [], []
            for i in range(args.iterations):
                if time.monotonic() - began > args.budget_s:
                    print(f"time budget {args.budget_s:.0f}s spent: stopping after {done} iterations", flush=True)
                    break
                backend = backends[i % len(backends)]
                fault = rng.choice(FAULTS_ANY + (FAULTS_GCS if backend == "gcs" else ()))
                t = time.monotonic()
                good, note, tracebacks, problem = iteration(i, backend, fault, rng, gcs, tmp, ref, ref_seconds,
                                                            args.max_reruns)
                done += 1
                ok += good and not tracebacks
                status = "ok" if good and not tracebacks else "FAILED"
                print(f"[{i}] {backend:5s} {fault:12s} {note}: {status} ({time.monotonic() - t:.0f}s)"
                      + (f" {problem}" if problem else ""), flush=True)
                if not good:
                    failures.append(f"[{i}] {backend} {fault} {note}: {problem}")
                for tb in tracebacks:
                    traced.append(f"[{i}] {backend} {fault} {note}: recovered but printed:\n{tb}")
            for line in failures + traced:
                print("FAILURE " + line)
            print(f"recovered bitwise {ok}/{done}")
            return 0 if ok == done and done else 1
    finally:
        if gcs is not None:
            gcs.stop()


if __name__ == "__main__":
    sys.exit(main())
