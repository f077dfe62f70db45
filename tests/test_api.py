"""`mellama_jax.load` on every kind of directory, model checkpoints (sharded restore, LoRA, tokenizer), and
model configs by name or file."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from hf_fixtures import hf_logits, make_hf_model, train_small_sentencepiece

import mellama_jax
from mellama_jax.checkpoints.errors import CheckpointError
from mellama_jax.checkpoints.model_dir import load_model_checkpoint, save_model_checkpoint
from mellama_jax.config import PRESETS, ConfigError, preset
from mellama_jax.convert.export import convert_checkpoint_to_hf
from mellama_jax.convert.hf import convert_hf_to_checkpoint, load_hf_params
from mellama_jax.data.hf_tokenizer import HF_TOKENIZER_FILES
from mellama_jax.model import params as P
from mellama_jax.model.lora import LoraConfig, init_lora, merge_lora
from mellama_jax.parallel import MeshConfig, make_mesh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    hf_dir = str(tmp_path_factory.mktemp("hf_api"))
    model = make_hf_model(hf_dir, seed=21)
    tokens = np.random.RandomState(0).randint(3, model.config.vocab_size, size=(2, 8))
    return hf_dir, model, tokens, hf_logits(model, tokens)


def _flat(tree):
    return {"/".join(k): np.asarray(v) for k, v in P.flatten_tree(tree).items()}


def assert_trees_equal(a, b):
    fa, fb = _flat(a), _flat(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


# ---------------------------------------------------------------- model configs
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_model_config_files_and_presets(name, tmp_path):
    assert mellama_jax.load_model_config(name) == preset(name)
    # A model config file of the user's own: the training schema's `model` group of a preset.
    path = tmp_path / "model.py"
    path.write_text("from mellama_jax.train.config import model_fields\n\n"
                    f"def get_config():\n    return model_fields({name!r}, scan_layers=False)\n")
    assert mellama_jax.load_model_config(path) == preset(name, scan_layers=False)


def test_load_model_config_from_json_files_and_overrides(tiny_hf, tmp_path):
    hf_dir = tiny_hf[0]
    from_hf = mellama_jax.load_model_config(hf_dir)
    assert (from_hf.hidden_size, from_hf.num_kv_heads, from_hf.rms_norm_eps) == (64, 2, 1e-5)
    from_hf.save_json(tmp_path / "model_config.json")
    assert mellama_jax.load_model_config(tmp_path / "model_config.json", scan_layers=False) == \
        from_hf.replace(scan_layers=False)
    (tmp_path / "bad.py").write_text("def get_config():\n    return {'hidden_sise': 8}\n")
    with pytest.raises(ConfigError, match=r"bad\.py\.hidden_sise: no such config field"):
        mellama_jax.load_model_config(tmp_path / "bad.py")
    with pytest.raises(ConfigError, match="neither a model preset"):
        mellama_jax.load_model_config("llama2_8b")


# ---------------------------------------------------------------- load()
def test_load_hf_dir_and_checkpoint_give_transformers_logits(tiny_hf, tmp_path):
    hf_dir, _, tokens, ref = tiny_hf
    from_hf = mellama_jax.load(hf_dir)
    assert isinstance(from_hf, mellama_jax.Model) and from_hf.tokenizer is None
    np.testing.assert_allclose(from_hf.logits(tokens), ref, rtol=0, atol=1e-4)
    ckpt = convert_hf_to_checkpoint(hf_dir, tmp_path / "ckpt", progress=False)
    from_ckpt = mellama_jax.load(ckpt)
    assert from_ckpt.config == from_hf.config
    np.testing.assert_allclose(from_ckpt.logits(tokens), ref, rtol=0, atol=1e-4)


def test_load_with_dtype_casts_parameters(tiny_hf):
    model = mellama_jax.load(tiny_hf[0], dtype="bfloat16")
    assert model.config.param_dtype == "bfloat16"
    assert {x.dtype for x in jax.tree.leaves(model.params)} == {np.dtype("bfloat16")}


def test_load_rejects_a_directory_that_is_no_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        mellama_jax.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        mellama_jax.load(tmp_path / "missing")


def test_logits_rejects_bad_token_arrays(tiny_hf):
    model = mellama_jax.load(tiny_hf[0])
    with pytest.raises(ValueError, match=r"token_ids: expected an integer array"):
        model.logits(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"segment_ids: shape \(1, 2\) does not match token_ids \(1, 3\)"):
        model.logits([[1, 2, 3]], segment_ids=[[1, 1]])


def _write_training_workdir(workdir, cfg, steps: dict, *, lora_cfg=None):
    """A workdir as mellama_jax.train writes it: checkpoints/<step>/{state, data_iter, config} (orbax composite)."""
    import orbax.checkpoint as ocp
    model = cfg.to_dict()
    lora = dict(rank=0, alpha=16.0, dropout=0.0, targets="q_proj,v_proj")
    if lora_cfg is not None:
        lora = dict(rank=lora_cfg.rank, alpha=lora_cfg.alpha, dropout=lora_cfg.dropout,
                    targets=",".join(lora_cfg.targets))
    run_config = {"model": model, "train": {"steps": 10, "lora": lora}, "optim": {"learning_rate": 8e-6}}
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state", "data_iter", "config"))
    for step, state in steps.items():
        manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                                   data_iter=ocp.args.JsonSave({"position": step}),
                                                   config=ocp.args.JsonSave(run_config)))
    manager.wait_until_finished()
    manager.close()


def test_load_training_workdir_restores_params_of_the_latest_step(tiny_hf, tmp_path):
    hf_dir, _, tokens, ref = tiny_hf
    cfg, params = load_hf_params(hf_dir)
    perturbed = jax.tree.map(lambda x: x * 0.5, params)
    opt_state = {"mu": jax.tree.map(np.zeros_like, params), "count": np.int32(3)}
    _write_training_workdir(tmp_path / "run", cfg, {
        100: {"params": perturbed, "opt_state": opt_state, "step": np.int32(100)},
        200: {"params": params, "opt_state": opt_state, "step": np.int32(200)}})
    latest = mellama_jax.load(tmp_path / "run")
    assert latest.step == 200 and latest.config.pad_token_id is None
    np.testing.assert_allclose(latest.logits(tokens), ref, rtol=0, atol=1e-4)
    earlier = mellama_jax.load(tmp_path / "run", step=100)
    assert earlier.step == 100
    assert_trees_equal(earlier.params, perturbed)
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 150; available steps: \[100, 200\]"):
        mellama_jax.load(tmp_path / "run", step=150)
    # A workdir whose config does not describe its parameters is named, not silently padded.
    wrong = cfg.replace(hidden_size=32)
    _write_training_workdir(tmp_path / "wrong", wrong, {1: {"params": params, "step": np.int32(1)}})
    with pytest.raises(CheckpointError, match=r"wrong/checkpoints/1/state: does not match the model config: "
                                              r"params/embed/embedding is stored with shape \(128, 64\)"):
        mellama_jax.load(tmp_path / "wrong")


def test_load_lora_training_workdir_merges_adapters(tiny_hf, tmp_path):
    cfg, base = load_hf_params(tiny_hf[0])
    lora_cfg = LoraConfig(rank=2, alpha=4.0, targets=("q_proj", "down_proj"))
    adapters = init_lora(cfg, lora_cfg, jax.random.PRNGKey(0))
    adapters = jax.tree.map(lambda a: np.asarray(a) + 0.01, adapters)  # B != 0: the merge changes weights
    _write_training_workdir(tmp_path / "run", cfg, {
        5: {"params": adapters, "frozen": base, "opt_state": {"mu": adapters}, "step": np.int32(5)}},
        lora_cfg=lora_cfg)
    model = mellama_jax.load(tmp_path / "run")
    assert model.lora_config == lora_cfg
    assert_trees_equal(model.params, merge_lora(cfg, lora_cfg, base, adapters))


def test_checkpoint_restores_onto_another_sharding_and_dtype(tiny_hf, tmp_path):
    """Saved from params sharded one way, restored straight onto another mesh layout."""
    hf_dir = tiny_hf[0]
    cfg, params = load_hf_params(hf_dir)
    fsdp_mesh = make_mesh(MeshConfig(data=1, fsdp=8, tensor=1))
    sharded = jax.tree.map(jax.device_put, params, mellama_jax.api.param_shardings(cfg, fsdp_mesh))
    ckpt = save_model_checkpoint(tmp_path / "ckpt", cfg, sharded)
    tensor_mesh = make_mesh(MeshConfig(data=2, fsdp=1, tensor=4))
    shardings = mellama_jax.api.param_shardings(cfg, tensor_mesh)
    cfg2, restored, extras = load_model_checkpoint(ckpt, shardings=shardings)
    assert cfg2 == cfg and extras["tokenizer_dir"] is None and extras["adapters"] is None
    for path, x in P.flatten_tree(restored).items():
        assert x.sharding == P.flatten_tree(shardings)[path], path
    assert_trees_equal(restored, params)
    _, as_bf16, _ = load_model_checkpoint(ckpt, dtype="bfloat16")
    np.testing.assert_array_equal(as_bf16["lm_head"]["kernel"], params["lm_head"]["kernel"].astype("bfloat16"))
    with pytest.raises(FileExistsError, match="already exists"):
        save_model_checkpoint(ckpt, cfg, params)


def test_lora_checkpoint_round_trip_and_merged_export(tiny_hf, tmp_path):
    cfg, base = load_hf_params(tiny_hf[0])
    lora_cfg = LoraConfig(rank=2, alpha=8.0, targets=("v_proj", "o_proj"))
    adapters = jax.tree.map(lambda a: np.asarray(a) + 0.02, init_lora(cfg, lora_cfg, jax.random.PRNGKey(1)))
    ckpt = save_model_checkpoint(tmp_path / "ckpt", cfg, base, lora_cfg=lora_cfg, adapters=adapters)
    _, restored_base, extras = load_model_checkpoint(ckpt)
    assert extras["lora_config"] == lora_cfg
    assert_trees_equal(extras["adapters"], adapters)
    assert_trees_equal(restored_base, base)
    with pytest.raises(ValueError, match="holds LoRA adapters; pass merge_lora=True"):
        convert_checkpoint_to_hf(ckpt, tmp_path / "refused", progress=False)
    assert not os.path.exists(tmp_path / "refused")
    out = convert_checkpoint_to_hf(ckpt, tmp_path / "merged", merge_lora=True, progress=False)
    _, exported = load_hf_params(out)
    assert_trees_equal(exported, merge_lora(cfg, lora_cfg, base, adapters))


def test_tokenizer_files_travel_through_conversion_both_ways(tiny_hf, tmp_path):
    import shutil

    import transformers
    src = str(tmp_path / "hf_with_tokenizer")
    shutil.copytree(tiny_hf[0], src)
    sp = train_small_sentencepiece(src)  # tokenizer.model only: the converter writes the HF tokenizer files
    text = "the patient was given metformin"
    expected = [sp.bos_id()] + sp.encode(text)

    ckpt = convert_hf_to_checkpoint(src, tmp_path / "ckpt", progress=False)
    assert sorted(os.listdir(os.path.join(ckpt, "tokenizer"))) == sorted(HF_TOKENIZER_FILES)
    model = mellama_jax.load(ckpt)
    assert model.tokenizer is not None and model.tokenizer.encode(text) == expected
    assert mellama_jax.load(src).tokenizer.encode(text) == expected

    out = convert_checkpoint_to_hf(ckpt, tmp_path / "hf_out", progress=False)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok.encode(text) == expected


def test_generate_hook_matches_transformers_greedy(tiny_hf):
    import torch
    hf_dir, torch_model, _, _ = tiny_hf
    model = mellama_jax.load(hf_dir)
    prompt = [1, 17, 33, 90, 5]
    got = model.generate([prompt], max_new_tokens=4, eos_id=-1)
    with torch.no_grad():
        ref = torch_model.generate(torch.tensor([prompt]), max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                   pad_token_id=0)[0, len(prompt):].tolist()
    assert got == [ref]


def test_import_mellama_jax_is_light():
    code = ("import sys, mellama_jax; heavy = [m for m in ('jax', 'torch', 'transformers', 'orbax.checkpoint') "
            "if m in sys.modules]; assert not heavy, heavy; mellama_jax.load; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_incomplete_or_mismatched_checkpoint_is_named(tiny_hf, tmp_path):
    ckpt = convert_hf_to_checkpoint(tiny_hf[0], tmp_path / "ckpt", progress=False)
    config_path = os.path.join(ckpt, "model_config.json")
    values = json.load(open(config_path))
    json.dump(dict(values, intermediate_size=100), open(config_path, "w"))
    # orbax alone would silently truncate/pad the arrays to the new shapes.
    with pytest.raises(CheckpointError, match=r"ckpt/params: does not match the model config: "
                                              r"layers/mlp/gate_proj/kernel is stored with shape \(2, 64, 96\), "
                                              r"expected \(2, 64, 100\)"):
        load_model_checkpoint(ckpt)
    os.rename(os.path.join(ckpt, "params"), os.path.join(tmp_path, "elsewhere"))
    with pytest.raises(CheckpointError, match=r"ckpt: incomplete model checkpoint \(no params/ directory\)"):
        load_model_checkpoint(ckpt)
