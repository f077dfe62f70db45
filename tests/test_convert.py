"""Conversion both ways: HF safetensors -> our checkpoint -> HF, bit for bit, and every bad input refused.

References: the tensors transformers itself saved (bit-identical round trip) and transformers'
`AutoModelForCausalLM.from_pretrained` on our export (same logits as the original torch model).
"""
import glob
import json
import logging
import os
import shutil
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from hf_fixtures import hf_logits, make_hf_model
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from mellama_jax.checkpoints.model_dir import load_model_checkpoint
from mellama_jax.config import ConfigError
from mellama_jax.convert import hf as hf_lib
from mellama_jax.convert.export import convert_checkpoint_to_hf
from mellama_jax.convert.hf import HFCheckpointError, convert_hf_to_checkpoint, load_hf_params, parse_size, save_hf_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF_CASES = {
    "mha": dict(num_attention_heads=4, num_key_value_heads=4),
    "gqa2_rope_theta": dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0),
    "gqa1_odd_sizes": dict(vocab_size=131, hidden_size=60, intermediate_size=97, num_attention_heads=3,
                           num_key_value_heads=1),
}


def read_hf_tensors(hf_dir) -> dict:
    """Every tensor of an HF directory (single file or sharded), read with safetensors directly."""
    out = {}
    for path in sorted(glob.glob(os.path.join(hf_dir, "*.safetensors"))):
        out.update(load_file(path))
    return out


def assert_bit_identical(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), f"{name} differs"


def assert_no_output(out_dir):
    """Neither the output directory nor a leftover temporary sibling exists."""
    out_dir = os.path.abspath(out_dir)
    assert not os.path.exists(out_dir), f"{out_dir} was left behind"
    leftovers = glob.glob(out_dir + ".tmp-*") + glob.glob(out_dir + ".old-*")
    assert not leftovers, f"temporary directories left behind: {leftovers}"


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A GQA model saved by transformers, its tensors, and reference logits."""
    hf_dir = str(tmp_path_factory.mktemp("hf_tiny"))
    model = make_hf_model(hf_dir, seed=3)
    tokens = np.random.RandomState(0).randint(0, model.config.vocab_size, size=(2, 7))
    return hf_dir, model, tokens, hf_logits(model, tokens)


@pytest.mark.parametrize("name", sorted(HF_CASES))
def test_round_trip_is_bit_identical_and_loads_in_transformers(name, tmp_path):
    import transformers
    src = str(tmp_path / "src")
    torch_model = make_hf_model(src, seed=11, **HF_CASES[name])
    ckpt = convert_hf_to_checkpoint(src, tmp_path / "ckpt", progress=False)
    # The middle case also exercises sharded export (several shards + index).
    shard = "40KB" if name == "gqa2_rope_theta" else "2GB"
    out = convert_checkpoint_to_hf(ckpt, tmp_path / "hf_out", max_shard_size=shard, progress=False)

    assert_bit_identical(read_hf_tensors(src), read_hf_tensors(out))
    assert os.path.isfile(os.path.join(out, hf_lib.SAFE_INDEX)) == (shard == "40KB")
    exported = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert exported.config.rope_parameters["rope_theta"] == torch_model.config.rope_parameters["rope_theta"]
    assert exported.config.rms_norm_eps == 1e-5 and exported.config.num_key_value_heads == \
        torch_model.config.num_key_value_heads
    tokens = np.random.RandomState(1).randint(0, torch_model.config.vocab_size, size=(2, 9))
    np.testing.assert_allclose(hf_logits(exported.eval(), tokens), hf_logits(torch_model, tokens), rtol=0, atol=1e-5)


def test_unscanned_checkpoint_round_trips(tiny_hf, tmp_path):
    hf_dir = tiny_hf[0]
    ckpt = convert_hf_to_checkpoint(hf_dir, tmp_path / "ckpt", scan_layers=False, progress=False)
    cfg, params, _ = load_model_checkpoint(ckpt)
    assert not cfg.scan_layers and "layers_1" in params
    out = convert_checkpoint_to_hf(ckpt, tmp_path / "hf_out", progress=False)
    assert_bit_identical(read_hf_tensors(hf_dir), read_hf_tensors(out))


def test_bf16_checkpoint_keeps_bf16_and_upcasts_exactly(tmp_path):
    import torch
    src = str(tmp_path / "bf16")
    model = make_hf_model(None, seed=5).to(torch.bfloat16)
    model.save_pretrained(src, safe_serialization=True)
    source = read_hf_tensors(src)
    assert source["lm_head.weight"].dtype == ml_dtypes.bfloat16

    ckpt = convert_hf_to_checkpoint(src, tmp_path / "ckpt", progress=False)
    cfg, params, _ = load_model_checkpoint(ckpt)
    assert cfg.param_dtype == "bfloat16" and params["lm_head"]["kernel"].dtype == ml_dtypes.bfloat16
    assert_bit_identical(source, read_hf_tensors(convert_checkpoint_to_hf(ckpt, tmp_path / "out", progress=False)))

    # float32 on the way in is an exact upcast; bfloat16 on the way out restores the original bits.
    ckpt32 = convert_hf_to_checkpoint(src, tmp_path / "ckpt32", dtype="float32", progress=False)
    cfg32, params32, _ = load_model_checkpoint(ckpt32)
    assert cfg32.param_dtype == "float32"
    np.testing.assert_array_equal(params32["lm_head"]["kernel"], source["lm_head.weight"].astype(np.float32).T)
    out = convert_checkpoint_to_hf(ckpt32, tmp_path / "out32", dtype="bfloat16", progress=False)
    assert json.load(open(os.path.join(out, "config.json")))["torch_dtype"] == "bfloat16"
    assert_bit_identical(source, read_hf_tensors(out))


def test_export_shards_index_and_configs(tiny_hf, tmp_path):
    hf_dir = tiny_hf[0]
    cfg, params = load_hf_params(hf_dir)
    out = save_hf_checkpoint(tmp_path / "out", cfg, params, max_shard_size="30KB")
    index = json.load(open(os.path.join(out, hf_lib.SAFE_INDEX)))
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    tensors = read_hf_tensors(out)
    assert sorted(index["weight_map"]) == sorted(tensors)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    for shard in shards:
        with safe_open(os.path.join(out, shard), framework="numpy") as f:
            sizes = [f.get_tensor(k).nbytes for k in f.keys()]
        assert sum(sizes) <= 30_000 or len(sizes) == 1, (shard, sizes)  # only a lone big tensor may exceed it

    config = json.load(open(os.path.join(out, "config.json")))
    # LLaMA-2 values written explicitly (transformers' LlamaConfig defaults are LLaMA-1's).
    assert config["model_type"] == "llama" and config["rms_norm_eps"] == 1e-5
    assert config["max_position_embeddings"] == cfg.max_position_embeddings
    assert config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] is False
    gen = json.load(open(os.path.join(out, "generation_config.json")))
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["do_sample"]) == (1, 2, False)
    # Reading the sharded export gives the same parameters.
    cfg2, params2 = load_hf_params(out)
    assert cfg2 == cfg
    for (p, a), (_, b) in zip(sorted(_flat(params).items()), sorted(_flat(params2).items())):
        np.testing.assert_array_equal(a, b, err_msg=p)


def _flat(tree):
    from mellama_jax.model.params import flatten_tree
    return {"/".join(k): v for k, v in flatten_tree(tree).items()}


@pytest.mark.parametrize("size, expected", [("2GB", 2 * 10**9), ("500MB", 500 * 10**6), ("1GiB", 2**30),
                                            ("10kb", 10_000), (4096, 4096)])
def test_parse_size(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("bad", ["2XB", "", "-1GB", 0])
def test_parse_size_rejects_garbage(bad):
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size(bad)


# ---------------------------------------------------------------- bad inputs: clear error, nothing written
def _copy(hf_dir, dst):
    shutil.copytree(hf_dir, dst)
    return str(dst)


def _rewrite_tensors(hf_dir, edit):
    path = os.path.join(hf_dir, "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _edit_config(hf_dir, **changes):
    path = os.path.join(hf_dir, "config.json")
    config = json.load(open(path))
    config.update(changes)
    json.dump(config, open(path, "w"))


def _truncate(hf_dir):
    path = os.path.join(hf_dir, "model.safetensors")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1000)


def _shard_then_drop_one(hf_dir):
    """Re-save as several shards + index, then delete the second shard file."""
    cfg, params = load_hf_params(hf_dir)
    sharded = hf_dir + "_sharded"
    save_hf_checkpoint(sharded, cfg, params, max_shard_size="30KB")
    shutil.rmtree(hf_dir)
    os.rename(sharded, hf_dir)
    index = json.load(open(os.path.join(hf_dir, hf_lib.SAFE_INDEX)))
    os.remove(os.path.join(hf_dir, sorted(set(index["weight_map"].values()))[1]))


BAD_INPUTS = {
    # name: (how to break a copy of the HF dir, exception type, regex the message must match)
    "truncated_safetensors": (_truncate, HFCheckpointError, r"model\.safetensors: unreadable or truncated"),
    "missing_shard": (_shard_then_drop_one, HFCheckpointError, r"model-00002-of-\d+\.safetensors: missing"),
    "shape_mismatch": (lambda d: _edit_config(d, intermediate_size=100), HFCheckpointError,
                       r"tensor shapes do not match config\.json: model\.layers\.0\.mlp\.gate_proj\.weight "
                       r"\(96, 64\) \(expected \(100, 64\)\)"),
    "unknown_tensor": (lambda d: _rewrite_tensors(d, lambda t: t.update(
        {"model.layers.0.mlp.extra.weight": np.zeros(3, np.float32)})), HFCheckpointError,
        r"unknown tensor\(s\) model\.layers\.0\.mlp\.extra\.weight"),
    "missing_tensor": (lambda d: _rewrite_tensors(d, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight")),
                       HFCheckpointError, r"missing tensor\(s\) model\.layers\.1\.self_attn\.k_proj\.weight"),
    "not_llama": (lambda d: _edit_config(d, model_type="gpt2"), ConfigError, r"config\.json: model_type is 'gpt2'"),
    "missing_config": (lambda d: os.remove(os.path.join(d, "config.json")), HFCheckpointError,
                       r"config\.json: missing"),
    "missing_weights": (lambda d: os.remove(os.path.join(d, "model.safetensors")), HFCheckpointError,
                        r"no weights found"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_hf_input_raises_naming_it_and_writes_nothing(case, tiny_hf, tmp_path):
    break_it, error, pattern = BAD_INPUTS[case]
    src = _copy(tiny_hf[0], tmp_path / "src")
    break_it(src)
    out = tmp_path / "ckpt"
    with pytest.raises(error, match=pattern):
        convert_hf_to_checkpoint(src, out, progress=False)
    assert_no_output(out)


def test_pickle_checkpoint_refused_unless_allowed(tiny_hf, tmp_path):
    hf_dir, torch_model, _, _ = tiny_hf
    import torch
    src = str(tmp_path / "bin")  # the pre-safetensors format: a pickled state dict (transformers 5 no longer writes it)
    os.makedirs(src)
    shutil.copy(os.path.join(hf_dir, "config.json"), src)
    torch.save(torch_model.state_dict(), os.path.join(src, "pytorch_model.bin"))
    with pytest.raises(HFCheckpointError, match=r"pytorch_model\.bin: pickle checkpoints .* allow_pickle"):
        convert_hf_to_checkpoint(src, tmp_path / "refused", progress=False)
    assert_no_output(tmp_path / "refused")
    ckpt = convert_hf_to_checkpoint(src, tmp_path / "ckpt", allow_pickle=True, progress=False)
    out = convert_checkpoint_to_hf(ckpt, tmp_path / "out", progress=False)
    assert_bit_identical(read_hf_tensors(hf_dir), read_hf_tensors(out))


def test_existing_output_refused_unless_overwrite(tiny_hf, tmp_path):
    hf_dir = tiny_hf[0]
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"ckpt: output directory already exists"):
        convert_hf_to_checkpoint(hf_dir, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    convert_hf_to_checkpoint(hf_dir, out, overwrite=True, progress=False)
    assert sorted(os.listdir(out)) == ["COMMIT", "model_config.json", "params"]  # COMMIT: written last (paths.py)
    hf_out = tmp_path / "hf_out"
    hf_out.mkdir()
    with pytest.raises(FileExistsError, match=r"hf_out: output directory already exists"):
        convert_checkpoint_to_hf(out, hf_out, progress=False)
    assert os.listdir(hf_out) == []


def test_failed_export_leaves_no_output(tiny_hf, tmp_path, monkeypatch):
    """A crash half-way through writing shards leaves neither the output nor a temporary directory."""
    cfg, params = load_hf_params(tiny_hf[0])
    real_save, calls = hf_lib.save_file, []

    def fail_on_third_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(hf_lib, "save_file", fail_on_third_shard)
    with pytest.raises(OSError, match="disk full"):
        save_hf_checkpoint(tmp_path / "out", cfg, params, max_shard_size="30KB")
    assert_no_output(tmp_path / "out")


def test_export_rejects_params_that_do_not_match_the_config(tiny_hf, tmp_path):
    cfg, params = load_hf_params(tiny_hf[0])
    params["final_norm"]["scale"] = params["final_norm"]["scale"][:-1]
    with pytest.raises(ValueError, match=r"final_norm/scale has shape \(63,\), expected \(64,\)"):
        save_hf_checkpoint(tmp_path / "out", cfg, params)
    assert_no_output(tmp_path / "out")


def test_cli_subprocesses_convert_both_ways(tiny_hf, tmp_path):
    hf_dir = tiny_hf[0]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "hf_out")
    run = lambda *cmd: subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True,
                                      timeout=300)
    r = run("-m", "mellama_jax.commands.convert_hf_to_jax", "--hf_dir", hf_dir, "--out_dir", ckpt, "--scan_layers", "false")
    assert r.returncode == 0, r.stderr
    assert json.load(open(os.path.join(ckpt, "model_config.json")))["scan_layers"] is False
    r = run("-m", "mellama_jax.commands.convert_jax_to_hf", "--ckpt_dir", ckpt, "--out_dir", out, "--max_shard_size", "30KB",
            "--no_progress")
    assert r.returncode == 0, r.stderr
    assert_bit_identical(read_hf_tensors(hf_dir), read_hf_tensors(out))
    # A failing CLI exits non-zero with the error on stderr and writes nothing.
    r = run("-m", "mellama_jax.commands.convert_jax_to_hf", "--ckpt_dir", ckpt, "--out_dir", out, "--no_progress")
    assert r.returncode != 0 and "output directory already exists" in r.stderr


def test_conversion_streams_one_tensor_at_a_time(tmp_path):
    """Peak host memory (numpy allocations, traced): reading = the tree being built + one tensor; writing =
    one shard + one tensor. Never the whole model twice."""
    import tracemalloc

    import jax

    from mellama_jax.config import ModelConfig
    from mellama_jax.model.params import iter_params, tree_from_paths
    cfg = ModelConfig(vocab_size=4096, hidden_size=128, intermediate_size=352, num_layers=4, num_heads=4,
                      num_kv_heads=2)
    rng = np.random.default_rng(0)
    params = tree_from_paths({path: rng.standard_normal(shape, np.float32) for path, shape, _, _ in iter_params(cfg)})
    model_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    largest = max(x.nbytes for x in jax.tree.leaves(params))  # the embedding / lm_head: 2 MiB of 7 MiB
    hf_dir = save_hf_checkpoint(tmp_path / "hf", cfg, params)
    del params
    slack = 256 * 1024

    tracemalloc.start()
    try:
        _, loaded = load_hf_params(hf_dir)
        _, read_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        save_hf_checkpoint(tmp_path / "out", cfg, loaded, max_shard_size="1MB")
        write_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert read_peak <= model_bytes + largest + slack, (read_peak, model_bytes, largest)
    assert write_peak <= 1_000_000 + largest + slack, (write_peak, largest)
    assert write_peak < model_bytes / 2


def test_export_with_the_real_llama2_tokenizer_and_a_chosen_template(tmp_path, caplog):
    """A checkpoint with Meta's tokenizer and no recorded training run: exact tokenizer files, the chosen
    chat template, LLaMA-2's generation ids, and a card that says what is not known."""
    import sentencepiece as spm
    import transformers

    from mellama_jax.data import templates as T
    asset = os.path.join(os.path.dirname(__file__), "assets", "llama2-tokenizer", "tokenizer.model")
    src = str(tmp_path / "hf_src")
    make_hf_model(src, vocab_size=32000)
    shutil.copy(asset, src)
    ckpt = convert_hf_to_checkpoint(src, tmp_path / "ckpt", progress=False)
    with caplog.at_level(logging.WARNING, logger="mellama_jax.convert.export"):
        out = convert_checkpoint_to_hf(ckpt, tmp_path / "hf", chat_template="llama2_chat", progress=False)
    assert "split_special_tokens=True" in caplog.text  # the one case transformers cannot reproduce is said

    tok = transformers.AutoTokenizer.from_pretrained(out)
    sp = spm.SentencePieceProcessor(model_file=asset)
    text = "Pt is stable.  Will discharge.\n  - CXR: WBC 12.3  (H)"
    assert tok(text)["input_ids"] == [1] + sp.encode(text)
    assert tok.chat_template == T.hf_chat_template("llama2_chat")
    generation = transformers.GenerationConfig.from_pretrained(out)
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 2, None)
    card = open(os.path.join(out, "README.md")).read()
    assert "license: llama2" in card and "The base model is Meta's LLaMA-2" in card
    assert "No training run is recorded" in card and "Not evaluated" in card and "`llama2_chat`" in card
    with pytest.raises(Exception, match="unknown template"):
        convert_checkpoint_to_hf(ckpt, tmp_path / "hf2", chat_template="vicuna", progress=False)
    assert not os.path.exists(tmp_path / "hf2")


def test_missing_tokenizer_is_named_at_conversion(tiny_hf, tmp_path, capsys):
    """An HF directory without tokenizer.model: a warning naming it (the conversion goes on), or with
    --require_tokenizer a one-line error before anything is written."""
    from mellama_jax.commands import convert_hf_to_jax as command
    hf_dir = tiny_hf[0]
    assert not os.path.exists(os.path.join(hf_dir, "tokenizer.model"))
    out = tmp_path / "strict"
    assert command.main(["--hf_dir", hf_dir, "--out_dir", str(out), "--require_tokenizer", "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer.model" in err and "Traceback" not in err and not out.exists()
    out = tmp_path / "lenient"
    assert command.main(["--hf_dir", hf_dir, "--out_dir", str(out), "--no_progress"]) == 0
    assert "warning: --hf_dir" in capsys.readouterr().err and (out / "model_config.json").exists()
