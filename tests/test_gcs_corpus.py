"""A prepared corpus on a GCS server (gcp-storage-emulator on localhost, tests/gcs_server.py), as on a pod.

* Corpus preparation reads JSONL / .jsonl.gz / Parquet sources from gs:// and writes its shards to gs://
  (staged locally, uploaded, committed last); the documents are those of a preparation of the same files on
  local disk.
* The loader reads the gs:// corpus into exactly the batches it makes from a local copy of it, and an
  iterator state saved on one resumes the other to the same next batches.
* A tiny training run reads the gs:// corpus and ends bitwise-equal to the same run on the local copy.
* A preparation that fails after uploading a component leaves nothing that loads as complete; what a killed
  run left is cleared by the next run; a corpus without its COMMIT marker is refused.
* A raw ArrayRecord source on gs:// gives the loader the batches of the same file on local disk.
"""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter
from data_fixtures import REPO, demo_config, make_demo, unique_docs, write_jsonl
from etils import epath

from mellama_jax import paths
from mellama_jax.config import config_module
from mellama_jax.data.errors import DataError
from mellama_jax.data.loader import make_heldout_batches, make_pretrain_iterator
from mellama_jax.data.prepare import prepare_corpus
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.loop import train

KW = dict(seq_len=256, global_batch_size=4, seed=3, process_index=0, process_count=1)


@pytest.fixture(scope="module")
def corpus(gcs, tmp_path_factory):
    """The demo sources on gs://, prepared into a gs:// corpus; its local copy; a local preparation of the same
    sources from local disk."""
    root = str(tmp_path_factory.mktemp("gcs_corpus"))
    data, tok = make_demo(root, scale=0.3)
    remote_data = gcs.fresh_prefix("sources")
    paths.copy_tree(data, remote_data)
    remote = gcs.fresh_prefix("prepared")
    staging = os.path.join(root, "staging")
    os.makedirs(staging)
    report = prepare_corpus(demo_config(remote_data), tok, remote, workers=1, show_progress=False,
                            staging_dir=staging)
    local_copy = os.path.join(root, "copy")
    paths.copy_tree(remote, local_copy)
    local = os.path.join(root, "local")
    local_report = prepare_corpus(demo_config(data), tok, local, workers=1, show_progress=False)
    return dict(tok=tok, data=data, remote=remote, local_copy=local_copy, local=local, report=report,
                local_report=local_report, staging=staging, remote_data=remote_data)


def documents(data_dir):
    import tensorflow_datasets as tfds
    out = {}
    for comp in ("biomedical", "clinical", "general"):
        for split in ("train", "heldout"):
            ds = tfds.data_source(f"mellama_corpus/{comp}", data_dir=data_dir, split=split)
            out[comp, split] = sorted(tuple(ds[i]["tokens"].tolist()) for i in range(len(ds)))
    return out


def test_prepare_from_and_to_gcs_gives_the_documents_of_a_local_preparation(corpus):
    remote = corpus["remote"]
    assert paths.is_committed(remote) and epath.Path(remote, "corpus_report.json").exists()
    names = sorted(p.name for p in epath.Path(remote).iterdir())
    assert names == ["COMMIT", "corpus_report.json", "mellama_corpus"], names  # no staging left behind
    assert os.listdir(corpus["staging"]) == []  # the local staging is gone too
    assert corpus["report"]["components"] == corpus["local_report"]["components"]
    assert documents(remote) == documents(corpus["local"])


def same_batches(a, b, n):
    for _ in range(n):
        x, y = next(a), next(b)
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_loader_reads_the_gcs_corpus_like_its_local_copy_and_resumes_across(corpus):
    tok = corpus["tok"]
    cfg_remote = dict(demo_config(corpus["remote_data"]), prepared_dir=corpus["remote"])
    cfg_local = dict(demo_config(corpus["data"]), prepared_dir=corpus["local_copy"])
    remote_it = make_pretrain_iterator(cfg_remote, tok, **KW)
    local_it = make_pretrain_iterator(cfg_local, tok, **KW)
    same_batches(remote_it, local_it, 3)
    # A state saved while reading one resumes the other at the same place (and vice versa).
    for saved_from, cfg in ((remote_it, cfg_local), (local_it, cfg_remote)):
        resumed = make_pretrain_iterator(cfg, tok, **KW)
        resumed.set_state(saved_from.get_state())
        same_batches(resumed, saved_from, 2)
    for comp in ("biomedical", "clinical"):
        a = make_heldout_batches(cfg_remote, tok, comp, seq_len=128, batch_size=2, num_batches=2,
                                 process_index=0, process_count=1)
        b = make_heldout_batches(cfg_local, tok, comp, seq_len=128, batch_size=2, num_batches=2,
                                 process_index=0, process_count=1)
        assert len(a) == len(b) == 2
        for x, y in zip(a, b):
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def train_config(tok, mixture):
    c = config_module(os.path.join(REPO, "configs", "tiny_pretrain.py")).get_config()
    c.update_from_flattened_dict({"train.steps": 3, "checkpoint.every_steps": 0, "eval.every_steps": 0,
                                  "log.progress_bar": False, "log.peak_flops_per_device": 1e11,
                                  "model.vocab_size": tok.vocab_size, "data.kind": "mixture",
                                  "data.tokenizer": tok.model_path})
    c.data.mixture = ml_collections.ConfigDict(mixture)
    return TrainConfig.from_config_dict(c)


def test_training_reads_the_gcs_corpus(corpus, tmp_path):
    tok = corpus["tok"]
    remote = train(train_config(tok, dict(demo_config(corpus["remote_data"]), prepared_dir=corpus["remote"])),
                   str(tmp_path / "remote"))
    local = train(train_config(tok, dict(demo_config(corpus["data"]), prepared_dir=corpus["local_copy"])),
                  str(tmp_path / "local"), engine=remote.engine)
    assert remote.step == local.step == 3
    for a, b in zip(jax.tree.leaves(jax.device_get(remote.state.params)),
                    jax.tree.leaves(jax.device_get(local.state.params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def two_components(tmp_path, bad: bool):
    good = write_jsonl(str(tmp_path / "a.jsonl"), [{"text": t} for t in unique_docs("alpha", 40)])
    other = [{"text": t} for t in unique_docs("beta", 40)]
    if bad:
        other.insert(5, "{not json")
    second = write_jsonl(str(tmp_path / ("b_bad.jsonl" if bad else "b.jsonl")), other)
    return dict(strict=True, components=[dict(name="a", weight=1.0, sources=[good]),
                                         dict(name="b", weight=1.0, sources=[second])])


def test_failed_preparation_leaves_nothing_complete_on_gcs(gcs, corpus, tmp_path):
    tok = corpus["tok"]
    out = gcs.fresh_prefix("failed")
    # Component "a" is tokenized and uploaded; "b" then fails on its bad record (strict).
    with pytest.raises(DataError, match="b_bad.jsonl:6"):
        prepare_corpus(two_components(tmp_path, bad=True), tok, out, workers=1, show_progress=False)
    assert not paths.is_committed(out)
    assert not epath.Path(out, ".partial").exists()
    with pytest.raises(DataError, match="not a finished prepared corpus"):
        make_pretrain_iterator(dict(two_components(tmp_path, bad=False), prepared_dir=out), tok, **KW)

    # What a run killed mid-upload leaves (shards, no marker) is cleared by the next run, without --overwrite.
    epath.Path(out, ".partial", "mellama_corpus", "a", "leftover").write_text("x")
    epath.Path(out, "mellama_corpus", "a", "leftover").write_text("x")
    prepare_corpus(two_components(tmp_path, bad=False), tok, out, workers=1, show_progress=False)
    assert paths.is_committed(out)
    assert not any(p.name == "leftover" for p in paths.files_under(out))
    make_pretrain_iterator(dict(two_components(tmp_path, bad=False), prepared_dir=out), tok, **KW)
    # A finished corpus is kept unless --overwrite; without its marker the loader refuses it.
    with pytest.raises(DataError, match="already holds a prepared corpus"):
        prepare_corpus(two_components(tmp_path, bad=False), tok, out, workers=1, show_progress=False)
    epath.Path(out, paths.COMMIT_MARKER).unlink()
    with pytest.raises(DataError, match="not a finished prepared corpus"):
        make_pretrain_iterator(dict(two_components(tmp_path, bad=False), prepared_dir=out), tok, **KW)


def test_raw_array_record_source_on_gcs(gcs, corpus, tmp_path):
    """An ArrayRecord source of JSON records read in place on gs:// (loader and preparation) as from local disk."""
    local = str(tmp_path / "docs.array_record")
    writer = ArrayRecordWriter(local, "group_size:1")
    for text in unique_docs("gamma", 60):
        writer.write(json.dumps({"text": text}).encode())
    writer.close()
    remote = gcs.fresh_prefix("ar") + "/docs.array_record"
    epath.Path(remote).write_bytes(open(local, "rb").read())

    def cfg(path):
        return dict(components=[dict(name="a", weight=1.0, sources=[path])])
    same_batches(make_pretrain_iterator(cfg(remote), corpus["tok"], **KW),
                 make_pretrain_iterator(cfg(local), corpus["tok"], **KW), 2)
    report = prepare_corpus(cfg(remote), corpus["tok"], str(tmp_path / "prepared"), workers=1, show_progress=False)
    assert report["components"]["a"]["train"]["documents"] == 60


def test_sources_in_their_own_formats_are_read_from_gcs(gcs, corpus, tmp_path):
    """PubMed XML (.gz), PMC JATS, MIMIC notes CSV (.gz and plain) and a MIMIC-CXR files/ tree on gs://
    prepare to the documents of the same files on local disk."""
    import corpus_fixtures as F
    from test_corpus_sources import shard_tokens, sources_config
    local_src = F.write_sources(str(tmp_path / "sources"))
    remote_root = gcs.fresh_prefix("raw_sources")
    paths.copy_tree(str(tmp_path / "sources"), remote_root)
    remote_src = {k: paths.join(remote_root, os.path.relpath(v, str(tmp_path / "sources"))) for k, v in local_src.items()}
    out_local, out_remote = str(tmp_path / "from_local"), str(tmp_path / "from_gcs")
    local_report = prepare_corpus(sources_config(local_src), corpus["tok"], out_local, workers=1, show_progress=False)
    remote_report = prepare_corpus(sources_config(remote_src), corpus["tok"], out_remote, workers=1, show_progress=False)
    for comp in ("biomedical", "clinical"):
        assert shard_tokens(out_remote, comp) == shard_tokens(out_local, comp), comp
        assert remote_report["components"][comp] == local_report["components"][comp]
    assert remote_report["sources"]["biomedical"][remote_src["pubmed"]]["dropped"] == {"no_abstract": 1}
    assert remote_report["sources"]["clinical"][remote_src["cxr"]]["documents"] == {"train": 2}
