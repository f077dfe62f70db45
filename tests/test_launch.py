"""Launch scripts: the exact commands their --dry_run prints, and the SLURM path run for real on CPU.

The SLURM test runs launch/gpu_slurm.sbatch with a stand-in `srun` that starts the tasks on this machine
with the environment SLURM gives each task; the tasks then form one JAX cluster through
mellama_jax.parallel.initialize_distributed -> jax.distributed's own SLURM detection.
"""
import os
import shlex
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "launch"))

import gpu_slurm  # noqa: E402
import tpu_pod  # noqa: E402

POD = ["--name", "me13b", "--zone", "us-east5-a", "--project", "proj"]
WHERE = "--zone=us-east5-a --project=proj"
TRAIN = ["python", "-m", "mellama_jax.train", "--config", "configs/me_llama/pretrain_13b.py",
         "--workdir", "gs://bucket/me13b"]


def _dry(capsys, argv):
    # --dry_run goes before "--": everything after it is the training command.
    tpu_pod.main(argv[:1] + ["--dry_run"] + argv[1:])
    return capsys.readouterr().out.strip().splitlines()


def test_create_single_and_multi_slice(capsys):
    assert _dry(capsys, ["create", *POD, "--accelerator", "v5p-128", "--spot"]) == [
        f"gcloud compute tpus queued-resources create me13b {WHERE} --accelerator-type=v5p-128 "
        f"--runtime-version=v2-alpha-tpuv5 --node-id=me13b --spot"]
    assert _dry(capsys, ["create", *POD, "--accelerator", "v5litepod-256", "--num_slices", "2",
                         "--runtime_version", "v2-alpha-tpuv5-lite"]) == [
        f"gcloud compute tpus queued-resources create me13b {WHERE} --accelerator-type=v5litepod-256 "
        f"--runtime-version=v2-alpha-tpuv5-lite --node-count=2 --node-prefix=me13b"]


def test_setup_copies_code_and_installs_on_every_worker(capsys):
    install = ("mkdir -p ~/mellama_jax && tar -xzf /tmp/mellama_jax-code.tar.gz -C ~/mellama_jax && cd ~/mellama_jax "
               "&& (test -x .venv/bin/python || python3 -m venv .venv) && .venv/bin/pip install -q --upgrade pip "
               "&& .venv/bin/pip install -q -e \".[tpu]\"")
    assert _dry(capsys, ["setup", *POD, "--repo", "/src/mellama"]) == [
        "tar -czf /tmp/mellama_jax-code.tar.gz --exclude=.venv --exclude=.git --exclude=runs --exclude=__pycache__ "
        "--exclude=.pytest_cache '--exclude=*.egg-info' -C /src/mellama .",
        f"gcloud compute tpus tpu-vm scp /tmp/mellama_jax-code.tar.gz me13b:/tmp/mellama_jax-code.tar.gz {WHERE} "
        f"--worker=all",
        f"gcloud compute tpus tpu-vm ssh me13b {WHERE} --worker=all --command {shlex.quote(install)}"]


def test_run_logs_stop_delete(capsys):
    loop = (f"while :; do {shlex.join(TRAIN)}; s=$?; if [ $s -ne 75 ] || [ -e ~/mellama_run.stop ]; then exit $s; fi; "
            f"echo \"preempted (exit 75): rerunning to resume\"; done")  # rerun after a preemption exit
    run = ("cd ~/mellama_jax && source .venv/bin/activate && rm -f ~/mellama_run.stop && nohup bash -c "
           + shlex.quote(loop) + " > ~/mellama_run.log 2>&1 < /dev/null & echo $! > ~/mellama_run.pid")
    assert _dry(capsys, ["run", *POD, "--", *TRAIN]) == [
        f"gcloud compute tpus tpu-vm ssh me13b {WHERE} --worker=all --command {shlex.quote(run)}"]
    assert _dry(capsys, ["logs", *POD]) == [
        f"gcloud compute tpus tpu-vm ssh me13b {WHERE} --worker=0 --command 'tail -n +1 -F ~/mellama_run.log'"]
    assert _dry(capsys, ["stop", *POD, "--num_slices", "2"]) == [
        f"gcloud compute tpus tpu-vm ssh me13b-{i} {WHERE} --worker=all --command "
        f"'test -f ~/mellama_run.pid && touch ~/mellama_run.stop && pkill -TERM -P $(cat ~/mellama_run.pid) || true'"
        for i in range(2)]
    assert _dry(capsys, ["delete", *POD]) == [
        f"gcloud compute tpus queued-resources delete me13b {WHERE} --force --quiet"]


def test_up_runs_every_stage_in_order(capsys):
    lines = _dry(capsys, ["up", *POD, "--accelerator", "v5p-64", "--num_slices", "2", "--", *TRAIN])
    kinds = [ln.split(" --")[0] for ln in lines]
    assert kinds == ["gcloud compute tpus queued-resources create me13b",
                     "gcloud compute tpus queued-resources describe me13b",
                     "tar -czf /tmp/mellama_jax-code.tar.gz",
                     "gcloud compute tpus tpu-vm scp /tmp/mellama_jax-code.tar.gz me13b-0:/tmp/mellama_jax-code.tar.gz",
                     "gcloud compute tpus tpu-vm scp /tmp/mellama_jax-code.tar.gz me13b-1:/tmp/mellama_jax-code.tar.gz",
                     "gcloud compute tpus tpu-vm ssh me13b-0",
                     "gcloud compute tpus tpu-vm ssh me13b-1",
                     "gcloud compute tpus tpu-vm ssh me13b-0",
                     "gcloud compute tpus tpu-vm ssh me13b-1"]
    assert "nohup bash -c" in lines[-1] and "python -m mellama_jax.train" in lines[-1]


def test_run_without_command_is_an_error():
    with pytest.raises(SystemExit, match="training command after '--'"):
        tpu_pod.main(["run", *POD, "--dry_run"])


def test_slurm_submit_dry_run(capsys):
    assert gpu_slurm.main(["--nodes", "4", "--partition", "a100", "--time", "48:00:00", "--dry_run", "--",
                           "--config", "configs/me_llama/pretrain_13b.py", "--workdir", "/shared/runs/me13b"]) == 0
    assert capsys.readouterr().out.strip() == (
        "sbatch --job-name=mellama --nodes=4 --gpus-per-node=8 --ntasks-per-node=8 --partition=a100 "
        "--time=48:00:00 launch/gpu_slurm.sbatch --config configs/me_llama/pretrain_13b.py "
        "--workdir /shared/runs/me13b")


def test_sbatch_script_dry_run_prints_srun_line():
    env = dict(os.environ, MELLAMA_DRY_RUN="1", MELLAMA_REPO="/shared/mellama")
    out = subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu_slurm.sbatch"), "--config", "c.py",
                          "--workdir", "/shared/runs/a b"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "srun --kill-on-bad-exit=1 --export=ALL /shared/mellama/.venv/bin/python -m mellama_jax.train "
        "--config c.py --workdir /shared/runs/a\\ b")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sbatch_forms_a_jax_cluster_from_slurm_environment(tmp_path):
    """Two tasks started the way srun starts them join one JAX cluster and all-gather across processes."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # Stand-in for srun: strip its options, start SLURM_NTASKS copies of the program with per-task variables.
    (bindir / "srun").write_text(textwrap.dedent("""\
        #!/bin/bash
        while [[ "$1" == --* ]]; do shift; done
        pids=()
        for ((i = 0; i < SLURM_NTASKS; i++)); do
          SLURM_PROCID=$i SLURM_LOCALID=$i "$@" > "$TASK_LOG_DIR/task_$i.log" 2>&1 &
          pids+=($!)
        done
        status=0
        for p in "${pids[@]}"; do wait "$p" || status=$?; done
        exit $status
        """))
    (bindir / "srun").chmod(0o755)
    probe = tmp_path / "slurm_probe.py"
    probe.write_text(textwrap.dedent("""\
        import jax, numpy as np
        from jax.experimental import multihost_utils
        from mellama_jax.parallel import initialize_distributed
        initialize_distributed()  # what `python -m mellama_jax.train` does without explicit flags
        gathered = multihost_utils.process_allgather(np.array([jax.process_index() + 1]))
        print(f"process {jax.process_index()} of {jax.process_count()} devices {jax.device_count()} "
              f"gathered {gathered.ravel().tolist()}")
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bindir}:{env['PATH']}", MELLAMA_REPO=ROOT, MELLAMA_PYTHON=sys.executable,
               MELLAMA_MODULE="slurm_probe", PYTHONPATH=f"{tmp_path}:{ROOT}", TASK_LOG_DIR=str(tmp_path),
               SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost", SLURM_JOB_NODELIST="localhost",
               SLURM_NTASKS="2", SLURM_STEP_NUM_NODES="1", JAX_COORDINATOR_PORT=str(_free_port()),
               JAX_PLATFORMS="cpu", XLA_FLAGS="")
    subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu_slurm.sbatch")], env=env, check=True, timeout=240,
                   capture_output=True, text=True)
    for i in range(2):
        log = (tmp_path / f"task_{i}.log").read_text()
        assert f"process {i} of 2 devices 2 gathered [1, 2]" in log, log


def test_accelerator_names_in_either_spelling_become_gclouds(capsys):
    # The planner's spelling (v5e-N, chips) and gcloud's (v5litepod-N) name the same slice; v5p-N counts cores.
    for name, want in (("v5e-256", "v5litepod-256"), ("v5litepod-16", "v5litepod-16"), ("v5p-128", "v5p-128")):
        assert tpu_pod.cloud_accelerator(name) == want
    lines = _dry(capsys, ["create", *POD, "--accelerator", "v5e-256"])
    assert "--accelerator-type=v5litepod-256" in lines[0]
    with pytest.raises(SystemExit, match="v5p-127"):
        tpu_pod.cloud_accelerator("v5p-127")



def test_pod_worker_reruns_a_preempted_run_until_it_finishes(tmp_path):
    """The worker's loop (tpu_pod.run_script) reruns the command on exit status 75 (saved for a preemption
    notice), passes any other status through, and stops rerunning once `stop` left its file."""
    runs = tmp_path / "runs"
    fake = tmp_path / "fake_train.sh"  # exits 75 twice (preempted), then 0
    fake.write_text(f'echo run >> {runs}; [ $(wc -l < {runs}) -ge 3 ] && exit 0; exit 75\n')
    r = subprocess.run(["bash", "-c", tpu_pod.rerun_loop(["bash", str(fake)])], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and runs.read_text().count("run") == 3, r.stdout
    assert r.stdout.count("preempted (exit 75): rerunning") == 2
    failing = tmp_path / "fail.sh"
    failing.write_text("exit 3\n")
    assert subprocess.run(["bash", "-c", tpu_pod.rerun_loop(["bash", str(failing)])], timeout=60).returncode == 3


def test_sbatch_requeues_a_preempted_run(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "srun").write_text("#!/bin/bash\nexit 75\n")  # the trainer saved for a preemption notice
    (bindir / "scontrol").write_text(f"#!/bin/bash\necho \"$@\" > {tmp_path}/scontrol.args\n")
    for f in ("srun", "scontrol"):
        (bindir / f).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bindir}:{env['PATH']}", MELLAMA_REPO=ROOT, MELLAMA_PYTHON=sys.executable, SLURM_JOB_ID="77")
    r = subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu_slurm.sbatch")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and (tmp_path / "scontrol.args").read_text().strip() == "requeue 77", r.stdout + r.stderr
    (bindir / "srun").write_text("#!/bin/bash\nexit 1\n")  # a failure is not requeued
    (tmp_path / "scontrol.args").unlink()
    r = subprocess.run(["bash", os.path.join(ROOT, "launch", "gpu_slurm.sbatch")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and not (tmp_path / "scontrol.args").exists()
