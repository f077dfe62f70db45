"""Real weights end to end: a Hugging Face LLaMA with another shape than the demo model goes through the whole
recipe with only `--config.init_from=DIR`; the report's printed evaluation commands re-run and reproduce its
numbers. Plus the recipe's stage input keys (a changed stage re-runs with everything after it; --force)."""
import json
import os
import shlex
import subprocess
import sys

import pytest
from hf_fixtures import make_hf_model

from mellama_jax.config import config_module
from mellama_jax.data.hf_tokenizer import save_hf_tokenizer
from mellama_jax.data.tokenizer import train_tokenizer
from mellama_jax.demo import corpus as demo
from mellama_jax.recipe.driver import Recipe
from mellama_jax.recipe.stages import Stage, input_key, run_stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256)  # demo_smoke: 64 / 172 / 2 layers / vocab 512


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return env


@pytest.mark.slow
def test_recipe_from_a_hugging_face_llama_with_only_init_from(tmp_path):
    hf_dir = str(tmp_path / "hf")
    texts_dir = str(tmp_path / "texts")
    demo.write_demo_data(texts_dir, seed=1, scale=0.05)
    tok = train_tokenizer(demo.demo_texts(texts_dir), hf_dir, vocab_size=384)
    save_hf_tokenizer(tok, hf_dir)
    make_hf_model(hf_dir, seed=3, vocab_size=tok.vocab_size, **SHAPE)

    wd = tmp_path / "run"
    cmd = [sys.executable, "-m", "mellama_jax.recipe", "--config", os.path.join(ROOT, "configs/demo_smoke.py"),
           "--workdir", str(wd), f"--config.init_from={hf_dir}"]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]

    # Every stage trained the checkpoint's architecture with the checkpoint's tokenizer.
    for stage in ("pretrain", "instruct"):
        model = json.load(open(wd / stage / "config.json"))["model"]
        assert (model["hidden_size"], model["num_layers"], model["vocab_size"]) == (48, 3, tok.vocab_size), stage
    with open(os.path.join(hf_dir, "tokenizer.model"), "rb") as a, open(wd / "prepare/tokenizer/tokenizer.model",
                                                                          "rb") as b:
        assert a.read() == b.read()
    hf_config = json.load(open(wd / "export/hf_merged/config.json"))
    assert (hf_config["hidden_size"], hf_config["num_hidden_layers"]) == (48, 3)
    assert json.load(open(wd / "export/DONE.json"))["transformers_check"]["status"] == "ok"

    # The report's commands run as printed; the evaluation reproduces the recipe's numbers.
    report = open(wd / "report.md").read()
    lines = [line for line in report.splitlines() if line.startswith("python ")]
    assert not [line for line in lines if "<" in line], lines  # no placeholders
    evals = [line for line in lines if "mellama_jax.evaluate" in line]
    assert len(evals) == 2 and all("--template me_llama" in e and "--limit 2" in e for e in evals)
    for line, name in zip(evals, ("base", "tuned")):
        argv = shlex.split(line)
        r = subprocess.run([sys.executable, *argv[1:], "--no_progress"], cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out_dir = argv[argv.index("--out_dir") + 1]
        again = json.load(open(os.path.join(out_dir, "summary.json")))
        recorded = json.load(open(wd / "evaluate" / name / "summary.json"))
        assert again["settings"] == recorded["settings"], name
        numbers = lambda summary: {t: (v["num_examples"], v["metrics"]) for t, v in summary["tasks"].items()}
        assert numbers(again) == numbers(recorded), name
    train_lines = [line for line in lines if "mellama_jax.train" in line]
    assert len(train_lines) == 2 and all(os.path.isfile(shlex.split(t)[4]) for t in train_lines)

    # A changed evaluation setting re-runs evaluation (and what follows), nothing before it.
    r = subprocess.run(cmd + ["--config.evaluate.limit=1", "--stages", "evaluate"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("prepare", "pretrain", "instruct"):
        assert f"{stage}: already complete, skipped" in r.stdout
    assert "evaluate: its inputs changed" in r.stdout and "export: not selected" in r.stdout
    assert not (wd / "export" / "DONE.json").exists() or "export: already complete" not in r.stdout


def test_stage_input_keys_rerun_changed_stages_and_everything_after(tmp_path):
    runs = []

    def stages(**inputs):
        return [Stage(n, lambda d, n=n: runs.append(n) or {"n": n}, inputs=inputs.get(n)) for n in "abcd"]

    quiet = dict(echo=lambda _: None)
    run_stages(str(tmp_path), stages(a=1, b=1, c=1, d=1), **quiet)
    assert runs == list("abcd")
    runs.clear()
    run_stages(str(tmp_path), stages(a=1, b=1, c=1, d=1), **quiet)
    assert runs == []
    run_stages(str(tmp_path), stages(a=1, b=2, c=1, d=1), **quiet)  # b changed: b, c, d run again
    assert runs == list("bcd")
    runs.clear()
    run_stages(str(tmp_path), stages(a=1, b=2, c=1, d=1), force="c", **quiet)
    assert runs == list("cd")
    runs.clear()
    os.remove(tmp_path / "a" / "DONE.json")  # a's outputs redone: everything after it too
    run_stages(str(tmp_path), stages(a=1, b=2, c=1, d=1), **quiet)
    assert runs == list("abcd")
    runs.clear()
    (tmp_path / "c" / "leftover").write_text("from the old inputs")
    run_stages(str(tmp_path), stages(a=1, b=2, c=3, d=1), **quiet)
    assert runs == list("cd") and not (tmp_path / "c" / "leftover").exists()
    with pytest.raises(ValueError, match="unknown stage 'x'"):
        run_stages(str(tmp_path), stages(), force="x", **quiet)


def test_stage_input_keys_are_a_snapshot_of_the_config(tmp_path):
    """A stage's key is taken when the stages are listed, from a plain copy of the config: a later change to the
    live config (here a mixture component, a ConfigDict inside a list) does not re-key a stage, so a rerun of the
    same command finds the same keys as the run that wrote the markers."""
    config = config_module(os.path.join(ROOT, "configs", "me_llama", "recipe_13b.py")).get_config()
    stages = Recipe(config, str(tmp_path / "run")).stages()
    before = [input_key(s, None) for s in stages]
    json.dumps([s.inputs for s in stages])  # plain JSON values only: no str() of config objects in the key
    config.pretrain.data.mixture.components[0].weight = 99.0
    config.mixture.components[0]["sources"][0]["path"] = "elsewhere"
    assert [input_key(s, None) for s in stages] == before
    changed = Recipe(config, str(tmp_path / "run")).stages()  # listed again: the changed config is a new key
    assert [input_key(s, None) for s in changed][:3] != before[:3]
