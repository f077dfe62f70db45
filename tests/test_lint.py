"""`make lint` can fail: a planted layering violation and a planted in-function import are caught.

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
