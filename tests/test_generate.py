"""Jitted generation against transformers: greedy parity, sampling filters, stopping, sharding, LoRA, CLI.

References nobody here wrote: transformers' `generate(do_sample=False)` on the same random weights (each
prompt run alone, unpadded, so our left padding is checked against no padding at all), and transformers'
logits warpers for temperature / top-k / top-p.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from hf_fixtures import make_hf_model, train_small_sentencepiece

from mellama_jax.config import ModelConfig
from mellama_jax.convert.mapping import params_from_hf
from mellama_jax.generate import (
    DecodeSpec,
    SamplingParams,
    bucket_batch,
    bucket_prompt_length,
    decode_fn,
    generate,
    left_pad,
    pack_stop_sequences,
    shard_params,
)
from mellama_jax.generate.decode import decode
from mellama_jax.generate.sampling import filter_logits, sample_next
from mellama_jax.generate.stops import NO_TOKEN
from mellama_jax.model import params as P
from mellama_jax.model.lora import LoraConfig, iter_lora, merge_lora

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW = 10
# Different lengths, so rows are left-padded by different amounts within one batch.
PROMPTS = [[1, 17, 33, 90, 5, 61, 7], [1, 44], [1, 120, 3, 3, 9, 81, 27, 64, 100, 11, 23, 6]]


def hf_greedy(model, prompt, new_tokens=NEW):
    """transformers greedy continuation of one unpadded prompt, EOS disabled so it runs new_tokens."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    new = out[0, len(prompt):].tolist()
    assert len(new) == new_tokens
    return new


def build(kv_heads: int, seed: int):
    hf = make_hf_model(seed=seed, num_key_value_heads=kv_heads)
    hf.generation_config.eos_token_id = None  # run every row to max_new_tokens on the HF side
    cfg = ModelConfig.from_hf_config(hf.config)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = jax.tree.map(jax.numpy.asarray, params_from_hf(cfg, state.__getitem__, scanned=True))
    refs = [hf_greedy(hf, p) for p in PROMPTS]
    return hf, cfg, params, refs


@pytest.fixture(scope="module")
def gqa():
    return build(kv_heads=2, seed=0)


@pytest.fixture(scope="module")
def mha():
    return build(kv_heads=4, seed=1)


@pytest.fixture(scope="module")
def gqa_greedy(gqa):
    _, cfg, params, _ = gqa
    return generate(cfg, params, PROMPTS, max_new_tokens=NEW, eos_id=-1)


def test_greedy_equals_transformers_batched_gqa_and_single(gqa, gqa_greedy):
    _, cfg, params, refs = gqa
    assert cfg.num_kv_heads == 2 and cfg.num_heads == 4
    assert gqa_greedy == refs
    # One prompt alone (batch bucket 1, no padding rows).
    assert generate(cfg, params, [PROMPTS[2]], max_new_tokens=NEW, eos_id=-1) == [refs[2]]


def test_greedy_equals_transformers_batched_mha(mha):
    _, cfg, params, refs = mha
    assert cfg.num_kv_heads == cfg.num_heads == 4
    assert generate(cfg, params, PROMPTS, max_new_tokens=NEW, eos_id=-1) == refs


def first_stop(tokens, eos, stops):
    """Reference: tokens before the first EOS or the first completed stop sequence."""
    for t, tok in enumerate(tokens):
        if tok == eos:
            return tokens[:t]
        for s in stops:
            if t + 1 >= len(s) and tokens[t + 1 - len(s):t + 1] == list(s):
                return tokens[:t + 1 - len(s)]
    return tokens


def test_eos_stops_only_its_row(gqa, gqa_greedy):
    _, cfg, params, _ = gqa
    full = gqa_greedy
    # An EOS id that row 0 emits mid-way (and not before): row 0 must end there, other rows only where
    # they emit the same token themselves.
    k = next(k for k in range(2, NEW) if full[0][k] not in full[0][:k])
    eos = full[0][k]
    got = generate(cfg, params, PROMPTS, max_new_tokens=NEW, eos_id=eos)
    assert got == [first_stop(row, eos, []) for row in full]
    assert got[0] == full[0][:k]
    assert any(len(row) == NEW for row in got), "the EOS choice should leave some row running to the end"


def test_stop_sequences_stop_only_their_row(gqa, gqa_greedy):
    _, cfg, params, _ = gqa
    full = gqa_greedy
    stops = [full[1][3:5], full[2][5:8]]  # two-token and three-token sequences from rows 1 and 2
    got = generate(cfg, params, PROMPTS, max_new_tokens=NEW, eos_id=-1, stop_sequences=stops)
    expected = [first_stop(row, -1, stops) for row in full]
    assert got == expected
    assert len(got[1]) <= 3 and len(got[2]) <= 5
    # Default EOS (cfg.eos_token_id) applies together with the stop sequences.
    with_eos = generate(cfg, params, PROMPTS, max_new_tokens=NEW, stop_sequences=stops)
    assert with_eos == [first_stop(row, cfg.eos_token_id, stops) for row in full]


def test_decoding_stops_once_every_row_has_ended(gqa, gqa_greedy):
    """The decode loop exits after the step at which its last row ended: the steps after it never run, so
    their output slots keep the NO_TOKEN they were created with (a loop running on writes filler there)."""
    _, cfg, params, _ = gqa
    full = gqa_greedy
    stops = [[row[3]] for row in full]  # every row ends by its 4th token at the latest
    spec = DecodeSpec(cfg=cfg, batch=4, prompt_len=16, max_new_tokens=NEW, num_stops=len(stops), stop_len=1)
    tokens, mask = left_pad(PROMPTS, 4, 16)
    stop_ids, stop_lens = pack_stop_sequences(stops)
    out = jax.device_get(decode_fn(spec)(params, None, tokens, mask, jax.random.key(0), np.int32(-1), stop_ids,
                                         stop_lens))
    last = int(out.num_tokens[:len(PROMPTS)].max())  # row 3 pads the batch: done before the first step
    assert last <= 4
    np.testing.assert_array_equal(out.tokens[:, last:], NO_TOKEN)
    assert [list(r[:n - d]) for r, n, d in zip(out.tokens, out.num_tokens, out.drop)][:len(PROMPTS)] == \
        [first_stop(row, -1, stops) for row in full]


def test_top_k_one_sampling_equals_greedy(gqa, gqa_greedy):
    _, cfg, params, _ = gqa
    got = generate(cfg, params, PROMPTS, max_new_tokens=NEW, eos_id=-1, temperature=0.8, top_k=1, seed=3)
    assert got == gqa_greedy


def test_same_seed_same_samples_other_seed_differs(gqa):
    _, cfg, params, _ = gqa
    kw = dict(max_new_tokens=NEW, eos_id=-1, temperature=1.0, top_k=50, top_p=0.95)
    a = generate(cfg, params, PROMPTS, seed=7, **kw)
    assert generate(cfg, params, PROMPTS, seed=7, **kw) == a
    assert generate(cfg, params, PROMPTS, seed=8, **kw) != a
    assert all(len(row) == NEW for row in a)


def hf_warped(logits, temperature, top_k, top_p):
    from transformers.generation.logits_process import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    out = warpers(None, torch.tensor(logits))
    return torch.softmax(out, dim=-1).numpy()


def our_distribution(logits, sampling):
    cand, ids = filter_logits(jax.numpy.asarray(logits), sampling)
    probs = np.asarray(jax.nn.softmax(cand, axis=-1))
    if ids is None:
        return probs
    full = np.zeros(logits.shape, np.float32)
    np.put_along_axis(full, np.asarray(ids), probs, axis=-1)
    return full


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.6), (0.5, 12, 0.8)])
def test_sampling_filters_equal_transformers_warpers(temperature, top_k, top_p):
    logits = np.random.default_rng(0).normal(size=(4, 40)).astype(np.float32) * 2
    ours = our_distribution(logits, SamplingParams(temperature, top_k, top_p))
    np.testing.assert_allclose(ours, hf_warped(logits, temperature, top_k, top_p), atol=1e-6)


def test_sample_frequencies_follow_the_filtered_distribution():
    logits = np.array([[2.0, 1.5, 1.0, 0.2, -1.0, 0.7]], np.float32)
    sampling = SamplingParams(temperature=1.5, top_k=0, top_p=0.85)
    rows = 20000
    draws = np.asarray(jax.jit(lambda l, k: sample_next(l, k, 0, sampling))(np.repeat(logits, rows, 0),
                                                                            jax.random.key(0)))
    freq = np.bincount(draws, minlength=logits.shape[1]) / rows
    expected = hf_warped(logits, 1.5, 0, 0.85)[0]
    assert np.all(freq[expected == 0] == 0)
    np.testing.assert_allclose(freq, expected, atol=0.015)


def test_sharded_generation_equals_unsharded(gqa, gqa_greedy):
    from mellama_jax.parallel import MeshConfig, make_mesh
    _, cfg, params, _ = gqa
    mesh = make_mesh(MeshConfig(data=4, fsdp=1, tensor=2))
    got = generate(cfg, P.unstack_layers(params, cfg.num_layers), PROMPTS, max_new_tokens=NEW, eos_id=-1, mesh=mesh)
    assert got == gqa_greedy
    # The cache is constrained to batch over data (4) and kv heads over tensor (2).
    spec = DecodeSpec(cfg=cfg, batch=4, prompt_len=16, max_new_tokens=NEW, scanned_params=False)
    tokens, mask = left_pad(PROMPTS, 4, 16)
    stop_ids, stop_lens = pack_stop_sequences([])
    placed, _ = shard_params(cfg, P.unstack_layers(params, cfg.num_layers), mesh)
    text = decode_fn(spec, mesh).lower(placed, None, tokens, mask, jax.random.key(0), np.int32(-1),
                                       stop_ids, stop_lens).as_text()
    cache_type = f"tensor<4x2x{16 + NEW}x{cfg.head_dim}xf32>"  # [B, KV, S, D]
    constrained = [line for line in text.splitlines() if "sharding_constraint" in line and cache_type in line]
    batch_over_data_heads_over_tensor = re.compile(r'\[\{"data"[^}]*\}, \{"tensor"\}, \{\}, \{\}\]')
    assert constrained and all(batch_over_data_heads_over_tensor.search(line) for line in constrained), constrained[:2]


def test_cpu_decode_compiles_dots_without_ynnpack(gqa):
    """decode_fn compiles with CPU_DECODE_OPTIONS (bench/decode.py: batch 8 1.1-1.4x faster on XLA:CPU's own
    dots); the same function compiled with XLA's defaults hands its dots to YNNPACK, so the marker is real."""
    _, cfg, params, _ = gqa
    spec = DecodeSpec(cfg=cfg, batch=8, prompt_len=16, max_new_tokens=4)
    tokens, mask = left_pad(PROMPTS, 8, 16)
    stop_ids, stop_lens = pack_stop_sequences([])
    args = (params, None, tokens, mask, jax.random.key(0), np.int32(-1), stop_ids, stop_lens)
    ours = decode_fn(spec).lower(*args).compile().as_text()
    xla_default = jax.jit(functools.partial(decode, spec)).lower(*args).compile().as_text()
    assert "ynn_fusion" in xla_default, "XLA:CPU no longer uses YNNPACK by default: re-measure CPU_DECODE_OPTIONS"
    assert "ynn_fusion" not in ours


def test_lora_adapters_equal_merged_weights(gqa):
    _, cfg, params, _ = gqa
    lora = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))
    # Random A and B (B is zero at init, which would hide a broken adapter path); numpy keeps it cheap.
    rng = np.random.default_rng(1)
    adapters = P.tree_from_paths({path: (0.1 * rng.standard_normal(shape)).astype(np.float32)
                                  for path, shape, *_ in iter_lora(cfg, lora, scanned=True)})
    got = generate(cfg, params, PROMPTS, max_new_tokens=NEW, eos_id=-1, lora=lora, adapters=adapters)
    merged = generate(cfg, merge_lora(cfg, lora, params, adapters, scanned=True), PROMPTS, max_new_tokens=NEW,
                      eos_id=-1)
    assert got == merged
    assert got != generate(cfg, params, PROMPTS, max_new_tokens=NEW, eos_id=-1), "adapters should change the output"


def test_batch_size_groups_prompts_and_keeps_order(gqa, gqa_greedy):
    _, cfg, params, _ = gqa
    # Batches of one (the batch-1 function compiled above), decoded shortest prompt first.
    assert generate(cfg, params, PROMPTS, max_new_tokens=NEW, eos_id=-1, batch_size=1) == gqa_greedy


def test_bad_inputs_raise_clear_errors(gqa):
    _, cfg, params, _ = gqa
    errors = [
        (ValueError, r"prompts\[1\] is empty", dict(prompts=[[1, 2], []])),
        (ValueError, r"prompts\[0\] holds token id\(s\) \[128\]", dict(prompts=[[1, 128]])),
        (TypeError, "tokenize it first", dict(prompts=["hello"])),
        (ValueError, "max_position_embeddings", dict(prompts=[[1] * 200], max_new_tokens=100)),
        (ValueError, "lora", dict(lora=LoraConfig())),
        (ValueError, r"stop_sequences\[0\] is empty", dict(stop_sequences=[[]])),
        (ValueError, "top_p", dict(temperature=1.0, top_p=0.0)),
        (ValueError, "max_new_tokens", dict(max_new_tokens=-1)),
    ]
    for error, message, kwargs in errors:
        kwargs = {"prompts": [[1, 2]], "max_new_tokens": 4, **kwargs}
        with pytest.raises(error, match=message):
            generate(cfg, params, **kwargs)
    assert generate(cfg, params, [[1, 2], [3]], max_new_tokens=0) == [[], []]


def test_buckets_padding_and_stop_packing():
    assert [bucket_prompt_length(n) for n in (1, 16, 17, 100, 1024, 1025, 3500)] == [16, 16, 32, 128, 1024, 1536, 3584]
    assert [bucket_batch(n) for n in (1, 3, 8, 9)] == [1, 4, 8, 16]
    assert bucket_batch(1, multiple=4) == 4 and bucket_batch(6, multiple=4) == 8
    tokens, mask = left_pad([[5, 6, 7], [9]], 3, 4, pad_id=0)
    np.testing.assert_array_equal(tokens, [[0, 5, 6, 7], [0, 0, 0, 9], [0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    ids, lens = pack_stop_sequences([[4, 5, 6], [7]])
    assert ids.shape == (2, 4) and lens.tolist() == [3, 1]
    assert ids[0].tolist() == [-1, 4, 5, 6] and ids[1].tolist() == [-1, -1, -1, 7]


def test_cli_generates_from_an_hf_directory(tmp_path):
    hf_dir = str(tmp_path / "hf")
    hf = make_hf_model(hf_dir, seed=3, vocab_size=100)  # the tokenizer's vocabulary
    hf.generation_config.eos_token_id = None
    sp = train_small_sentencepiece(hf_dir)
    text = "the patient was given"
    ids = [sp.bos_id()] + sp.encode(text)
    cmd = [sys.executable, "-m", "mellama_jax.generate", "--model", hf_dir, "--prompt", text,
           "--prompt_ids", "1,17,33", "--max_new_tokens", "6", "--eos_id", "-1", "--json"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["prompt_ids"] for row in rows] == [ids, [1, 17, 33]]
    assert rows[0]["new_ids"] == hf_greedy(hf, ids, 6) and rows[1]["new_ids"] == hf_greedy(hf, [1, 17, 33], 6)
    assert rows[0]["text"] == sp.decode(rows[0]["new_ids"])
    assert "tokens/s" in r.stderr
