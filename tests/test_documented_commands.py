"""Every command the launch scripts, commands and config files document exists: each `python -m MODULE` is an
importable entry point (a module, or a package with __main__), each `python path.py` and each `--config` /
`--data_config` file is in the repository, and each documented launch command runs with --dry_run.
"""
import ast
import glob
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest
import tomllib

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


