#!/usr/bin/env python3
"""Cloud TPU VM / pod launcher: every step of a run is one subcommand, and each prints its exact commands.

    python launch/tpu_pod.py create --name me13b --zone us-east5-a --project P --accelerator v5p-128
    python launch/tpu_pod.py wait   --name me13b --zone us-east5-a --project P
    python launch/tpu_pod.py setup  --name me13b --zone us-east5-a --project P    # copy code + install
    python launch/tpu_pod.py run    --name me13b --zone us-east5-a --project P -- \
        python -m mellama_jax.train --config configs/me_llama/pretrain_13b.py --workdir gs://BUCKET/me13b
    python launch/tpu_pod.py logs   --name me13b --zone us-east5-a --project P    # worker 0's log (--worker all)
    python launch/tpu_pod.py stop   --name me13b --zone us-east5-a --project P    # SIGTERM: checkpoint and exit
    python launch/tpu_pod.py delete --name me13b --zone us-east5-a --project P
    python launch/tpu_pod.py up     --name me13b --zone us-east5-a --project P --accelerator v5p-128 -- \
        python -m mellama_jax.train --config configs/me_llama/pretrain_13b.py --workdir gs://BUCKET/me13b

`--dry_run` prints the commands (one per line, shell-quoted) instead of running them. `--num_slices N`
creates a multi-slice queued resource (nodes NAME-0 ... NAME-{N-1}, joined over DCN; libtpu's megascale
variables are set by Cloud on each node) and addresses every node. On the workers, jax.distributed finds
its peers from the TPU metadata (mellama_jax.parallel.initialize_distributed), so the same command runs
unchanged on every worker. The job runs detached (nohup) so a dropped ssh session does not kill it, and is
rerun on the worker when it exits with status 75 (saved after a preemption notice; see docs/cloud_storage.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mellama_jax.planning.topology import parse_topology  # noqa: E402  (stdlib only: no JAX on the laptop)

REMOTE_DIR = "~/mellama_jax"
REMOTE_LOG = "~/mellama_run.log"
REMOTE_PID = "~/mellama_run.pid"
REMOTE_STOP = "~/mellama_run.stop"  # `stop` leaves it so the rerun loop below does not start the run again
# `python -m mellama_jax.train` exits with this status after saving for a preemption notice (SIGTERM; e.g. a TPU
# maintenance event): the worker's loop reruns it, which resumes from that checkpoint (train/stopping.py).
EXIT_PREEMPTED = 75
CODE_TARBALL = "/tmp/mellama_jax-code.tar.gz"
# What never travels to the workers: local environments, outputs, VCS data.
TAR_EXCLUDES = (".venv", ".git", "runs", "__pycache__", ".pytest_cache", "*.egg-info")
DEFAULT_RUNTIME = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
                   "v6e": "v2-alpha-tpuv6e"}


@dataclasses.dataclass(frozen=True)
class Pod:
    name: str
    zone: str
    project: str
    num_slices: int = 1

    @property
    def nodes(self) -> list[str]:
        """TPU VM node ids: one per slice (queued resources name multi-slice nodes NAME-0, NAME-1, ...)."""
        return [self.name] if self.num_slices == 1 else [f"{self.name}-{i}" for i in range(self.num_slices)]

    def where(self) -> list[str]:
        return [f"--zone={self.zone}", f"--project={self.project}"]


def cloud_accelerator(name: str) -> str:
    """gcloud's `--accelerator-type` for a topology in either spelling (v5e-256 -> v5litepod-256), from the
    planner's one table (mellama_jax/planning/topology.py); a name it does not know is a usage error."""
    try:
        return parse_topology(name).accelerator_type
    except ValueError as e:
        raise SystemExit(f"error: --accelerator: {e}") from None


def runtime_for(accelerator: str) -> str:
    family = accelerator.split("-")[0]
    if family not in DEFAULT_RUNTIME:
        raise SystemExit(f"no default --runtime_version for accelerator {accelerator!r}; pass --runtime_version")
    return DEFAULT_RUNTIME[family]


# ---------------------------------------------------------------- command builders (pure)
def create_commands(pod: Pod, accelerator: str, runtime: str, *, spot: bool = False,
                    reserved: bool = False) -> list[list[str]]:
    cmd = ["gcloud", "compute", "tpus", "queued-resources", "create", pod.name, *pod.where(),
           f"--accelerator-type={accelerator}", f"--runtime-version={runtime}"]
    if pod.num_slices == 1:
        cmd.append(f"--node-id={pod.name}")
    else:
        cmd += [f"--node-count={pod.num_slices}", f"--node-prefix={pod.name}"]
    if spot:
        cmd.append("--spot")
    if reserved:
        cmd.append("--reserved")
    return [cmd]


def describe_command(pod: Pod) -> list[str]:
    return ["gcloud", "compute", "tpus", "queued-resources", "describe", pod.name, *pod.where(),
            "--format=value(state.state)"]


def ssh_commands(pod: Pod, remote: str, worker: str = "all") -> list[list[str]]:
    return [["gcloud", "compute", "tpus", "tpu-vm", "ssh", node, *pod.where(), f"--worker={worker}",
             "--command", remote] for node in pod.nodes]


def scp_commands(pod: Pod, local: str, remote: str) -> list[list[str]]:
    return [["gcloud", "compute", "tpus", "tpu-vm", "scp", local, f"{node}:{remote}", *pod.where(), "--worker=all"]
            for node in pod.nodes]


def pack_command(repo: str) -> list[str]:
    excludes = [f"--exclude={pattern}" for pattern in TAR_EXCLUDES]
    return ["tar", "-czf", CODE_TARBALL, *excludes, "-C", repo, "."]


def install_script(extra: str = "tpu") -> str:
    return (f"mkdir -p {REMOTE_DIR} && tar -xzf {CODE_TARBALL} -C {REMOTE_DIR} && cd {REMOTE_DIR} && "
            f"(test -x .venv/bin/python || python3 -m venv .venv) && "
            f'.venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e ".[{extra}]"')


def rerun_loop(command: Sequence[str]) -> str:
    """A shell loop that reruns `command` while it exits preempted (EXIT_PREEMPTED) and nobody asked to stop."""
    return (f"while :; do {shlex.join(command)}; s=$?; "
            f"if [ $s -ne {EXIT_PREEMPTED} ] || [ -e {REMOTE_STOP} ]; then exit $s; fi; "
            f"echo \"preempted (exit {EXIT_PREEMPTED}): rerunning to resume\"; done")


def run_script(command: Sequence[str]) -> str:
    """Start `command` detached on a worker, inside the project's venv, rerun after a preemption exit; the
    loop's pid goes to REMOTE_PID."""
    return (f"cd {REMOTE_DIR} && source .venv/bin/activate && rm -f {REMOTE_STOP} && "
            f"nohup bash -c {shlex.quote(rerun_loop(command))} > {REMOTE_LOG} 2>&1 < /dev/null & echo $! > {REMOTE_PID}")


def stop_script() -> str:
    # SIGTERM, not SIGKILL: the trainer writes a checkpoint on SIGTERM before exiting. The stop file tells the
    # rerun loop that this SIGTERM is an order to stop, not a preemption to resume from.
    return f"test -f {REMOTE_PID} && touch {REMOTE_STOP} && pkill -TERM -P $(cat {REMOTE_PID}) || true"


def delete_commands(pod: Pod) -> list[list[str]]:
    return [["gcloud", "compute", "tpus", "queued-resources", "delete", pod.name, *pod.where(), "--force",
             "--quiet"]]


# ---------------------------------------------------------------- execution
class Runner:
    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def run(self, commands: list[list[str]], *, parallel: bool = False) -> None:
        """Run commands (in parallel: one per slice, all at once), or print them under --dry_run."""
        if self.dry_run:
            for cmd in commands:
                print(shlex.join(cmd))
            return
        if parallel and len(commands) > 1:
            procs = [subprocess.Popen(cmd) for cmd in commands]
            codes = [p.wait() for p in procs]
            failed = [shlex.join(c) for c, code in zip(commands, codes) if code]
            if failed:
                raise SystemExit("failed: " + "; ".join(failed))
            return
        for cmd in commands:
            subprocess.run(cmd, check=True)

    def wait_active(self, pod: Pod, timeout_s: float, poll_s: float = 30.0) -> None:
        cmd = describe_command(pod)
        if self.dry_run:
            print(shlex.join(cmd) + f"  # repeated every {poll_s:.0f}s until ACTIVE")
            return
        deadline = time.monotonic() + timeout_s
        while True:
            state = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
            print(f"{pod.name}: {state}", flush=True)
            if state == "ACTIVE":
                return
            if state in ("FAILED", "SUSPENDED"):
                raise SystemExit(f"queued resource {pod.name} is {state}")
            if time.monotonic() > deadline:
                raise SystemExit(f"queued resource {pod.name} not ACTIVE after {timeout_s:.0f}s (state {state})")
            time.sleep(poll_s)


def _train_command(args) -> list[str]:
    cmd = list(args.command)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise SystemExit(f"{args.subcommand}: give the training command after '--', e.g. -- python -m mellama_jax.train "
                         f"--config configs/me_llama/pretrain_13b.py --workdir gs://BUCKET/run")
    return cmd


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="subcommand", required=True)

    def add(name, help_text, *, accelerator=False, command=False):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--name", required=True, help="queued resource / TPU node name")
        p.add_argument("--zone", required=True)
        p.add_argument("--project", required=True)
        p.add_argument("--num_slices", type=int, default=1, help="slices joined over DCN (multi-slice)")
        p.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
        if accelerator:
            p.add_argument("--accelerator", required=True,
                           help="Cloud accelerator type, e.g. v5p-128 (TensorCores), v5litepod-256 or v5e-256 (chips)")
            p.add_argument("--runtime_version", default=None, help="TPU VM image (default: by accelerator family)")
            p.add_argument("--spot", action="store_true")
            p.add_argument("--reserved", action="store_true")
        if command:
            p.add_argument("--repo", default=".", help="local checkout to copy to the workers")
            p.add_argument("command", nargs=argparse.REMAINDER, help="-- training command run on every worker")
        return p

    add("create", "create the TPU VMs as a queued resource", accelerator=True)
    p = add("wait", "wait until the queued resource is ACTIVE")
    p.add_argument("--timeout_s", type=float, default=3600.0)
    p = add("setup", "copy the code to every worker and install it (with the [tpu] extra)")
    p.add_argument("--repo", default=".")
    add("run", "run the training command on every worker (detached)", command=True)
    p = add("logs", "stream the run's log")
    p.add_argument("--worker", default="0", help="worker index, or 'all'")
    add("stop", "send SIGTERM to the run on every worker (it checkpoints and exits)")
    add("delete", "delete the queued resource and its TPU VMs")
    p = add("up", "create + wait + setup + run", accelerator=True, command=True)
    p.add_argument("--timeout_s", type=float, default=3600.0)
    args = parser.parse_args(argv)

    pod = Pod(args.name, args.zone, args.project, args.num_slices)
    runner = Runner(args.dry_run)
    sc = args.subcommand
    if sc in ("create", "up"):
        args.accelerator = cloud_accelerator(args.accelerator)
        runtime = args.runtime_version or runtime_for(args.accelerator)
        runner.run(create_commands(pod, args.accelerator, runtime, spot=args.spot, reserved=args.reserved))
    if sc in ("wait", "up"):
        runner.wait_active(pod, args.timeout_s)
    if sc in ("setup", "up"):
        runner.run([pack_command(args.repo)])
        runner.run(scp_commands(pod, CODE_TARBALL, CODE_TARBALL), parallel=True)
        runner.run(ssh_commands(pod, install_script()), parallel=True)
    if sc in ("run", "up"):
        runner.run(ssh_commands(pod, run_script(_train_command(args))), parallel=True)
    if sc == "logs":
        runner.run(ssh_commands(pod, f"tail -n +1 -F {REMOTE_LOG}", worker=args.worker), parallel=True)
    if sc == "stop":
        runner.run(ssh_commands(pod, stop_script()), parallel=True)
    if sc == "delete":
        runner.run(delete_commands(pod))


if __name__ == "__main__":
    main(sys.argv[1:])
