"""Every command the launch scripts, commands and config files document exists: each `python -m MODULE` is an
importable entry point (a module, or a package with __main__), each `python path.py` and each `--config` /
`--data_config` file is in the repository, and each documented launch command runs with --dry_run.
"""
import ast
import contextlib
import glob
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import tomllib

from mellama_jax.config import config_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTED = sorted(glob.glob(os.path.join(ROOT, "launch", "*.py"))
                    + glob.glob(os.path.join(ROOT, "mellama_jax", "commands", "*.py"))
                    + glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True))
COMMAND = re.compile(r"\bpython3? +(?:-m +([\w.]+)|([\w./-]+\.py))|(?<![\w/.-])(mellama-[a-z-]+)")
CONFIG_FILE = re.compile(r"--(?:data_)?config[ =]([\w./-]+\.py)")


def documentation(path):
    """The module docstring (Python) or the leading comment block (shell), continuation lines joined."""
    text = open(path).read()
    doc = ast.get_docstring(ast.parse(text)) if path.endswith(".py") else "\n".join(
        line[1:] for line in text.splitlines() if line.startswith("#"))
    return re.sub(r"\\\n\s*", " ", doc or "")


def documented_commands():
    out = []
    for path in DOCUMENTED + [os.path.join(ROOT, "launch", "gpu_slurm.sbatch")]:
        for line in documentation(path).splitlines():
            if COMMAND.search(line):
                out.append((os.path.relpath(path, ROOT), line.split("  #")[0].strip()))
    return out


def entry_point_exists(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    return spec.submodule_search_locations is None or importlib.util.find_spec(module + ".__main__") is not None


@pytest.mark.parametrize("where,line", documented_commands())
def test_documented_command_names_existing_entry_points_and_files(where, line):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    for module, script, console in COMMAND.findall(line):
        if console:
            assert console in scripts, f"{where}: `{console}` is not a console script in pyproject.toml"
        elif module:
            assert entry_point_exists(module), f"{where}: `python -m {module}` is not an entry point"
        else:
            assert os.path.isfile(os.path.join(ROOT, script)), f"{where}: {script} does not exist"
    for config in CONFIG_FILE.findall(line):
        assert os.path.isfile(os.path.join(ROOT, config)), f"{where}: config file {config} does not exist"


def launch_commands():
    return [(w, line) for w, line in documented_commands() if re.search(r"python3? +launch/\w+\.py", line)]


def test_every_launcher_documents_a_command():
    assert {w for w, _ in launch_commands()} >= {"launch/tpu_pod.py", "launch/local.py", "launch/gpu_slurm.py"}


@pytest.mark.parametrize("where,line", launch_commands())
def test_documented_launch_command_runs_with_dry_run(where, line):
    argv = shlex.split(line[line.index("python"):])[1:]  # launch/X.py ... (this interpreter runs it)
    cut = argv.index("--") if "--" in argv else len(argv)
    argv = argv[:cut] + ([] if "--dry_run" in argv[:cut] else ["--dry_run"]) + argv[cut:]
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MELLAMA_DRY_RUN="1"))
    assert proc.returncode == 0, f"{where}: {line}\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip(), f"{where}: --dry_run printed nothing"
    inner = argv[cut + 1:]
    if inner[:2] == ["python", "-m"] or inner[:1] == ["-m"]:
        module = inner[inner.index("-m") + 1]
        assert entry_point_exists(module) and module in proc.stdout


# ---------------------------------------------------------------- README.md: every command as a user types it
README = os.path.join(ROOT, "README.md")
SHORT = {"mellama_jax.train": "train", "mellama_jax.recipe": "recipe", "mellama_jax.generate": "generate",
         "mellama_jax.evaluate": "evaluate"}  # the `python -m` spellings of four console scripts


def console_scripts() -> dict[str, str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return {k: v.split(":")[0] for k, v in tomllib.load(f)["project"]["scripts"].items()}


def readme_commands() -> list[str]:
    """Every command of README.md in order: the lines of its bash blocks (continuations joined, comments cut) and
    the inline `mellama-...` / `python -m ...` / `python launch/...` / `make ...` spans of its prose."""
    text = open(README).read()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split("  #")[0].split("   #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
    out += [m.strip() for m in re.findall(r"`([^`]+)`", prose)
            if re.match(r"(mellama-[a-z-]+ |python -m mellama_jax\.\w+ |python launch/\w+\.py |make \w)", m)]
    return out


def command_module(argv: list[str]) -> str | None:
    """The module a README command line runs (None for make targets)."""
    if argv[0] in console_scripts():
        return console_scripts()[argv[0]]
    if argv[:2] == ["python", "-m"]:
        return f"mellama_jax.commands.{SHORT[argv[2]]}" if argv[2] in SHORT else argv[2]
    return None


_HELP: dict[str, str] = {}


def help_text(module: str) -> str:
    """`--help` of a command: in this process for argparse commands, as a user runs it for the absl ones (their
    flags are global to a process)."""
    if module not in _HELP:
        short = {f"mellama_jax.commands.{v}": k for k, v in SHORT.items()}
        if module.endswith((".train", ".recipe")):
            r = subprocess.run([sys.executable, "-m", short[module], "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=900, env=dict(os.environ, JAX_PLATFORMS="cpu"))
            _HELP[module] = r.stdout
        else:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
                importlib.import_module(module).main(["--help"])
            _HELP[module] = out.getvalue()
    return _HELP[module]


def config_has(config, dotted: str) -> bool:
    for key in dotted.split("."):
        if not hasattr(config, "keys") or key not in config.keys():
            return False
        config = config[key]
    return True


def check_readme_command(line: str) -> None:
    """The command's program exists, each flag is one the command defines (its --help), each --config.x=y names a
    field of the config file it gives, each file it names is in the repository."""
    argv = shlex.split(line.replace("$ZONE", "zone").replace("$PROJECT", "project"))
    if argv[0] == "make":
        assert re.search(rf"^{argv[1]}:", open(os.path.join(ROOT, "Makefile")).read(), re.M), line
        return
    if argv[:2] == ["python", "launch/tpu_pod.py"] or argv[1:2] == ["launch/tpu_pod.py"]:
        check_readme_command(shlex.join(argv[argv.index("--") + 1:]))
        return
    module = command_module(argv)
    assert module and importlib.util.find_spec(module), f"README: `{line}` names no command"
    if module.endswith(".lm_eval"):
        return  # lm-eval's own command line after the program name
    helptext = help_text(module)
    for arg in argv[1:]:
        flag = arg.split("=")[0]
        if flag.startswith("--") and not flag.startswith("--config."):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helptext.replace("[no]", "")), \
                f"README: `{flag}` is not a flag of {argv[0]} ({line})"
    config_file = argv[argv.index("--config") + 1] if "--config" in argv else None
    overrides = [a[len("--config."):].split("=")[0] for a in argv if a.startswith("--config.")]
    if config_file:
        path = os.path.join(ROOT, config_file.split(":")[0])
        assert os.path.isfile(path), f"README: {config_file} does not exist"
        config = config_module(path).get_config()
        for key in overrides:
            assert config_has(config, key), f"README: --config.{key} is not a field of {config_file} ({line})"
    for data_config in [argv[argv.index("--data_config") + 1]] if "--data_config" in argv else []:
        assert os.path.isfile(os.path.join(ROOT, data_config.split(":")[0])), data_config


def test_readme_commands_are_found():
    commands = readme_commands()
    programs = {shlex.split(c)[0] for c in commands}
    assert {"mellama-recipe", "mellama-prepare-corpus", "mellama-train", "mellama-evaluate", "mellama-convert-jax",
            "make"} <= programs, programs
    assert sum(c.startswith("mellama-recipe --config configs/me_llama/recipe_13b.py") for c in commands) == 2


def test_every_readme_command_names_real_flags_and_fields():
    for line in readme_commands():
        check_readme_command(line)


def test_a_renamed_flag_or_field_in_the_readme_fails():
    step4 = next(c for c in readme_commands() if "--config.init_from=gs://BUCKET/llama2-13b" in c)
    for planted in (step4.replace("--workdir", "--work_dir"), step4.replace("init_from", "init_form"),
                    "mellama-evaluate --model m --taks all --data_dir d --out_dir o"):
        with pytest.raises(AssertionError):
            check_readme_command(planted)


@pytest.mark.slow
def test_readme_recipe_dry_run_on_real_format_sources(tmp_path):
    """The README's one-command recipe with --dry_run, the bucket replaced by a local directory holding the
    sources in their distributed formats and a LLaMA-2-style HF directory: every input checked, every stage
    printed, nothing written."""
    from hf_fixtures import make_hf_model
    from test_recipe_real import TOKENIZER, real_format_root

    bucket = tmp_path / "bucket"
    real_format_root(str(bucket / "me_llama"))
    hf_dir = bucket / "Llama-2-13b-hf"
    make_hf_model(str(hf_dir), vocab_size=32000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1)
    shutil.copy(TOKENIZER, hf_dir)
    line = next(c for c in readme_commands() if c.startswith("mellama-recipe") and c.endswith("--dry_run"))
    argv = shlex.split(line.replace("gs://BUCKET", str(bucket)))
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", command_module(argv), *argv[1:]], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("--stages") == 7 and "mellama-train --config" in r.stdout, r.stdout
    assert not (bucket / "runs").exists()
