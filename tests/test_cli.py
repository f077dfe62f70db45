"""A catalogue of user mistakes across every command line: one `error:` line naming the thing, exit status 2,
no traceback (unless --debug), nothing half-written; Ctrl-C stops with status 130 and cleans up."""
import os
import signal
import subprocess
import sys
import time

import pytest
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny_pretrain.py")
DEMO = os.path.join(ROOT, "configs", "demo_smoke.py")


def _run(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _mistakes(tmp):
    a_file = tmp / "a_file"
    a_file.write_text("x")
    missing = str(tmp / "missing")
    train = ["-m", "mellama_jax.train", "--config", TINY]
    return {
        # (argv, words the one error line must contain)
        "train: mistyped override": (train + ["--workdir", str(tmp / "w"), "--config.train.stpes=5"],
                                     ["--config.train.stpes", "no such config field", "steps"]),
        "train: bad value": (train + ["--workdir", str(tmp / "w"), "--config.train.steps=abc"],
                             ["--config.train.steps=abc", "int"]),
        "train: invalid value": (train + ["--workdir", str(tmp / "w"), "--config.optim.schedule=cosin"],
                                 ["optim.schedule", "cosine"]),
        "train: missing config file": (["-m", "mellama_jax.train", "--config", missing + ".py", "--workdir",
                                        str(tmp / "w")], ["--config=", "missing.py", "No such file"]),
        "train: missing workdir flag": (train, ["--workdir"]),
        "train: workdir is a file": (train + ["--workdir", str(a_file)], [str(a_file), "is a file", "directory"]),
        "train: dry run, batch does not split": (train + ["--workdir", str(tmp / "w"), "--dry_run",
                                                          "--local_device_count=2", "--config.train.global_batch_size=3"],
                                                 ["train.global_batch_size=3", "data-parallel size 2"]),
        "train: micro-batches do not split the batch": (
            train + ["--workdir", str(tmp / "w"), "--config.train.global_batch_size=8", "--config.train.micro_batches=3"],
            ["config.train.micro_batches=3: must divide", "global_batch_size=8"]),
        "train: init_from missing": (train + ["--workdir", str(tmp / "w"), f"--config.init_from={missing}"],
                                     ["init_from", missing, "no such directory"]),
        "recipe: mistyped override": (["-m", "mellama_jax.recipe", "--config", DEMO, "--workdir", str(tmp / "r"),
                                       "--config.pretrain.train.stpes=1"], ["--config.pretrain.train.stpes"]),
        "recipe: unknown stage": (["-m", "mellama_jax.recipe", "--config", DEMO, "--workdir", str(tmp / "r"),
                                   "--force", "pretrian"],
                                  ["pretrian", "stages are"]),
        "generate: missing model": (["-m", "mellama_jax.generate", "--model", missing, "--prompt", "hi"],
                                    [missing, "no such model directory"]),
        "generate: bad prompt ids": (["-m", "mellama_jax.generate", "--model", missing, "--prompt_ids", "1,x"],
                                     ["--prompt_ids", "integer token ids"]),
        "generate: unknown flag": (["-m", "mellama_jax.generate", "--modle", "x"], ["--model"]),
        "evaluate: unknown task": (["-m", "mellama_jax.evaluate", "--model", missing, "--tasks", "pubmed_qa",
                                    "--data_dir", str(tmp), "--out_dir", str(tmp / "e")], ["pubmed_qa", "known tasks"]),
        "convert_hf_to_jax: missing dir": (["-m", "mellama_jax.commands.convert_hf_to_jax", "--hf_dir", missing, "--out_dir",
                                           str(tmp / "c")], [missing]),
        "convert_jax_to_hf: missing dir": (["-m", "mellama_jax.commands.convert_jax_to_hf", "--ckpt_dir", missing, "--out_dir",
                                           str(tmp / "c")], [missing]),
        "prepare_corpus: missing tokenizer": (["-m", "mellama_jax.commands.prepare_corpus", "--data_config",
                                               f"configs/data/demo_mix.py:{tmp}", "--tokenizer", missing + ".model",
                                               "--out_dir", str(tmp / "c")], ["missing.model"]),
        "prepare_corpus: missing config": (["-m", "mellama_jax.commands.prepare_corpus", "--data_config", missing + ".py",
                                            "--tokenizer", missing, "--out_dir", str(tmp / "c")], ["missing.py"]),
        "train_tokenizer: no input": (["-m", "mellama_jax.commands.train_tokenizer", "--input", missing + "/*.jsonl", "--out_dir",
                                       str(tmp / "c")], ["no file matches"]),
        "plan: missing topology": (["-m", "mellama_jax.commands.plan", "--config", TINY], ["--topology"]),
        "plan: mistyped flag": (["-m", "mellama_jax.commands.plan", "--config", TINY, "--topology", "v5e:2x2",
                                 "--set", "train.steps=3"], ["unrecognized arguments: --set"]),
        "recipe: missing config flag": (["-m", "mellama_jax.recipe", "--workdir", str(tmp / "r")], ["--config"]),
        "make_demo_corpus: out_dir is a file": (["-m", "mellama_jax.commands.make_demo_corpus", "--out_dir", str(a_file)],
                                                [str(a_file)]),
    }


CASES = [
    "train: mistyped override", "train: bad value", "train: invalid value", "train: missing config file",
    "train: missing workdir flag", "train: workdir is a file", "train: dry run, batch does not split",
    "train: init_from missing", "train: micro-batches do not split the batch",
    "recipe: mistyped override", "recipe: unknown stage", "generate: missing model", "generate: bad prompt ids",
    "generate: unknown flag", "evaluate: unknown task", "convert_hf_to_jax: missing dir",
    "convert_jax_to_hf: missing dir", "prepare_corpus: missing tokenizer", "prepare_corpus: missing config",
    "train_tokenizer: no input", "plan: missing topology", "plan: mistyped flag", "recipe: missing config flag",
    "make_demo_corpus: out_dir is a file"]


def console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts]: command name -> module (each `module:main`)."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


# absl commands define their flags globally at import (two of them cannot share a process): run as users do.
ABSL_COMMANDS = {"mellama-train": "mellama_jax.train", "mellama-recipe": "mellama_jax.recipe"}


@pytest.mark.parametrize("name", sorted(set(console_scripts()) - set(ABSL_COMMANDS)))
def test_help_on_every_command(name, capsys):
    """`--help` answers on every console script: what the command does and its flags, exit status 0."""
    import importlib

    module = console_scripts()[name]
    assert module.startswith("mellama_jax.commands."), f"{name}: every command lives in mellama_jax/commands/"
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--help" in out and len(out.splitlines()) > 3, (name, out)


@pytest.mark.parametrize("name", sorted(ABSL_COMMANDS))
def test_help_on_config_commands(name):
    """The config-file commands (absl flags) answer --help too — absl's own parser answers "Unknown command line
    flag 'help'" — through their `python -m` spelling, which runs the console script's `main`."""
    assert console_scripts()[name] == f"mellama_jax.commands.{name.split('-')[1]}"
    r = _run("-m", ABSL_COMMANDS[name], "--help")
    assert r.returncode == 0 and "Traceback" not in r.stderr, (name, r.stderr[-2000:])
    assert "--config.<field>=<value>" in r.stdout and "--workdir" in r.stdout and "debug" in r.stdout, r.stdout


def test_python_m_spellings_run_the_console_scripts():
    """`python -m mellama_jax.train|recipe|generate|evaluate` run the console script's `main` (read, not imported:
    two absl commands cannot be imported into one process)."""
    for short, path in (("train", "train/__main__.py"), ("recipe", "recipe/__main__.py"),
                        ("generate", "generate/__main__.py"), ("evaluate", "evaluate.py")):
        text = open(os.path.join(ROOT, "mellama_jax", path)).read()
        assert f"from mellama_jax.commands.{short} import main\n" in text and "sys.exit(main())" in text, path


@pytest.mark.parametrize("case", CASES)
def test_user_mistake_is_one_line(tmp_path, case):
    argv, words = _mistakes(tmp_path)[case]
    before = set(os.listdir(tmp_path))
    r = _run(*argv)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert 1 <= len(err) <= 2 and any(line.startswith("error: ") for line in err), r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    leftovers = set(os.listdir(tmp_path)) - before
    assert not leftovers - {"w", "r"}, leftovers  # nothing half-written (a workdir may be created empty)


def test_debug_shows_the_traceback(tmp_path):
    r = _run("-m", "mellama_jax.generate", "--model", str(tmp_path / "missing"), "--prompt", "hi", "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr and "no such model directory" in r.stderr


def test_ctrl_c_stops_training_and_cleans_up(tmp_path):
    wd = tmp_path / "w"
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen([sys.executable, "-m", "mellama_jax.train", "--config", TINY, "--workdir", str(wd),
                             "--config.train.steps=100000", "--config.checkpoint.every_steps=0",
                             "--config.log.progress_bar=false"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    metrics = wd / "metrics.jsonl"
    try:
        while time.time() < deadline and proc.poll() is None and not (metrics.exists() and metrics.stat().st_size):
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # a run that did not stop must not train its 100000 steps on after the test
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err, err[-2000:]
    assert not [p for p in os.listdir(wd) if ".tmp" in p]


def test_ctrl_c_inside_a_garbage_collector_callback_still_stops():
    """JAX collects garbage through a gc callback; a KeyboardInterrupt raised there is printed and ignored, so
    a conversion interrupted at that moment used to run to the end. The handler asks again outside it."""
    import gc

    from mellama_jax import cli

    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)

    # A command starts with Python's own SIGINT handler; a pytest-xdist worker does not (it ignores SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.callbacks.append(callback)
    try:
        with pytest.raises(KeyboardInterrupt):
            with cli.ctrl_c_stops():
                gc.collect()
                for _ in range(500):  # the deferred interrupt arrives within 0.05 s
                    time.sleep(0.01)
        assert fired and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        gc.callbacks.remove(callback)
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- Ctrl-C: evaluate and the recipe
def _start(argv, log):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    with open(log, "w") as err:  # a file, not a pipe: nothing blocks however much the command writes
        return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _ctrl_c_when(proc, ready, log, timeout=300) -> str:
    """Send SIGINT once ready() holds (while the command works); its stderr after exiting."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.2)
    assert proc.poll() is None, open(log).read()[-3000:]
    assert ready(), "the command did not get there in time"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    return open(log).read()


def _stopped_by_ctrl_c(proc, err: str, resume_hint: str) -> None:
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    last = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert last.startswith("interrupted") and resume_hint in last, err[-3000:]


def test_ctrl_c_stops_evaluation_writes_nothing_and_rerun_finishes(tmp_path):
    """Interrupted between batches, the evaluate CLI leaves no report (the out_dir is written whole at the
    end), only the finished batches beside it; the same command run again finishes every record."""
    import json

    import jax
    from hf_fixtures import train_small_sentencepiece

    from mellama_jax.checkpoints.model_dir import save_model_checkpoint
    from mellama_jax.config import preset
    from mellama_jax.model import params as P

    (tmp_path / "tok").mkdir()
    train_small_sentencepiece(str(tmp_path / "tok"))
    cfg = preset("tiny").replace(vocab_size=100)  # the test tokenizer's size
    model = save_model_checkpoint(tmp_path / "model", cfg, P.init_params(cfg, jax.random.key(0)),
                                  tokenizer_dir=str(tmp_path / "tok"))
    data = tmp_path / "data"
    data.mkdir()
    n = 64
    (data / "medqa.jsonl").write_text("".join(
        json.dumps({"query": f"case {i}: the patient was given\nA. aspirin\nB. metformin\nAnswer:",
                    "answer": "aspirin", "choices": ["aspirin", "metformin"], "gold": 0}) + "\n" for i in range(n)))
    out = tmp_path / "eval"
    argv = ["-m", "mellama_jax.evaluate", "--model", str(model), "--tasks", "medqa", "--data_dir", str(data),
            "--out_dir", str(out), "--max_new_tokens", "32", "--batch_size", "4"]
    before = set(os.listdir(tmp_path))
    log = tmp_path.parent / f"{tmp_path.name}-evaluate.log"

    def batches_done() -> bool:  # tqdm's "medqa: ... 4/64": a batch is scored, others are still to come
        text = open(log).read()
        return any(f" {k}/{n} " in text for k in range(4, n - 8, 4))

    proc = _start(argv, log)
    err = _ctrl_c_when(proc, batches_done, log)
    _stopped_by_ctrl_c(proc, err, "rerun")
    # No report, no half-written or temporary directory: only the batches kept for the rerun (eval/resume.py).
    assert set(os.listdir(tmp_path)) - before == {"eval.partial"}

    done = _run(*argv, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.load(open(out / "summary.json"))
    assert summary["tasks"]["medqa"]["num_examples"] == n and (out / "report.md").exists()
    assert not (tmp_path / "eval.partial").exists()


def _pretrain_checkpoints(workdir):
    d = os.path.join(workdir, "pretrain", "run", "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


@pytest.mark.slow
def test_ctrl_c_stops_the_recipe_and_rerun_continues(tmp_path):
    """`make demo`'s driver interrupted inside pretraining: status 130, one line, the stage not marked complete,
    no temporary files; the same command then skips the finished stage and resumes training from its checkpoint.
    """
    import json

    wd = tmp_path / "run"
    argv = ["-m", "mellama_jax.recipe", "--config", os.path.join(ROOT, "configs", "demo_smoke.py"),
            "--workdir", str(wd), "--stages", "prepare,convert,pretrain"]
    log = tmp_path / "recipe.log"
    proc = _start(argv, log)
    err = _ctrl_c_when(proc, lambda: bool(_pretrain_checkpoints(wd)), log)
    _stopped_by_ctrl_c(proc, err, "rerun the same command to continue")
    interrupted_at = max(_pretrain_checkpoints(wd))
    assert (wd / "prepare" / "DONE.json").exists() and not (wd / "pretrain" / "DONE.json").exists()
    leftovers = [os.path.join(d, f) for d, dirs, files in os.walk(wd) for f in dirs + files if ".tmp" in f]
    assert not leftovers, leftovers
    metrics = wd / "pretrain" / "run" / "metrics.jsonl"
    logged = len(metrics.read_text().splitlines()) if metrics.exists() else 0

    done = _run(*argv, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prepare: already complete, skipped" in done.stdout
    assert (wd / "pretrain" / "DONE.json").exists()
    rerun = [json.loads(line) for line in metrics.read_text().splitlines()[logged:]]
    steps = [r["step"] for r in rerun if r["kind"] == "train"]
    assert steps and steps[0] > interrupted_at and steps[-1] == 8, (interrupted_at, steps)


def test_ctrl_c_during_a_checkpoint_save_is_delivered_after_it():
    """orbax's save and final wait run with SIGINT held (checkpoints/manager.py): the block finishes, then the
    KeyboardInterrupt arrives, so no commit thread is left running while Python exits."""
    import signal

    from mellama_jax.checkpoints.manager import interrupts_deferred

    finished = []
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # xdist workers may run with another
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            finished.append(True)  # still running: the signal is held
    assert finished == [True]
    assert signal.signal(signal.SIGINT, before) is signal.default_int_handler  # the handler is put back
