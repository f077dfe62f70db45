"""Staged mixtures: shares that hold over short spans whatever the document lengths, stages keyed by step,
exact resume across a stage boundary (also 2 processes → 1), and a change of weights or components between
runs that neither repeats nor skips a document.

Corpus: unique documents ("bio 17 . …") of very different lengths — full articles ~5k tokens (biomedical),
notes ~1k (clinical), abstracts ~300 (general) — tokenized by the real LLaMA-2 tokenizer. "No repeats, no
skips" is checked against each component's own row stream: a component's pipeline does not depend on the
weights, so the rows it contributes to any run (resumed, reconfigured) must be exactly its own stream's first
rows, in order.
"""
import hashlib
import json
import logging
import os
import re

import numpy as np
import pytest
from data_fixtures import unique_docs, write_jsonl

from mellama_jax.data.loader import make_pretrain_iterator
from mellama_jax.data.mixture import STAGE_KEY, AccountingIterDataset
from mellama_jax.data.sharded import ShardedGrainSource
from mellama_jax.data.tokenizer import Tokenizer

ASSET = os.path.join(os.path.dirname(__file__), "assets", "llama2-tokenizer")
# name: (id prefix, words min, max, documents) — enough documents that no run here reaches a second epoch
LENGTHS = {"biomedical": ("art", 2500, 3300, 60), "clinical": ("note", 500, 650, 60),
           "general": ("abs", 130, 220, 240)}
B, SEQ = 16, 256
STAGES = [{"start_step": 10, "weights": {"biomedical": 10, "clinical": 3, "general": 7}}]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    files = {}
    for i, (name, (prefix, lo, hi, n)) in enumerate(LENGTHS.items()):
        files[name] = write_jsonl(str(root / f"{name}.jsonl"),
                                  [{"text": t} for t in unique_docs(prefix, n, seed=i, min_words=lo, max_words=hi)])
    return files, Tokenizer.load(ASSET)


def config(files, weights=(15, 1, 4), stages=(), names=tuple(LENGTHS), **kw):
    comps = [dict(name=n, weight=w, sources=[files[n]]) for n, w in zip(names, weights)]
    return dict(components=comps, stages=list(stages), num_packing_bins=16, **kw)


def shares(stats, names=tuple(LENGTHS)):
    return {n: stats[f"data/share/{n}"] for n in names}


def test_shares_hold_over_the_first_20k_tokens(corpus):
    """Articles ~5k tokens, notes ~1k, abstracts ~300, weights 15:1:4: within 5 points over the first 20k tokens
    (grain's per-element mix of 32-document blocks drew 100% of one component over such spans)."""
    files, tok = corpus
    it = make_pretrain_iterator(config(files), tok, seq_len=512, global_batch_size=8, seed=1, process_index=0,
                                process_count=1)
    tokens = 0
    while tokens < 20_000:
        b = next(it)
        tokens += int(np.count_nonzero(b["segment_ids"]))
    assert tokens < 24_000  # the check is over about the first 20k tokens, not a long average
    got = shares(it.stats())
    for name, target in zip(LENGTHS, (0.75, 0.05, 0.20)):
        assert abs(got[name] - target) < 0.05, got


def hosts(make, count, **kw):
    per = B // count
    return [ShardedGrainSource(make, global_batch_size=B, rows=(p * per, (p + 1) * per), **kw) for p in range(count)]


def run(sources, steps):
    out = []
    for _ in range(steps):
        parts = [next(s) for s in sources]
        out.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    return out


def merged_state(sources):
    state = {"shards": sources[0].shards, "states": {}}
    for s in sources:
        state["states"].update(s.get_state()["states"])
    return json.loads(json.dumps(state))  # what the checkpoint's JSON holds


def maker(corpus, cfg):
    files, tok = corpus
    return lambda shard, shards: make_pretrain_iterator(cfg, tok, seq_len=SEQ, global_batch_size=B, seed=7,
                                                        process_index=shard, process_count=shards)


def row_hashes(batches):
    return [hashlib.sha1(b["tokens"][r].tobytes() + b["segment_ids"][r].tobytes() + b["positions"][r].tobytes())
            .hexdigest() for b in batches for r in range(len(b["tokens"]))]


def component_streams(corpus, shards, rows):
    """Per shard, per component: hashes of the component's own rows (a run of that component alone)."""
    files, tok = corpus
    out = {}
    for shard in range(shards):
        for name in LENGTHS:
            it = make_pretrain_iterator(config(files, (1,), names=(name,)), tok, seq_len=SEQ,
                                        global_batch_size=B, seed=7, process_index=shard, process_count=shards)
            per = B // shards
            out[shard, name] = row_hashes([next(it) for _ in range(-(-rows // per))])
    return out


def assert_no_repeats_no_skips(batches, streams, shards):
    """Every row of the run is the next row of one component's own stream (per shard): nothing drawn twice,
    nothing skipped, whatever the weights did in between."""
    per = B // shards
    seen = {key: 0 for key in streams}
    index = {(shard, h): name for (shard, name), hs in streams.items() for h in hs}
    for b in batches:
        for shard in range(shards):
            for h in row_hashes([{k: v[shard * per:(shard + 1) * per] for k, v in b.items()}]):
                name = index.get((shard, h))
                assert name is not None, "a row that is in no component's stream"
                assert streams[shard, name][seen[shard, name]] == h, f"{name}: out of order (repeat or skip)"
                seen[shard, name] += 1
    return seen


def doc_ids(batches, tok):
    """(prefix, id) of every document start in the batches (documents carry a unique id in their first words)."""
    ids = []
    for b in batches:
        for toks, seg, pos in zip(b["tokens"], b["segment_ids"], b["positions"]):
            for s in np.unique(seg[(seg > 0) & (pos == 0)]):
                head = tok.decode(toks[(seg == s)][:8])
                m = re.match(r"\s*(art|note|abs) (\d+) \.", head)
                if m:  # a chunk of a split article does not start with the id
                    ids.append((m.group(1), int(m.group(2))))
    return ids


def test_staged_run_resumed_across_the_boundary_equals_the_uninterrupted_run(corpus):
    cfg = config(corpus[0], stages=STAGES)
    make = maker(corpus, cfg)
    uninterrupted_hosts = hosts(make, 2, shards=2)
    uninterrupted = run(uninterrupted_hosts, 20)
    for kill, count in ((7, 1), (13, 1), (7, 2)):  # before and after the stage boundary (step 10); 2 → 1 and 2 → 2
        first = hosts(make, 2, shards=2)
        before = run(first, kill)
        resumed = hosts(make, count)
        for s in resumed:
            s.set_state(merged_state(first))
        after = run(resumed, 20 - kill)
        for x, y in zip(before + after, uninterrupted):
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"kill at {kill}, {count} host(s): {k}")
    # Achieved shares per stage (counted by the stage each row was drawn in) within 2 points of the weights.
    stage_shares = [s.stats() for s in uninterrupted_hosts]
    for start, weights in ((0, (15, 1, 4)), (10, (10, 3, 7))):
        for name, w in zip(LENGTHS, weights):
            got = np.mean([st[f"data/stage_{start}/share/{name}"] for st in stage_shares])
            assert abs(got - w / sum(weights)) < 0.02, (start, name, got)
    # Every row is the next row of its component's own stream, and no document repeats within the epoch.
    seen = assert_no_repeats_no_skips(uninterrupted, component_streams(corpus, 2, 20 * B), 2)
    assert all(seen[0, n] > 0 and seen[1, n] > 0 for n in LENGTHS)
    ids = doc_ids(uninterrupted, corpus[1])
    assert len(ids) == len(set(ids)), "a document drawn twice"


def test_weights_and_components_changed_between_runs(corpus):
    """Run 1: 15:1:4 for 6 steps. Run 2 on the same state: another ratio and without `clinical` for 6 steps.
    Run 3: clinical back. Each component continues where it stopped: no row of any component repeats or is
    skipped across the changes, and the rows run 1 emitted are not emitted again."""
    files, tok = corpus
    shards = 2
    run1 = hosts(maker(corpus, config(files)), shards, shards=shards)
    b1 = run(run1, 6)
    run2 = hosts(maker(corpus, config(files, (1, 1), names=("biomedical", "general"))), 1)
    for s in run2:
        s.set_state(merged_state(run1))
    b2 = run(run2, 6)
    run3 = hosts(maker(corpus, config(files, (2, 5, 3))), 2)
    for s in run3:
        s.set_state(merged_state(run2))
    b3 = run(run3, 4)
    seen = assert_no_repeats_no_skips(b1 + b2 + b3, component_streams(corpus, shards, 16 * B), shards)
    assert all(seen[s, "clinical"] > 0 for s in range(shards))
    st = run2[0].stats()  # run 2's own weights held: general's share of its rows is about 1/2
    assert set(k for k in st if k.startswith("data/share/")) == {"data/share/biomedical", "data/share/general"}
    ids = doc_ids(b1 + b2 + b3, tok)
    assert len(ids) == len(set(ids)), "a document drawn twice"


def test_drift_from_the_weights_is_warned(caplog):
    """The accounting stage warns once per stage and component when achieved shares leave the margin."""
    import grain
    rows = []
    for _ in range(8):  # every row from component 0, but the stage asks for 50:50
        meta = np.zeros(4, np.int32)
        meta[0] = 1
        rows.append({"tokens": np.ones(4, np.int32), "segment_ids": np.ones(4, np.int32),
                     "positions": np.arange(4, dtype=np.int32), "loss_mask": np.ones(4, np.int32), "meta": meta,
                     STAGE_KEY: np.int32(0)})
    ds = grain.MapDataset.source(rows).to_iter_dataset().batch(2)
    it = AccountingIterDataset(ds, ("a", "b"), None, ((0, {"a": 1.0, "b": 1.0}),), margin=0.05,
                               min_tokens=16).__iter__()
    with caplog.at_level(logging.WARNING):
        list(it)
    warnings = [r.getMessage() for r in caplog.records if "data.share_margin" in r.getMessage()]
    assert len(warnings) == 2 and "'a' has 100.0%" in warnings[0] and "asks for 50.0%" in warnings[0]


def test_training_run_logs_loss_per_component_and_stage_shares(corpus, tmp_path):
    """metrics.jsonl of a staged-mixture training run: the training loss of each component's rows, the
    achieved shares per stage, the packing efficiency."""
    import ml_collections

    from mellama_jax.config import config_module
    from mellama_jax.train.config import TrainConfig, model_fields
    from mellama_jax.train.loop import train
    files, _ = corpus
    c = config_module(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "tiny_pretrain.py")).get_config()
    c.model = model_fields("tiny", vocab_size=32000, max_position_embeddings=128)
    c.log.progress_bar, c.log.every_steps, c.log.peak_flops_per_device = False, 2, 1e11
    c.train.steps, c.train.seq_len, c.eval.every_steps, c.checkpoint.every_steps = 6, 64, 0, 100
    c.data.kind, c.data.tokenizer = "mixture", ASSET
    c.data.mixture = ml_collections.ConfigDict(config(files, stages=[
        {"start_step": 3, "weights": {"biomedical": 1, "clinical": 1, "general": 1}}]))
    train(TrainConfig.from_config_dict(c), str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last_train = [r for r in records if r["kind"] == "train"][-1]
    assert all(np.isfinite(last_train[f"loss/{n}"]) and last_train[f"loss/{n}"] > 0 for n in LENGTHS)
    last_data = [r for r in records if r["kind"] == "data"][-1]
    assert {f"stage_{s}/share/{n}" for s in (0, 3) for n in LENGTHS} <= set(last_data)
    assert 0.5 < last_data["packing_efficiency"] <= 1.0
