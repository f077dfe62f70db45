"""The planner's printed launch flags start the training CLI on what the plan compiled.

`mellama-plan` runs as a user runs it, with one stand-in: without libtpu (make test) the step compiles for
this machine's 8 CPU devices in place of the topology's fake TPU chips (a v5litepod-8 has 8 chips, so the
mesh is the same). The flags it prints after "launch it with:" are pasted onto `python -m mellama_jax.train
--config <the same file>` (plus the user's own data flag, the tokenizer), handed to `launch/tpu_pod.py run
--dry_run`, and the training command its ssh line carries runs here with `--dry_run`, which parses them against
the locked config schema, builds the mesh on 8 devices, splits the batch and lowers the step. Its report
must match the chosen plan: mesh, micro-batch count and rows per device, remat policy, and the model the
plan was made for (the `--model` preset and the `--config.x=y` overrides travel in the flags too).
"""
import json
import os
import re
import shlex
import subprocess
import sys

import jax

from mellama_jax.commands import plan as plan_cmd
from mellama_jax.parallel import describe_mesh
from mellama_jax.planning import planner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "launch"))

import tpu_pod  # noqa: E402

CONFIG_70B = os.path.join(ROOT, "configs", "me_llama", "pretrain_70b.py")
# The user's own part of the command: the plan does not read data, the launch needs the tokenizer named.
TOKENIZER = os.path.join(ROOT, "tests", "assets", "llama2-tokenizer", "tokenizer.model")


def _plan(monkeypatch, capsys, tmp_path) -> tuple[list[str], dict, str]:
    cpu = jax.devices()
    assert len(cpu) == 8
    monkeypatch.setattr(plan_cmd, "libtpu_available", lambda: True)
    monkeypatch.setattr(planner, "fake_devices", lambda topology: cpu[:topology.num_chips])
    code = plan_cmd.main([
        "--config", CONFIG_70B, "--model", "tiny", "--topology", "v5litepod-8", "--sweep",
        "--remat", "minimal,full", "--micro_batch", "1,2",
        "--config.train.seq_len=64", "--config.train.global_batch_size=32", "--config.model.attention=xla",
        "--config.model.num_layers=3", "--json", str(tmp_path / "plan.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("launch it with: ")]
    record = json.loads((tmp_path / "plan.json").read_text())
    return shlex.split(line[len("launch it with: "):]), record, out


def test_printed_flags_launch_the_chosen_plan(monkeypatch, capsys, tmp_path):
    flags, record, out = _plan(monkeypatch, capsys, tmp_path)
    chosen = record["chosen"]
    # The sweep keeps the least recompute, then the largest micro-batch: minimal at 2 rows per chip, 2 steps.
    assert (chosen["remat_policy"], chosen["micro_batch_per_chip"], chosen["micro_batches"]) == ("minimal", 2, 2)
    assert f"on mesh {describe_mesh(chosen['mesh'])}" in out

    # Through the pod launcher as a user would: its --dry_run prints the ssh command every worker runs; the
    # training command inside it (shell-quoted by the launcher) is what runs here.
    workdir = tmp_path / "run"
    train = ["python", "-m", "mellama_jax.train", "--config", CONFIG_70B, "--workdir", str(workdir),
             f"--config.data.tokenizer={TOKENIZER}",
             # The plan is about compute; the pod config's prepared corpus (checked by --dry_run, README step 4) is
             # tests/test_data_inputs.py's subject, so this run trains on synthetic tokens of the same shape.
             "--config.data.kind=synthetic", *flags]
    tpu_pod.main(["run", "--dry_run", "--name", "me70b", "--zone", "us-east5-a", "--project", "p", "--", *train])
    ssh = shlex.split(capsys.readouterr().out.strip())
    remote = ssh[ssh.index("--command") + 1]
    # nohup bash -c '<rerun loop>': the loop (launch/tpu_pod.rerun_loop) runs the command until it is not preempted.
    loop = shlex.split(remote.split(" nohup ", 1)[1].split(" > ", 1)[0])
    assert loop[:2] == ["bash", "-c"], remote
    launched = shlex.split(loop[2].split("do ", 1)[1].split("; s=$?", 1)[0])
    assert launched == train

    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, *launched[1:], "--dry_run", "--local_device_count", "8"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (flags, r.stderr[-3000:])
    lines = [ln[len("dry run: "):] for ln in r.stdout.splitlines() if ln.startswith("dry run: ")]
    assert len(lines) == 4, r.stdout
    mesh, batch, model, _ = lines
    assert mesh == f"mesh {describe_mesh(chosen['mesh'])} on 8 cpu devices"
    planned = record["config"]
    assert re.match(rf"batch {planned['train']['global_batch_size']} x {planned['train']['seq_len']} tokens: "
                    rf"micro_batches={chosen['micro_batches']} of \d+ rows, "
                    rf"micro_batch={chosen['micro_batch_per_chip']}/device over \d+ data-parallel devices$", batch), batch
    m = planned["model"]
    assert model.startswith(f"model hidden={m['hidden_size']} layers={m['num_layers']} "
                            f"heads={m['num_heads']}/{m['num_kv_heads']} vocab={m['vocab_size']} "), model
    assert model.endswith(f"dtype={m['dtype']} attention={m['attention']} remat={chosen['remat_policy']}"), model
    assert not workdir.exists()  # a dry run writes nothing
