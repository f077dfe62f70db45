"""The pretraining / SFT pipeline: 15:1:4 mixture, determinism, per-process shares, packing, masks, resume."""
import json
import os
import re
import subprocess
import sys

import grain
import numpy as np
import pytest
from data_fixtures import REPO, demo_config, make_demo, unique_docs, write_jsonl

from mellama_jax.data import templates as T
from mellama_jax.data.errors import DataReport
from mellama_jax.data.loader import DocumentBlocks, TokenizeBlock, make_heldout_batches, make_pretrain_iterator, make_sft_iterator
from mellama_jax.data.packing import OVERLONG_FLAG, BlockChunker, pack
from mellama_jax.data.sources import RecordSource, SourceConfig, text_check

SEQ = 512


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pipeline"))
    data, tok = make_demo(root)
    # A corpus whose documents carry unique ids, to follow every document through the pipeline.
    uniq = {}
    for name, n in (("bio", 300), ("clin", 60), ("gen", 120)):
        uniq[name] = write_jsonl(os.path.join(root, "uniq", f"{name}.jsonl"),
                                 [{"text": t} for t in unique_docs(name, n, seed=len(name))])
    uniq_cfg = dict(components=[dict(name="biomedical", weight=15.0, sources=[uniq["bio"]]),
                                dict(name="clinical", weight=1.0, sources=[uniq["clin"]]),
                                dict(name="general", weight=4.0, sources=[uniq["gen"]])])
    return dict(root=root, data=data, tok=tok, cfg=demo_config(data), uniq_cfg=uniq_cfg)


def _segments(batch):
    """[(tokens of one document)] of a batch, in row/segment order."""
    out = []
    for toks, seg in zip(batch["tokens"], batch["segment_ids"]):
        for s in range(1, seg.max() + 1):
            out.append(tuple(toks[seg == s].tolist()))
    return out


def _doc_ids(tok, batches):
    ids = set()
    for b in batches:
        for seg in _segments(b):
            m = re.match(r"(\w+) (\d+) \.", tok.decode(seg))
            assert m, tok.decode(seg)[:40]
            ids.add((m.group(1), int(m.group(2))))
    return ids


@pytest.fixture(scope="module")
def long_run(env):
    """>= 10k documents of the demo mixture (seed 0), with the iterator's statistics."""
    it = make_pretrain_iterator(env["cfg"], env["tok"], seq_len=SEQ, global_batch_size=16, seed=0,
                                process_index=0, process_count=1)
    batches, docs = [], 0
    while docs < 10_000:
        b = next(it)
        batches.append(b)
        docs += int(b["segment_ids"].max(axis=1).sum())
    return batches, it.stats(), docs


def test_mixture_matches_15_1_4(long_run):
    batches, stats, docs = long_run
    assert docs >= 10_000
    target = {"biomedical": 15 / 20, "clinical": 1 / 20, "general": 4 / 20}
    for name, share in target.items():
        assert abs(stats[f"data/share/{name}"] - share) < 0.02, (name, stats)
    # The accounting agrees with a direct count of non-padding tokens.
    real = sum(int((b["segment_ids"] != 0).sum()) for b in batches)
    assert sum(stats[f"data/tokens/{n}"] for n in target) == real


def test_batches_follow_contract(long_run):
    b = long_run[0][0]
    # [B, T] token fields, plus each row's mixture component (data/mixture.ROW_DOMAIN, a [B] field).
    assert set(b) == {"tokens", "segment_ids", "positions", "loss_mask", "row_domain"}
    for k, v in b.items():
        assert v.dtype == np.int32 and v.shape == ((16,) if k == "row_domain" else (16, SEQ)), k
    assert set(np.unique(b["row_domain"])) <= {0, 1, 2}  # biomedical, clinical, general
    np.testing.assert_array_equal(b["loss_mask"], (b["segment_ids"] != 0).astype(np.int32))


def test_same_seed_same_order_other_seed_differs(env, long_run):
    kw = dict(seq_len=SEQ, global_batch_size=16, process_index=0, process_count=1)
    again = make_pretrain_iterator(env["cfg"], env["tok"], seed=0, **kw)
    for expected in long_run[0][:3]:
        got = next(again)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k])
    other = next(make_pretrain_iterator(env["cfg"], env["tok"], seed=1, **kw))
    assert not np.array_equal(other["tokens"], long_run[0][0]["tokens"])


def test_processes_read_disjoint_shares(env):
    tok = env["tok"]
    seen = []
    for p in range(2):
        it = make_pretrain_iterator(env["uniq_cfg"], tok, seq_len=256, global_batch_size=8, seed=3,
                                    process_index=p, process_count=2)
        assert next(it)["tokens"].shape == (4, 256)  # global batch 8 over 2 processes
        seen.append(_doc_ids(tok, [next(it) for _ in range(6)]))
    assert seen[0] and seen[1] and not (seen[0] & seen[1])


def _pack_all(tok, texts, seq_len, bins=4, unit_tokens=None):
    src = [({"text": t}, f"mem:{i + 1}", ("text",)) for i, t in enumerate(texts)]
    ds = DocumentBlocks(grain.MapDataset.range(len(src)), 5, src).map(TokenizeBlock(tok, 0))
    chunked = grain.experimental.FlatMapIterDataset(ds.to_iter_dataset(),
                                                    BlockChunker(seq_len, "split", unit_tokens))
    return list(pack(chunked, seq_len, num_bins=bins, seed=0))


# unit_tokens 1: every document packed alone; 64 with short documents: several per packing unit (with
# documents up to 70 words, some longer than a row, blocks are mostly too long to group).
@pytest.mark.parametrize("unit_tokens,max_words", [(1, 70), (64, 70), (64, 4)])
def test_packing_invariants(env, unit_tokens, max_words):
    tok = env["tok"]
    seq = 64
    texts = unique_docs("doc", 150, seed=1, min_words=1, max_words=max_words)
    rows = _pack_all(tok, texts, seq, unit_tokens=unit_tokens)
    expected = []
    for t in texts:
        ids = tok.encode(t, bos=True, eos=True)
        expected += [tuple(ids[s:s + seq]) for s in range(0, len(ids), seq)]
    got, overlong = [], 0
    for r in rows:
        seg, pos, toks = r["segment_ids"], r["positions"], r["tokens"]
        assert seg.shape == pos.shape == toks.shape == (seq,)
        k = seg.max()
        # segments 1..k in order, then padding (id 0) only at the end
        nz = seg[seg != 0]
        assert np.all(np.diff(nz) >= 0) and set(nz.tolist()) == set(range(1, k + 1))
        assert np.all(seg[len(nz):] == 0) and np.all(toks[seg == 0] == 0)
        for s in range(1, k + 1):
            np.testing.assert_array_equal(pos[seg == s], np.arange((seg == s).sum()))
            got.append(tuple(toks[seg == s].tolist()))
        overlong += int(np.count_nonzero(r["meta"] & OVERLONG_FLAG))
    assert sorted(got) == sorted(expected)  # every token exactly once, documents intact or split in order
    assert max(r["segment_ids"].max() for r in rows) > 1  # rows do hold several documents
    assert overlong == sum(len(tok.encode(t, bos=True, eos=True)) > seq for t in texts)
    assert overlong > 0 or max_words < 70


def test_chunker_groups_short_documents_into_units(env):
    tok = env["tok"]
    block = TokenizeBlock(tok, 2).map([({"text": t}, f"mem:{i}", ("text",))
                                       for i, t in enumerate(unique_docs("doc", 12, seed=4, max_words=6))])
    units = BlockChunker(256, "split", 128).flat_map(block)
    assert len(units) < len(block)  # grouped
    unit = np.concatenate([u["unit"] for u in units])
    np.testing.assert_array_equal(unit[:, 0], np.concatenate([d["tokens"] for d in block]))  # order kept
    starts = np.flatnonzero(unit[:, 1] == 0)
    np.testing.assert_array_equal(np.diff(np.append(starts, len(unit))), [len(d["tokens"]) for d in block])
    assert np.all(unit[starts, 2] == 3) and np.all(np.delete(unit[:, 2], starts) == 0)  # doc_meta on starts
    assert all(len(u["unit"]) <= 128 for u in units)
    # Long documents are not grouped: each is its own unit.
    long_block = TokenizeBlock(tok, 0).map([({"text": t}, f"mem:{i}", ("text",))
                                            for i, t in enumerate(unique_docs("doc", 6, seed=5, min_words=30))])
    assert len(BlockChunker(256, "split", 128).flat_map(long_block)) == len(long_block)


def test_packed_forward_equals_per_document_forward(env):
    import jax

    from mellama_jax.config import ModelConfig
    from mellama_jax.model.llama import Transformer
    from mellama_jax.model.params import init_params
    cfg = ModelConfig(vocab_size=1024, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                      num_kv_heads=2, max_position_embeddings=256)
    # One jitted init (eager init_params compiles a small program per parameter: ~10x slower here).
    params = jax.jit(lambda key: init_params(cfg, key))(jax.random.key(0))
    row = next(r for r in _pack_all(env["tok"], unique_docs("doc", 40, seed=2, max_words=15), 128, unit_tokens=128)
               if r["segment_ids"].max() >= 3)
    # One compiled call: row 0 is the packed row; row s holds document s alone at the start of the row
    # (positions from 0, segment 1, padding after it — causal attention never looks at the padding).
    k = int(row["segment_ids"].max())
    tokens, positions, segments = [row["tokens"]], [row["positions"]], [row["segment_ids"]]
    for s in range(1, k + 1):
        doc = row["tokens"][row["segment_ids"] == s]
        n = len(doc)
        tokens.append(np.pad(doc, (0, 128 - n)))
        positions.append(np.arange(128, dtype=np.int32))
        segments.append(np.pad(np.ones(n, np.int32), (0, 128 - n)))
    logits, _ = jax.jit(Transformer(cfg).apply)({"params": params}, np.stack(tokens), np.stack(positions),
                                                np.stack(segments))
    logits = np.asarray(logits)
    for s in range(1, k + 1):
        sel = row["segment_ids"] == s
        np.testing.assert_allclose(logits[0][sel], logits[s][: sel.sum()], atol=2e-5, rtol=1e-5)


def test_sft_masks_cover_exactly_the_responses(env, tmp_path):
    tok = env["tok"]
    records = {}
    for i in range(60):
        q, a = f"Question {i}: what treats case {i}?", f"Answer {i} is drug {i % 7}."
        records[i] = (q, a)
    path = write_jsonl(str(tmp_path / "sft.jsonl"),
                       [{"conversations": [{"from": "human", "value": q}, {"from": "agent", "value": a}]}
                        for q, a in records.values()])
    for template in ("me_llama", "llama2_chat", "alpaca"):
        cfg = dict(components=[], instruct=dict(sources=[path], template=template))
        it = make_sft_iterator(cfg, tok, seq_len=128, global_batch_size=4, seed=0, process_index=0, process_count=1)
        checked = 0
        for _ in range(5):
            b = next(it)
            assert np.all(b["loss_mask"][b["segment_ids"] == 0] == 0)  # padding never counts
            for toks, seg, mask in zip(b["tokens"], b["segment_ids"], b["loss_mask"]):
                for s in range(1, seg.max() + 1):
                    t, m = toks[seg == s], mask[seg == s]
                    i = int(re.search(r"Question (\d+)", tok.decode(t)).group(1))
                    q, a = records[i]
                    shown = T.render_prompt(template, q)
                    assert t.tolist() == [tok.bos_id] + tok.encode(T.render_example(template, q, a), bos=False) + [tok.eos_id]
                    n_prompt = int((m == 0).sum())
                    assert np.all(m[:n_prompt] == 0) and np.all(m[n_prompt:] == 1)  # prompt, then response
                    assert tok.decode(t[1:n_prompt]).rstrip(" ") == shown.rstrip(" ")
                    assert tok.decode(t[n_prompt:-1]).strip() == a and t[-1] == tok.eos_id
                    checked += 1
        assert checked >= 20


def test_sft_reads_all_instruction_formats(env):
    it = make_sft_iterator(env["cfg"], env["tok"], seq_len=256, global_batch_size=4, process_index=0,
                           process_count=1)
    b = next(it)
    assert b["loss_mask"].sum() > 0 and b["segment_ids"].max() >= 1
    assert it.report.total == 0


def test_heldout_batches_are_fixed(env):
    kw = dict(seq_len=SEQ, batch_size=4, num_batches=3, process_index=0, process_count=1)
    a = make_heldout_batches(env["cfg"], env["tok"], "clinical", **kw)
    b = make_heldout_batches(env["cfg"], env["tok"], "clinical", **kw)
    assert len(a) >= 1 and set(a[0]) == {"tokens", "segment_ids", "positions", "loss_mask"}
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["tokens"], y["tokens"])
    # held-out documents are the held-out file's, not training documents
    held = RecordSource.build([SourceConfig(os.path.join(env["data"], "heldout/clinical.jsonl"))],
                              lambda c: text_check(c.text_fields), DataReport(strict=True))
    texts = {env["tok"].decode(s[1:-1]) for s in _segments(a[0])}
    assert texts <= {held[i][0]["text"] for i in range(len(held))}


def test_resume_single_process(env, tmp_path):
    import orbax.checkpoint as ocp
    kw = dict(seq_len=256, global_batch_size=8, seed=5, process_index=0, process_count=1)
    it = make_pretrain_iterator(env["cfg"], env["tok"], **kw)
    for _ in range(4):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # the state is plain JSON
    mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data_iter",))
    mngr.save(4, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = [next(it) for _ in range(3)]
    expected_stats = it.stats()

    fresh = make_pretrain_iterator(env["cfg"], env["tok"], **kw)
    fresh.set_state(state)
    restored = make_pretrain_iterator(env["cfg"], env["tok"], **kw)
    ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data_iter",)).restore(
        4, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(restored)))
    for resumed in (fresh, restored):
        for e in expected:
            got = next(resumed)
            for k in e:
                np.testing.assert_array_equal(got[k], e[k])
        assert resumed.stats() == expected_stats


def test_resume_two_processes_with_worker_processes(env, tmp_path):
    # Process 0 prefetches with a grain worker process (mp_prefetch), process 1 reads in its main thread.
    for p, workers in enumerate((1, 0)):
        (tmp_path / f"cfg{p}.json").write_text(json.dumps(dict(env["uniq_cfg"], worker_count=workers)))
    script = os.path.join(os.path.dirname(__file__), "data_resume_worker.py")
    procs = [subprocess.Popen([sys.executable, script, str(tmp_path / f"cfg{p}.json"), env["tok"].model_path, str(p), "2",
                               str(tmp_path / f"out{p}.json")], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for p in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    results = [json.loads((tmp_path / f"out{p}.json").read_text()) for p in range(2)]
    for r in results:
        assert r["resumed"] == r["expected"] and len(r["expected"]) == 3
    ids = [set(map(tuple, r["doc_ids"])) for r in results]
    assert ids[0] and ids[1] and not (ids[0] & ids[1])


def test_global_batch_from_process_local_data(long_run):
    import jax

    from mellama_jax.data.packing import BATCH_KEYS
    from mellama_jax.parallel import MeshConfig, batch_sharding, make_mesh
    from mellama_jax.train.batches import global_batch  # placement is train's (data/ never places on devices)
    mesh = make_mesh(MeshConfig(data=2, fsdp=4, tensor=1))
    local = long_run[0][0]
    arrays = global_batch(local, mesh, len(local["tokens"]), keys=BATCH_KEYS)
    for k, v in arrays.items():
        assert isinstance(v, jax.Array) and v.shape == local[k].shape
        assert v.sharding.is_equivalent_to(batch_sharding(mesh), 2)
        np.testing.assert_array_equal(np.asarray(v), local[k])


def test_epoch_shuffle_is_a_new_permutation_every_epoch():
    from mellama_jax.data.loader import EpochShuffle
    ds = EpochShuffle(grain.MapDataset.range(50), seed=3).repeat(None)
    epochs = [[ds[e * 50 + i] for i in range(50)] for e in range(3)]
    assert all(sorted(e) == list(range(50)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    again = EpochShuffle(grain.MapDataset.range(50), seed=3).repeat(None)
    assert [again[i] for i in range(100, 150)] == epochs[2]  # random access into a later epoch
