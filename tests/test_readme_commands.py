"""Every shell command of README.md runs, in the order the README gives them, as a user types them.

The README's commands are read from the file (its ```bash blocks and the commands quoted in its prose), in
document order. Each is matched against RULES, which says how it runs here:
  run      as written, with only the path stand-ins of STAND_INS put in and the size-reducing arguments of the
           rule appended (a tiny step count, a record limit: never a flag the README writes changed);
  dry_run  as written plus --dry_run (pod-sized work: the command checks every input it names and prints what
           it would do);
  pod      the launcher with --dry_run, and the command after its `--` (what the pod's hosts run) run as written;
  not_run  named with the reason (the test suite itself, the whole demo, which tests/test_recipe.py runs at a
           smaller size; prose that names a program or quotes its output).
A README command that no rule matches fails the test, so a new command cannot escape it. Later commands consume
what earlier ones wrote, as the README chains them: the prepared corpus and converted weights feed pretraining,
its checkpoint the export, the export instruction tuning's init, the tuned run evaluation and the HF export, the
export `mellama-generate --chat` and lm-eval.

Inputs are small and in their real formats: the corpus sources as distributed (tests/corpus_fixtures.py via
test_recipe_real.real_format_root), LLaMA-2's real tokenizer (tests/assets) in a tiny LLaMA-2-shaped Hugging
Face directory, MIBE test files, PubMedQA's ori_pqal.json. gs://BUCKET is a local directory.
"""
import collections
import contextlib
import glob
import importlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
import tomllib
from hf_fixtures import make_hf_model
from test_recipe_real import TOKENIZER, real_format_root

from mellama_jax.config import config_module
from mellama_jax.data.config import DataConfig
from mellama_jax.data.errors import DataReport
from mellama_jax.data.units import _records, held_out, plan_units
from mellama_jax.demo import mibe as synthetic_mibe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PROGRAM = re.compile(r"(mellama-[a-z-]+|python3?|make)(\s|$)")


def readme_commands(text: str | None = None) -> list[str]:
    """The shell commands of README.md in document order: each line of a ```bash block (continuations joined,
    comments cut) and each `...` span of the prose that starts with a program (a console script, python, make)."""
    text = open(README).read() if text is None else text
    out = []
    for m in re.finditer(r"```(\w*)\n(.*?)```|`([^`]+)`", text, re.S):
        if m.group(3) is not None:
            span = " ".join(m.group(3).split())
            if PROGRAM.match(span):
                out.append(span)
        elif m.group(1) == "bash":
            for line in re.sub(r"\\\n\s*", " ", m.group(2)).splitlines():
                line = " ".join(re.sub(r"\s+#.*$", "", line).split())
                if line and not line.startswith("#"):
                    out.append(line)
    return out


# ---------------------------------------------------------------- how each README command runs here
# README path or placeholder → its small local stand-in ({tmp}: this test's directory). Longest keys first.
STAND_INS = {
    "gs://BUCKET": "{tmp}/bucket",
    "/data/me_llama": "{tmp}/bucket/me_llama",  # the sources as distributed, + instructions/ and eval/
    "/data/Llama-2-13b-hf": "{tmp}/bucket/Llama-2-13b-hf",  # a tiny LLaMA-2-shaped HF dir, LLaMA-2's tokenizer
    "/data/mibe": "{tmp}/mibe",  # a MIBE-format test file per task (mellama_jax.demo.mibe), two records (the data axis of 2)
    "hf/me-llama-13b-chat": "{tmp}/hf/me-llama-13b-chat",
    "runs/demo": "{tmp}/runs/demo",
    "runs/tiny": "{tmp}/runs/tiny",
    "$ZONE": "us-east5-a",
    "$PROJECT": "my-project",
    # the placeholders of commands quoted in prose
    "--model PATH": "--model {tmp}/hf/me-llama-13b-chat",
    "pretrained=DIR": "pretrained={tmp}/hf/me-llama-13b-chat",
    "--task T --raw PATH --out DIR": "--task pubmedqa --raw {tmp}/raw/ori_pqal.json --out {tmp}/mibe_built",
}

# Training on the pod configs, made small: sizes and CPU kernels only (data, optimizer, LoRA, template stay).
POD_TRAIN_ON_CPU = ["--config.model.attention=xla", "--config.model.dtype=float32", "--config.model.remat_policy=none", "--config.train.seq_len=128",
                    "--config.train.global_batch_size=8", "--config.train.steps=2", "--config.checkpoint.every_steps=2",
                    "--config.eval.every_steps=0", "--config.log.every_steps=1", "--config.log.progress_bar=false",
                    "--config.data.mixture.worker_count=0"]  # no loader processes on a 2-core machine

# (pattern the README command matches, how it runs, size-reducing arguments appended, why). First match wins.
RULES = [
    (r"make test$", "not_run", [], "the test suite itself"),
    (r"make (test-tpu|test-beam|test-gpu|lint)$", "not_run", [], "other suites in their own venvs (.ci/run runs them)"),
    (r"make bench$", "not_run", [], "benchmarks: minutes of timing runs (bench/)"),
    (r"mellama-[a-z-]+$", "not_run", [], "a program named in prose"),
    (r"python -m mellama_jax\.train\|recipe\|generate\|evaluate$", "not_run", [],
     "the python -m spellings of four console scripts; tests/test_cli.py runs their --help"),
    # The whole demo (minutes): tests/test_recipe.py runs this recipe at configs/demo_smoke.py's size.
    (r"make demo$", "not_run", [], "the demo recipe, below"),
    (r"mellama-recipe --config configs/demo\.py --workdir runs/demo$", "not_run", [], "tests/test_recipe.py"),
    (r"mellama-recipe \.\.\. --stages NAME$", "not_run", [], "prose quoting the form of the lines --dry_run prints"),
    (r"mellama-recipe --config configs/me_llama/recipe_13b\.py .*--dry_run$", "run", [], ""),
    (r"mellama-recipe --config configs/me_llama/recipe_13b\.py ", "dry_run", [], "13B on a pod"),
    (r"mellama-prepare-corpus ", "run", [], ""),
    (r"mellama-convert-hf ", "run", ["--no_progress"], ""),
    (r"mellama-plan .*--topology v5p-", "dry_run", [], "compiles for a TPU slice with libtpu: make test-tpu"),
    (r"python launch/tpu_pod\.py up .* -- mellama-train ", "pod", POD_TRAIN_ON_CPU, ""),
    (r"mellama-convert-jax ", "run", ["--no_progress"], ""),
    (r"mellama-train --config configs/me_llama/chat_13b_lora\.py ", "run",
     POD_TRAIN_ON_CPU + ["--config.data.mixture.instruct.max_prompt_tokens=96"], ""),
    (r"mellama-evaluate ", "run", ["--max_new_tokens", "2", "--no_progress"], ""),
    (r"mellama-train --config configs/tiny_pretrain\.py ", "run", ["--config.train.steps=2",
                                                                 "--config.log.progress_bar=false"], ""),
    (r"mellama-generate .*--chat", "run", ["--max_new_tokens", "4"], ""),
    (r"mellama-build-mibe ", "run", [], ""),
    (r"mellama-lm-eval run ", "run", ["--limit", "1"], ""),
]
# Inputs a command reads on stdin, and environment it is given (the README documents MELLAMA_MIBE_DATA).
STDIN = {"mellama-generate": "What is metformin for?\n"}
ENV = {"mellama-lm-eval": {"MELLAMA_MIBE_DATA": "{tmp}/mibe"}}


def console_scripts() -> dict[str, str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return {k: v.split(":")[0] for k, v in tomllib.load(f)["project"]["scripts"].items()}


def rule_for(command: str) -> tuple[str, list[str], str]:
    for pattern, how, extra, why in RULES:
        if re.match(pattern, command):
            return how, extra, why
    raise AssertionError(f"README command the test does not know how to run (add a rule to RULES in "
                         f"tests/test_readme_commands.py): {command}")


def module_argv(argv: list[str]) -> list[str]:
    """[module, args...] of a command line: a console script or `python -m M` (None for anything else)."""
    scripts = console_scripts()
    if argv[0] in scripts:
        return [scripts[argv[0]], *argv[1:]]
    if argv[:2] == ["python", "-m"]:
        return [argv[2], *argv[3:]]
    if argv[0] == "python" and argv[1].endswith(".py"):
        return argv[1:]
    raise AssertionError(f"README: `{shlex.join(argv)}` names no program of this project")


def plan(commands: list[str], tmp: str) -> list[tuple[str, str, list[str], dict, str | None]]:
    """(README command, how, argv to run, extra environment, stdin) for each README command, in order."""
    steps = []
    for command in commands:
        how, extra, _ = rule_for(command)
        if how == "not_run":
            continue
        line = command
        for key in sorted(STAND_INS, key=len, reverse=True):  # whole paths only: not configs/data/me_llama_mix.py
            line = re.sub(rf"(?<![\w/.-]){re.escape(key)}(?![\w-])", STAND_INS[key].format(tmp=tmp), line)
        argv = shlex.split(line)
        env = {k: v.format(tmp=tmp) for k, v in ENV.get(argv[0], {}).items()}
        stdin = STDIN.get(argv[0])
        if how == "pod":
            cut = argv.index("--")
            steps.append((command, "dry_run", module_argv(argv[:cut] + ["--dry_run"] + argv[cut:]), env, stdin))
            steps.append((command, "run", module_argv(argv[cut + 1:]) + extra, env, stdin))
        elif how == "dry_run":
            steps.append((command, how, module_argv(argv) + ["--dry_run"] + extra, env, stdin))
        else:
            steps.append((command, how, module_argv(argv) + extra, env, stdin))
    return steps


# Commands using absl flags (global to a process) or a script run in a process of their own; the others
# (argparse `main(argv) -> int`) in this one, which saves an interpreter and JAX start-up per command.
SAME_COMMAND = {f"mellama_jax.{c}": f"mellama_jax.commands.{c}" for c in ("train", "recipe", "generate", "evaluate")}
OWN_PROCESS = ("mellama_jax.commands.train", "mellama_jax.commands.recipe", "mellama_jax.train", "mellama_jax.recipe")


def execute(argv: list[str], env: dict, stdin: str | None, timeout: int = 600) -> tuple[int, str, str]:
    module, args = argv[0], argv[1:]
    if module.endswith(".py") or module in OWN_PROCESS:
        cmd = [sys.executable, module, *args] if module.endswith(".py") else [sys.executable, "-m", module, *args]
        # A user's CPU: one device (this process's 8 fake ones serve the README's --config.mesh flags of
        # mellama-evaluate); compiling for one device is also what keeps these runs short.
        env = {k: v for k, v in dict(os.environ, PYTHONPATH=ROOT, **env).items() if k != "XLA_FLAGS"}
        r = subprocess.run(cmd, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for k, v in env.items():
            mp.setenv(k, v)
        mp.setattr(sys, "stdin", io.StringIO(stdin or ""))
        mp.chdir(ROOT)
        try:
            code = importlib.import_module(module).main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code or 0, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- small real-format inputs
def write_inputs(tmp: str) -> None:
    """What the README's paths hold, small: the corpus sources as distributed with instruction and MIBE files
    (gs://BUCKET/me_llama = /data/me_llama), a LLaMA-2-shaped HF directory with LLaMA-2's tokenizer, a MIBE test
    file for every task (/data/mibe: the eval sets in their released JSONL form) and PubMedQA's released
    ori_pqal.json for mellama-build-mibe."""
    root = real_format_root(os.path.join(tmp, "bucket", "me_llama"))
    hold_one_out(root)
    hf_dir = os.path.join(tmp, "bucket", "Llama-2-13b-hf")
    make_hf_model(hf_dir, seed=4, vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    shutil.copy(TOKENIZER, hf_dir)
    synthetic_mibe.write_synthetic_benchmark(os.path.join(tmp, "mibe"), per_task=2)
    os.makedirs(os.path.join(tmp, "raw"))
    with open(os.path.join(tmp, "raw", "ori_pqal.json"), "w") as f:  # PubMedQA's PQA-L file, two records
        json.dump({"21645374": {"QUESTION": "Do mitochondria play a role in remodelling lace plant leaves during "
                                            "programmed cell death?",
                                "CONTEXTS": ["Programmed cell death (PCD) is the regulated death of cells.",
                                             "Lace plant leaves form perforations by PCD."],
                                "LABELS": ["BACKGROUND", "RESULTS"], "final_decision": "yes",
                                "LONG_ANSWER": "Mitochondrial dynamics play a role."},
                   "16418930": {"QUESTION": "Landolt C and snellen e acuity: differences in strabismus amblyopia?",
                                "CONTEXTS": ["Assessment of visual acuity depends on the optotypes used."],
                                "LABELS": ["BACKGROUND"], "final_decision": "no", "LONG_ANSWER": "They differ."}},
                  f)


# Per component, a source file whose name the user's copy does not fix (a PubMed baseline number, a PMC id, a
# MIMIC-CXR study id, a RedPajama part), renamed so that one of its records falls in the held-out split at the
# data config's fractions (0.05-0.1%: a corpus of a few documents has none, and preparation stops, as it should).
FREE_NAMES = {"biomedical": ("pmc_oa/*/PMC*.nxml", "PMC{:07d}.nxml"),
              "clinical": ("mimic-cxr/files/p*/p*/s*.txt", "s{:08d}.txt"),
              "general": ("redpajama_subset/*.jsonl.zst", "part-{:04d}.jsonl.zst")}


def hold_one_out(root: str) -> None:
    cfg = DataConfig.from_config(config_module(os.path.join(ROOT, "configs/data/me_llama_mix.py")).get_config(root),
                                 DataReport())
    fraction = {c.name: c.heldout_fraction for c in cfg.components}
    for component, (pattern, name) in FREE_NAMES.items():
        path = sorted(glob.glob(os.path.join(root, pattern)))[0]
        unit = next(u for u in plan_units(cfg) if path in (u.path, *u.files))
        lines = [line for line, _, _, file in _records(unit, DataReport(), collections.Counter()) if file == path]
        number = next(n for n in range(1, 10 ** 7) if any(held_out(name.format(n), line, fraction[component])
                                                          for line in lines))
        os.rename(path, os.path.join(os.path.dirname(path), name.format(number)))


# What each run leaves, checked after it: the command did its work, not only exit 0.
def _written(tmp, *rel):
    return lambda: os.path.exists(os.path.join(tmp, *rel))


@pytest.mark.slow
def test_every_readme_command_runs_in_order(tmp_path):
    tmp = str(tmp_path)
    write_inputs(tmp)
    steps = plan(readme_commands(), tmp)
    done: dict[tuple, tuple[int, str, str]] = {}
    timings = []
    for command, how, argv, env, stdin in steps:
        # the same command twice (make demo's `python -m` spelling and its console script) runs once
        key = (SAME_COMMAND.get(argv[0], argv[0]), *argv[1:], *sorted(env.items()), stdin)
        if key not in done:
            started = time.perf_counter()
            done[key] = execute(argv, env, stdin)
            timings.append((time.perf_counter() - started, shlex.join(argv)[:100]))
            print(f"{timings[-1][0]:6.1f}s {timings[-1][1]}", flush=True)
        code, out, err = done[key]
        assert code == 0, f"README: `{command}` ({how}) exited {code}:\n{shlex.join(argv)}\n{err[-3000:]}\n{out[-1500:]}"
    # the chain's products, as the README names them
    assert os.path.isfile(os.path.join(tmp, "bucket/corpus/me_llama/corpus_report.json"))
    assert os.path.isdir(os.path.join(tmp, "bucket/runs/me13b-chat"))
    assert os.path.isfile(os.path.join(tmp, "hf/me-llama-13b-chat/config.json"))
    assert os.path.isfile(os.path.join(tmp, "mibe_built/pubmedqa.jsonl"))
    assert not os.path.exists(os.path.join(tmp, "bucket/runs/me13b-recipe")), "a --dry_run wrote its workdir"


@pytest.mark.parametrize("original,planted", [
    ("--workdir gs://BUCKET/runs/me13b ", "--work_dir gs://BUCKET/runs/me13b "),  # an absl flag (own process)
    ("--hf_dir /data/Llama-2-13b-hf", "--hf_directory /data/Llama-2-13b-hf"),  # an argparse flag (in process)
])
def test_a_renamed_flag_in_the_readme_fails(tmp_path, original, planted):
    """The README with one flag renamed: the commands holding it are planned as the real test plans them and run
    (before anything they would read exists: the flag is refused first); one fails, naming the flag."""
    text = open(README).read()
    assert text.count(original) == 1, original
    steps = plan(readme_commands(text.replace(original, planted)), str(tmp_path))
    flag, was = planted.split()[0], original.split()[0]
    changed = [s for s in steps if flag in s[2]]  # a launcher's dry run, then the command it launches
    results = [execute(argv, env, stdin) for _, _, argv, env, stdin in changed]
    failed = [(code, err) for code, _, err in results if code != 0]
    assert failed, f"README with {flag} for {was}: every command holding it ran"
    code, err = failed[0]
    assert flag.lstrip("-") in err or was in err, err[-2000:]  # the error names the flag (or the one expected)


def test_a_readme_command_without_a_rule_fails(tmp_path):
    text = open(README).read().replace("```bash\nmake demo", "```bash\nmellama-foo --bar 1\nmake demo", 1)
    with pytest.raises(AssertionError, match="does not know how to run.*mellama-foo --bar 1"):
        plan(readme_commands(text), str(tmp_path))
