"""Soak of checkpoint recovery (issue #28): random faults into a tiny pretraining, rerun until done, bitwise check.

    python bench/soak.py --iterations 100 [--seed 0] [--backends local,gcs] [--budget_s 3600]

Each iteration trains configs/tiny_pretrain.py (12 steps, a checkpoint every 4) with the training command, in a
fresh workdir on local disk or on the GCS test server (tests/gcs_server.py, gcp-storage-emulator on localhost),
and injects ONE fault drawn from the seeded generator:
    sigkill        SIGKILL at a random moment of the run
    sigkill-save   SIGKILL while a checkpoint is being written (as soon as a step's temporary directory appears)
    sigterm        SIGTERM (a preemption notice) at a random moment: the run saves and exits 75
    damage         the finished run's newest step gets one file kind (tests/test_checkpoint_damage.py STEP_FILES)
                   missing, empty, cut or garbled
    503            (gcs only) the server answers the next K (3-20) requests 503 at a random moment of the run
A random moment is drawn in one of two phases, measured on the uninterrupted run: start-up (process start to the
"training ... from step" log line: imports, data, checkpoint directory, model) with probability 1/4, uniform over
its length from the process start; else the training phase (that line to the exit: steps, saves, metrics),
uniform over its length after the faulty run's own "training" line. A run that meets a SIGTERM or a 503 burst
must not print a traceback, and one that meets a 503 burst must ride it out (exit 0): otherwise the iteration
fails even if the rerun recovers.
then reruns the same command until it ends with "finished at step 12" (at most --max_reruns times) and compares
the final params (`load_training_params`) and every step's loss in metrics.jsonl (the last record of a step
wins, as a rerun re-logs the steps it redoes) bitwise with an uninterrupted run. It prints one line per
iteration, the fault of every failure, every rerun that recovered but printed a traceback, and
"recovered bitwise k/N". Exit status 0 only when all N recovered bitwise with no traceback.
Not in CI: each iteration starts two or more training processes. They share one JAX compilation cache
(JAX_COMPILATION_CACHE_DIR in the soak's temporary directory, filled by the uninterrupted run), so a restart
skips XLA compilation; start-up is then mostly Python imports.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
TRAINING_LINE = " from step "  # in the loop's "training N of M params on mesh ... from step A to B" log line


def command(workdir):
    return [sys.executable, "-m", "mellama_jax.train", "--config", "configs/tiny_pretrain.py", "--workdir", workdir,
            *[f"--config.{k}={v}" for k, v in OVERRIDES.items()]]


def env(cache_dir):
    # jax 0.10 config names; compile time 0 and entry size -1 (no size limit): every executable is cached
    return dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION="highest", JAX_PLATFORMS="cpu",
                JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


class Training:
    """The training command as a child process whose stderr is read as it comes, so the moment training starts
    (the loop's log line) is known."""

    def __init__(self, workdir, cache_dir):
        self.start = time.monotonic()
        self.proc = subprocess.Popen(command(workdir), cwd=ROOT, env=env(cache_dir), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.training_at = None  # seconds after start
        self.err, self.out = [], []
        self.started = threading.Event()
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True)]
        for r in self._readers:
            r.start()

    def _read(self, stream, lines):
        for line in stream:
            lines.append(line)
            if TRAINING_LINE in line and self.training_at is None:
                self.training_at = time.monotonic() - self.start
                self.started.set()
        self.started.set()  # ended without training (a crash): nobody waits for the line any longer

    def wait(self, timeout=900):
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for r in self._readers:
            r.join()
        return code, "".join(self.out), "".join(self.err)


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


def run_with_fault(workdir, fault, rng, gcs, ref_phases, cache_dir):
    """Start the training command and inject `fault` while it runs; returns (returncode, stdout, stderr, note)."""
    run = Training(workdir, cache_dir)
    proc, start, note = run.proc, run.start, ""
    if fault == "sigkill-save":
        while proc.poll() is None and not save_in_flight(names_under(gcs, workdir), workdir.startswith("gs://")):
            time.sleep(0.05 if workdir.startswith("gs://") else 0.01)  # the test server is single-threaded
        note = f"after {time.monotonic() - start:.1f}s (a save in flight)"
        proc.send_signal(signal.SIGKILL)
    elif fault in ("sigkill", "sigterm", "503"):
        startup_s, training_s = ref_phases
        if rng.random() < 0.25:
            phase, at = "start-up", rng.uniform(0, startup_s)
            deadline = start + at
        else:
            phase, at = "training", rng.uniform(0, training_s)
            run.started.wait(900)
            deadline = time.monotonic() + at
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if fault == "503":
            count = rng.randint(3, 20)
            gcs.fail_next(count)
            note = f"{count}x503 at {phase}+{at:.1f}s"
        else:
            proc.send_signal(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
            note = f"at {phase}+{at:.1f}s"
    code, out, err = run.wait()
    if fault == "503":
        left = gcs.fail_next(0)  # whatever of the burst was left unanswered ends here
        note += f" ({left} unanswered: the run had ended)" if left else ""
    return code, out, err, note


def rerun_until_done(workdir, max_reruns, cache_dir):
    """Rerun the command until it finishes; returns (reruns, tracebacks any rerun printed, last stderr)."""
    tracebacks, err = [], ""
    for n in range(1, max_reruns + 1):
        r = subprocess.run(command(workdir), cwd=ROOT, env=env(cache_dir), capture_output=True, text=True,
                           timeout=900)
        err = r.stderr
        if "Traceback" in r.stderr:
            tracebacks.append(r.stderr[r.stderr.index("Traceback"):][:1500])
        if r.returncode == 0 and f"finished at step {STEPS}" in r.stdout:
            return n, tracebacks, err
    return None, tracebacks, err


def same_params(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b)), strict=True))


def iteration(i, backend, fault, rng, gcs, tmp, ref, ref_phases, max_reruns):
    cache_dir = os.path.join(tmp, "jax_cache")
    workdir = gcs.fresh_prefix(f"soak{i}") if backend == "gcs" else os.path.join(tmp, f"soak{i}")
    problems, tracebacks, code, out = [], [], None, ""
    if fault == "damage":
        subprocess.run(command(workdir), cwd=ROOT, env=env(cache_dir), capture_output=True, check=True, timeout=900)
        name, kind = rng.choice(list(STEP_FILES)), rng.choice(KINDS)
        damage(f"{workdir}/checkpoints/{STEPS}", name, kind)
        note = f"{name} {kind}"
    else:
        code, out, err, note = run_with_fault(workdir, fault, rng, gcs, ref_phases, cache_dir)
        note += f", exit {code}"
        # A SIGTERM is a preemption notice (save, exit 75; 0 if the run had ended; -15 before the loop installs
        # its handler, during start-up)
        # and a 503 burst is to be ridden out (exit 0): neither may end in a traceback.
        if fault in ("503", "sigterm") and "Traceback" in err:
            note += " with a traceback"
            tracebacks.append(err[err.index("Traceback"):][-1500:])
        if fault == "503" and code != 0:
            problems.append(f"the run that met the 503 burst exited {code}: {err.strip()[-300:]}")
        if fault == "sigterm" and code not in (0, EXIT_PREEMPTED, -signal.SIGTERM):
            problems.append(f"the run that got SIGTERM exited {code}: {err.strip()[-300:]}")
    if code == 0 and f"finished at step {STEPS}" in out:
        reruns = 0  # the fault did not stop the run (a 503 burst ridden out, a signal after the end)
    else:
        reruns, rerun_tracebacks, err = rerun_until_done(workdir, max_reruns, cache_dir)
        tracebacks += rerun_tracebacks
    if reruns is None:
        return False, note, tracebacks, "; ".join(problems + [f"not finished after {max_reruns} reruns: {err[-800:]}"])
    _, params, _ = rundir.load_training_params(workdir)
    got = losses(workdir)
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
            cache_dir = os.path.join(tmp, "jax_cache")
            ref_dir = os.path.join(tmp, "reference")
            compiling = Training(ref_dir, cache_dir)  # fills the compilation cache; timed below, cached
            code, _, err = compiling.wait()
            compiling_s = time.monotonic() - compiling.start
            if code != 0:
                raise SystemExit(f"the uninterrupted run failed (exit {code}):\n{err[-2000:]}")
            shutil.rmtree(ref_dir)
            timed = Training(ref_dir, cache_dir)
            code, _, err = timed.wait()
            ref_seconds = time.monotonic() - timed.start
            if code != 0 or timed.training_at is None:
                raise SystemExit(f"the uninterrupted run failed (exit {code}):\n{err[-2000:]}")
            ref_phases = (timed.training_at, ref_seconds - timed.training_at)
            ref = (rundir.load_training_params(ref_dir)[1], losses(ref_dir))
            print(f"uninterrupted run: {compiling_s:.0f}s compiling, {ref_seconds:.0f}s with the compilation "
                  f"cache ({ref_phases[0]:.0f}s start-up, {ref_phases[1]:.1f}s training), {len(ref[1])} steps",
                  flush=True)
            done, ok, failures, traced, per_fault = 0, 0, [], [], {}
            for i in range(args.iterations):
                if time.monotonic() - began > args.budget_s:
                    print(f"time budget {args.budget_s:.0f}s spent: stopping after {done} iterations", flush=True)
                    break
                backend = backends[i % len(backends)]
                fault = rng.choice(FAULTS_ANY + (FAULTS_GCS if backend == "gcs" else ()))
                t = time.monotonic()
                good, note, tracebacks, problem = iteration(i, backend, fault, rng, gcs, tmp, ref, ref_phases,
                                                            args.max_reruns)
                done += 1
                ok += good and not tracebacks
                status = "ok" if good and not tracebacks else "FAILED"
                tally = per_fault.setdefault(f"{backend} {fault}", [0, 0])
                tally[0] += good and not tracebacks
                tally[1] += 1
                print(f"[{i}] {backend:5s} {fault:12s} {note}: {status} ({time.monotonic() - t:.0f}s)"
                      + (f" {problem}" if problem else ""), flush=True)
                if not good:
                    failures.append(f"[{i}] {backend} {fault} {note}: {problem}")
                for tb in tracebacks:
                    traced.append(f"[{i}] {backend} {fault} {note}: a run printed:\n{tb}")
            for line in failures + traced:
                print("FAILURE " + line)
            print("per fault (ok/iterations): " + ", ".join(f"{k} {a}/{n}" for k, (a, n) in sorted(per_fault.items())))
            print(f"runs that printed a traceback: {len(traced)}; wall time {time.monotonic() - began:.0f}s")
            print(f"recovered bitwise {ok}/{done}")
            return 0 if ok == done and done else 1
    finally:
        if gcs is not None:
            gcs.stop()


if __name__ == "__main__":
    sys.exit(main())
