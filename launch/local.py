"""Run N JAX processes on this machine, joined by jax.distributed on 127.0.0.1 (local multi-host rehearsal).

    python launch/local.py --num_processes 2 --devices_per_process 4 \
        -- -m mellama_jax.train --config configs/tiny_pretrain.py --workdir runs/mp

Options: --port (default 12355), --log_dir, --timeout, --dry_run.

Everything after `--` is the Python command line of one process; each process gets
`--coordinator 127.0.0.1:PORT --num_processes N --process_id i --local_device_count K` appended (the flags
of `python -m mellama_jax.train`). --dry_run prints the exact commands instead of running them. Process i's
output goes to the terminal prefixed with [i] (and to --log_dir/process_i.log when given). If any process
fails, the others are terminated and the launcher exits with that process's status.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

# An inherited "--xla_force_host_platform_device_count" would override the per-process device count.
_FORCE_FLAG = "--xla_force_host_platform_device_count"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(argv: list[str], num_processes: int, devices_per_process: int, port: int) -> list[list[str]]:
    return [[sys.executable, *argv, "--coordinator", f"127.0.0.1:{port}", "--num_processes", str(num_processes),
             "--process_id", str(i), "--local_device_count", str(devices_per_process)]
            for i in range(num_processes)]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_FORCE_FLAG)]
    env["XLA_FLAGS"] = " ".join(flags)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _pump(i: int, proc: subprocess.Popen, log_path: str | None) -> None:
    log = open(log_path, "w") if log_path else None
    for line in proc.stdout:
        sys.stdout.write(f"[{i}] {line}")
        if log:
            log.write(line)
            log.flush()
    if log:
        log.close()


def run(cmds: list[list[str]], *, log_dir: str | None = None, timeout: float | None = None) -> int:
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    procs, pumps = [], []
    for i, cmd in enumerate(cmds):
        p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t = threading.Thread(target=_pump, args=(i, p, os.path.join(log_dir, f"process_{i}.log") if log_dir else None),
                             daemon=True)
        t.start()
        procs.append(p)
        pumps.append(t)
    deadline = time.monotonic() + timeout if timeout else None
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                status = failed[0].returncode
                break
            if deadline and time.monotonic() > deadline:
                print(f"launch/local.py: timed out after {timeout} s", file=sys.stderr)
                status = 124
                break
            time.sleep(0.1)
        else:
            status = next((p.returncode for p in procs if p.returncode), 0)
    finally:
        for p in procs:  # only the processes this launcher started
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for t in pumps:
            t.join(timeout=5)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: launch/local.py [options] -- <python args of one process>", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_processes", "-n", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=4)
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0: pick a free one)")
    parser.add_argument("--log_dir", default=None)
    parser.add_argument("--timeout", type=float, default=None, help="seconds before every process is stopped")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv[:split])
    if args.num_processes < 1 or args.devices_per_process < 1:
        parser.error("--num_processes and --devices_per_process must be >= 1")
    cmds = commands(argv[split + 1:], args.num_processes, args.devices_per_process, args.port or free_port())
    if args.dry_run:
        for cmd in cmds:
            print(shlex.join(cmd))
        return 0
    return run(cmds, log_dir=args.log_dir, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
