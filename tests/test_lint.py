"""`make lint` can fail: a planted layering violation, in-function import, unreachable line and over-complex function are caught.

The clean tree itself is checked by `make lint` (run in .ci/run); these tests show the checks have teeth, on
a copy of the package with one mistake planted.
"""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def tool(name):
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        pytest.skip(f"{name} not installed (the [lint] extra; make test installs it)")
    return path


@pytest.fixture
def tree(tmp_path):
    shutil.copytree(os.path.join(REPO, "mellama_jax"), tmp_path / "mellama_jax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "pyproject.toml"), tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(root):
    return subprocess.run([tool("lint-imports"), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(root)), timeout=300)


def test_layering_contract_catches_an_upward_import(tree):
    assert lint_imports(tree).returncode == 0
    model = tree / "mellama_jax" / "model" / "llama.py"
    model.write_text(model.read_text() + "\nfrom mellama_jax.train import loop  # planted: model imports train\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "mellama_jax.model.llama -> mellama_jax.train.loop" in result.stdout


def test_ruff_catches_an_import_inside_a_function(tree):
    target = tree / "mellama_jax" / "model" / "llama.py"
    ruff = [tool("ruff"), "check", "--no-cache", str(target)]
    assert subprocess.run(ruff, cwd=tree, capture_output=True, text=True).returncode == 0
    target.write_text(target.read_text() + "\n\ndef planted():\n    from mellama_jax import parallel\n"
                      "    return parallel\n")
    result = subprocess.run(ruff, cwd=tree, capture_output=True, text=True)
    assert result.returncode != 0 and "PLC0415" in result.stdout


def test_vulture_catches_unreachable_code(tree):
    """ruff has no unreachable-code rule; `make lint` runs vulture for it (pyproject.toml [tool.vulture])."""
    target = tree / "mellama_jax" / "train" / "config.py"
    vulture = [tool("vulture"), str(target)]
    assert subprocess.run(vulture, cwd=tree, capture_output=True, text=True, timeout=300).returncode == 0
    # planted: a check after the return, as the micro-batch check of issue 23 was
    target.write_text(target.read_text() + "\n\ndef planted(x):\n    return x\n    raise ValueError(x)\n")
    result = subprocess.run(vulture, cwd=tree, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "unreachable code after 'return'" in result.stdout, result.stdout


def test_ruff_caps_function_complexity(tree):
    target = tree / "mellama_jax" / "model" / "llama.py"
    ruff = [tool("ruff"), "check", "--no-cache", str(target)]
    body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(20))
    target.write_text(target.read_text() + "\n\ndef planted(x):\n" + body + "    return -1\n")
    result = subprocess.run(ruff, cwd=tree, capture_output=True, text=True)
    assert result.returncode != 0 and "C901" in result.stdout, result.stdout


def test_data_train_boundary_contracts(tree):
    """train/ builds no grain pipeline; data/ places nothing on devices (pyproject.toml's forbidden contracts)."""
    loop = tree / "mellama_jax" / "train" / "loop.py"
    loop.write_text(loop.read_text() + "\nimport grain  # planted: a pipeline built in train/\n")
    synthetic = tree / "mellama_jax" / "data" / "synthetic.py"
    synthetic.write_text(synthetic.read_text() + "\nfrom jax.sharding import NamedSharding  # planted: placement in data/\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "mellama_jax.train.loop -> grain" in result.stdout, result.stdout
    assert "mellama_jax.data.synthetic -> jax" in result.stdout, result.stdout
