"""Sources (formats), bad input (lenient report with file:line / strict error), and corpus preparation."""
import gzip
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
from data_fixtures import REPO, make_demo, unique_docs, write_jsonl
from etils import epath

from mellama_jax.config import config_module
from mellama_jax.data import errors as E
from mellama_jax.data.config import DataConfig
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.inputs import check_inputs
from mellama_jax.data.loader import make_heldout_batches, make_pretrain_iterator, make_sft_iterator
from mellama_jax.data.prepare import prepare_corpus
from mellama_jax.data.sources import RecordSource, SourceConfig, text_check, text_of
from mellama_jax.train.config import TrainConfig, apply_overrides
from mellama_jax.train.init_from import adopt_init_from


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("inputs"))
    data, tok = make_demo(root, scale=0.3)
    return dict(root=root, data=data, tok=tok)


def _build(configs, strict=False):
    report = DataReport(strict=strict)
    return RecordSource.build(configs, lambda c: text_check(c.text_fields), report), report


# ------------------------------------------------------------------------------------------- formats
def test_every_format_reads_the_same_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard
    from array_record.python.array_record_module import ArrayRecordWriter
    texts = unique_docs("doc", 25, seed=4)
    lines = "".join(json.dumps({"body": t, "n": i}) + "\n" for i, t in enumerate(texts)).encode()
    (tmp_path / "a.jsonl").write_bytes(lines)
    with gzip.open(tmp_path / "a.jsonl.gz", "wb") as f:
        f.write(lines)
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    pq.write_table(pa.Table.from_pylist([{"body": t, "n": i} for i, t in enumerate(texts)]), tmp_path / "a.parquet")
    writer = ArrayRecordWriter(str(tmp_path / "a.array_record"), "group_size:1")
    for i, t in enumerate(texts):
        writer.write(json.dumps({"body": t, "n": i}).encode())
    writer.close()
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet", "a.array_record"):
        src, report = _build([SourceConfig(str(tmp_path / name), text_fields=("body",))], strict=True)
        assert [text_of(src[i][0], src[i][2]) for i in range(len(src))] == texts, name
        assert report.total == 0
    src, _ = _build([SourceConfig(str(tmp_path / "a.jsonl"), text_fields=("title", "body"))])
    assert src[3][1] == f"{tmp_path / 'a.jsonl'}:4"  # where = file:line (1-based)
    with pytest.raises(DataError, match="no file matches"):
        _build([SourceConfig(str(tmp_path / "missing*.jsonl"))])
    (tmp_path / "data.bin").write_bytes(b"")
    with pytest.raises(DataError, match="cannot tell the format"):
        _build([SourceConfig(str(tmp_path / "data.bin"))])


def test_tfds_text_source_without_tensorflow(tmp_path):
    import tensorflow_datasets as tfds

    class TinyText(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        url_infos = None
        code_path = None

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, t in enumerate(unique_docs("tf", 12)):
                yield i, {"text": t}

    TinyText(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    src, report = _build([SourceConfig("tiny_text", format="tfds", data_dir=str(tmp_path))], strict=True)
    assert sorted(src[i][0]["text"] for i in range(len(src))) == sorted(unique_docs("tf", 12))
    assert importlib.util.find_spec("tensorflow") is None and "tensorflow" not in sys.modules


# ------------------------------------------------------------------------------------------- bad input
@pytest.fixture()
def bad_files(tmp_path):
    path = str(tmp_path / "mixed.jsonl")
    with open(path, "wb") as f:
        f.write(b'{"text": "good one"}\n')                 # 1
        f.write(b'{"text": "broken\n')                      # 2 malformed JSON
        f.write(b'{"text": "caf\xe9 latin-1"}\n')          # 3 not UTF-8
        f.write(b'{"title": "no text field"}\n')            # 4 missing field
        f.write(b'\n')                                      # 5 blank line: not a record
        f.write(b'{"text": "   "}\n')                       # 6 empty text
        f.write(b'["not", "an", "object"]\n')               # 7 wrong shape
        f.write(b'{"text": "good two"}\n')                  # 8
    empty = str(tmp_path / "empty.jsonl")
    open(empty, "w").close()
    return path, empty


def test_bad_input_lenient_counts_and_locations(bad_files):
    path, empty = bad_files
    src, report = _build([SourceConfig(path), SourceConfig(empty)])
    assert [src[i][0]["text"] for i in range(len(src))] == ["good one", "good two"]
    assert dict(report.counts) == {E.MALFORMED_JSON: 1, E.NOT_UTF8: 1, E.MISSING_FIELD: 1, E.EMPTY_TEXT: 1,
                                   E.BAD_RECORD: 1, E.EMPTY_FILE: 1}
    where = {k: [p.where for p in v] for k, v in report.examples.items()}
    assert where[E.MALFORMED_JSON] == [f"{path}:2"] and where[E.NOT_UTF8] == [f"{path}:3"]
    assert where[E.MISSING_FIELD] == [f"{path}:4"] and where[E.EMPTY_TEXT] == [f"{path}:6"]
    assert where[E.BAD_RECORD] == [f"{path}:7"] and where[E.EMPTY_FILE] == [empty]
    assert f"{path}:2" in report.summary()


@pytest.mark.parametrize("line,kind", [(2, "malformed_json"), (3, "not_utf8"), (4, "missing_field"),
                                       (6, "empty_text"), (7, "bad_record")])
def test_bad_input_strict_names_file_and_line(bad_files, tmp_path, line, kind):
    path, _ = bad_files
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    one = str(tmp_path / f"one_{line}.jsonl")
    with open(one, "wb") as f:  # the good first line, then the bad line at the same line number
        f.write(b"\n".join(lines[:1] + [b""] * (line - 2) + [lines[line - 1]]) + b"\n")
    with pytest.raises(DataError, match=f"{one}:{line}: {kind}"):
        _build([SourceConfig(one)], strict=True)


def test_empty_file_strict(bad_files):
    _, empty = bad_files
    with pytest.raises(DataError, match=f"{empty}: empty_file"):
        _build([SourceConfig(empty)], strict=True)


def test_non_positive_weights(tmp_path):
    doc = write_jsonl(str(tmp_path / "d.jsonl"), [{"text": "x"}])
    comps = [dict(name="a", weight=3.0, sources=[doc]), dict(name="b", weight=0, sources=[doc]),
             dict(name="c", weight=-1.0, sources=[doc])]
    report = DataReport()
    cfg = DataConfig.from_config(dict(components=comps), report)
    assert cfg.names == ("a",) and cfg.skipped == ("b", "c") and report.counts[E.BAD_WEIGHT] == 2
    assert [p.where for p in report.examples[E.BAD_WEIGHT]] == ["config.data.mixture.components[1].weight",
                                                                "config.data.mixture.components[2].weight"]
    with pytest.raises(DataError, match=r"^config\.data\.mixture\.components\[1\]\.weight: bad_weight"):
        DataConfig.from_config(dict(components=comps, strict=True))
    with pytest.raises(DataError, match="every component has a non-positive weight"):
        DataConfig.from_config(dict(components=comps[1:]))
    with pytest.raises(DataError, match=r"^config\.data\.mixture\.components\[0\]\.weight='x': expected a number"):
        DataConfig.from_config(dict(components=[dict(name="a", weight="x", sources=[doc])]))
    with pytest.raises(DataError, match=r"^config\.data\.mixture\.shufle: no such config field"):
        DataConfig.from_config(dict(components=comps, shufle=False))


def test_overlong_documents_lenient_split_and_strict_error(env, tmp_path, caplog):
    tok = env["tok"]
    texts = unique_docs("short", 40, seed=5, max_words=10)
    long_text = "long 0 . " + " ".join(["patient fever"] * 200)
    path = write_jsonl(str(tmp_path / "o.jsonl"), [{"text": t} for t in texts[:7] + [long_text] + texts[7:]])
    cfg = dict(components=[dict(name="bio", weight=1.0, sources=[path])], shuffle=False,
               num_packing_bins=8)  # all of the first rows come from the first documents
    with caplog.at_level(logging.WARNING):
        it = make_pretrain_iterator(cfg, tok, seq_len=64, global_batch_size=4, process_index=0, process_count=1)
        for _ in range(12):
            next(it)
    assert it.stats()["data/overlong_documents"] >= 1
    assert f"{path}:8: overlong_document" in caplog.text
    # Many overlong documents over several epochs: one line per source, then its count at 10, 100, ...
    other = write_jsonl(str(tmp_path / "many.jsonl"), [{"text": f"long {i} . " + "patient fever " * 60}
                                                       for i in range(6)])
    many = dict(components=[dict(name="bio", weight=1.0, sources=[path, other])], shuffle=False, overlong="split")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        it = make_pretrain_iterator(many, tok, seq_len=64, global_batch_size=4, process_index=0, process_count=1)
        for _ in range(60):
            next(it)
    seen = it.stats()["data/overlong_documents"]
    lines = [r.getMessage() for r in caplog.records if "overlong" in r.getMessage()]
    assert seen >= 20 and len(lines) <= 2 * 3, (seen, lines)
    assert sum(line.startswith(f"{other}:1: overlong_document") for line in lines) == 1
    assert sum(line.startswith(f"{path}:8: overlong_document") for line in lines) == 1
    assert any(line.startswith(f"{other}: 10 overlong documents so far") for line in lines), lines
    strict = make_pretrain_iterator(dict(cfg, strict=True), tok, seq_len=64, global_batch_size=4,
                                    process_index=0, process_count=1)
    with pytest.raises(DataError, match=f"{path}:8: document of"):
        for _ in range(12):
            next(strict)


def test_small_sources_hold_out_a_document_and_sft_a_padded_batch(env, tmp_path):
    """Three long articles at heldout_fraction=0.2, 120 instructions at 0.01: the defaults give held-out data."""
    tok = env["tok"]
    long_texts = unique_docs("article", 3, seed=3, min_words=300, max_words=400)
    articles = write_jsonl(str(tmp_path / "pmc.jsonl"), [{"text": t} for t in long_texts])
    cfg = dict(components=[dict(name="clinical", weight=1.0, heldout_fraction=0.2, sources=[articles])])
    held = make_heldout_batches(cfg, tok, "clinical", seq_len=128, batch_size=2, num_batches=2,
                                process_index=0, process_count=1)
    assert held and held[0]["segment_ids"].max() >= 1
    train = make_pretrain_iterator(cfg, tok, seq_len=128, global_batch_size=2, process_index=0, process_count=1)
    assert next(train)["segment_ids"].max() >= 1  # two articles left for training
    # one document: nothing can be held out; the error names the flags
    single = write_jsonl(str(tmp_path / "one.jsonl"), [{"text": "only 1 . patient fever"}])
    one = dict(components=[dict(name="clinical", weight=1.0, heldout_fraction=0.2, sources=[single])])
    with pytest.raises(DataError, match=r"set --config\.data\.mixture\.components\[0\]\.heldout_fraction \(now 0\.2;"
                                        r".*--config\.eval\.every_steps=0"):
        make_heldout_batches(one, tok, "clinical", seq_len=128, batch_size=2, num_batches=1,
                             process_index=0, process_count=1)
    records = [{"instruction": f"question {i} about fever", "output": f"answer {i}"} for i in range(120)]
    sft = dict(instruct=dict(sources=[write_jsonl(str(tmp_path / "sft.jsonl"), records)], heldout_fraction=0.01))
    batches = list(make_sft_iterator(sft, tok, seq_len=128, global_batch_size=8, process_index=0, process_count=1,
                                     split="heldout", repeat=False))
    assert len(batches) == 1 and batches[0]["tokens"].shape == (8, 128)
    assert batches[0]["loss_mask"].sum() > 0 and batches[0]["segment_ids"][1:].max() == 0  # one row, padded


# ------------------------------------------------------------------------------------------- preparation
def _prep_config(data):
    return dict(components=[
        dict(name="biomedical", weight=15.0, heldout_fraction=0.05,
             sources=[dict(path=os.path.join(data, "corpus/biomedical/*.jsonl"), text_fields=("title", "abstract"))]),
        dict(name="clinical", weight=1.0, sources=[dict(path=os.path.join(data, "corpus/clinical/notes.jsonl.gz"))],
             heldout_sources=[dict(path=os.path.join(data, "heldout/clinical.jsonl"))]),
        dict(name="general", weight=4.0, sources=[dict(path=os.path.join(data, "corpus/general/web.parquet"))]),
    ])


@pytest.fixture(scope="module")
def prepared(env, tmp_path_factory):
    """The demo mixture prepared once: (out_dir, report)."""
    out = str(tmp_path_factory.mktemp("prepared") / "corpus")
    # small units so that plain JSONL files are split by byte range across 2 worker processes
    report = prepare_corpus(_prep_config(env["data"]), env["tok"], out, workers=2, unit_bytes=40_000,
                            show_progress=False)
    return out, report


def test_prepare_corpus_matches_raw_tokenization(env, prepared, tmp_path):
    import tensorflow_datasets as tfds
    data, tok = env["data"], env["tok"]
    cfg = _prep_config(data)
    out, report = prepared
    assert "tensorflow" not in sys.modules
    assert os.path.isfile(os.path.join(out, "corpus_report.json"))
    raw_cfg = DataConfig.from_config(cfg)
    from mellama_jax.data.loader import _indexed_component
    for comp in raw_cfg.components:
        train, heldout, _ = _indexed_component(comp, False, ())
        for split, raw in (("train", train), ("heldout", heldout)):
            if split == "heldout" and comp.name == "general":
                continue  # no held-out split configured
            ds = tfds.data_source(f"mellama_corpus/{comp.name}", data_dir=out, split=split)
            got = sorted(tuple(ds[i]["tokens"].tolist()) for i in range(len(ds)))
            want = sorted(tuple(tok.encode(text_of(*raw[i][::2]), bos=False)) for i in range(len(raw)))
            assert got == want, (comp.name, split)  # same documents, same split rule, same ids
            assert report["components"][comp.name][split] == {"documents": len(want),
                                                              "tokens": sum(map(len, want))}
    # the loader reads the prepared corpus; the mixture still follows 15:1:4
    it = make_pretrain_iterator(dict(cfg, prepared_dir=out), tok, seq_len=512, global_batch_size=8,
                                process_index=0, process_count=1)
    for _ in range(40):
        b = next(it)
    assert set(b) == {"tokens", "segment_ids", "positions", "loss_mask", "row_domain"}
    assert abs(it.stats()["data/share/biomedical"] - 0.75) < 0.05
    held = make_heldout_batches(dict(cfg, prepared_dir=out), tok, "clinical", seq_len=256, batch_size=2,
                                num_batches=2, process_index=0, process_count=1)
    assert held and held[0]["segment_ids"].max() >= 1
    # a different tokenizer is refused
    from mellama_jax.data.tokenizer import train_tokenizer
    other = train_tokenizer(unique_docs("x", 300), str(tmp_path / "other"), vocab_size=300)
    with pytest.raises(DataError, match="different tokenizer"):
        make_pretrain_iterator(dict(cfg, prepared_dir=out), other, seq_len=64, global_batch_size=2,
                               process_index=0, process_count=1)
    with pytest.raises(DataError, match="already holds a prepared corpus"):
        prepare_corpus(cfg, tok, out, workers=1, show_progress=False)


def test_prepare_bad_input_lenient_report_and_strict_leaves_nothing_complete(env, bad_files, tmp_path):
    path, empty = bad_files
    cfg = dict(components=[dict(name="bio", weight=1.0, sources=[path, empty])])
    report = prepare_corpus(cfg, env["tok"], str(tmp_path / "lenient"), workers=1, show_progress=False)
    assert report["bad_input"]["counts"] == {E.MALFORMED_JSON: 1, E.NOT_UTF8: 1, E.MISSING_FIELD: 1,
                                             E.EMPTY_TEXT: 1, E.BAD_RECORD: 1, E.EMPTY_FILE: 1}
    assert f"{path}:3: not_utf8" in " ".join(report["bad_input"]["examples"][E.NOT_UTF8])
    assert report["components"]["bio"]["train"]["documents"] == 2
    out = str(tmp_path / "strict")
    with pytest.raises(Exception, match=f"{path}:2"):
        prepare_corpus(dict(cfg, strict=True), env["tok"], out, workers=1, show_progress=False)
    assert not os.path.exists(os.path.join(out, "corpus_report.json"))
    with pytest.raises(DataError, match="not a finished prepared corpus"):
        make_pretrain_iterator(dict(cfg, prepared_dir=out), env["tok"], seq_len=64, global_batch_size=2,
                               process_index=0, process_count=1)


@pytest.mark.beam
def test_prepare_with_apache_beam(env, tmp_path):
    pytest.importorskip("apache_beam")
    cfg = _prep_config(env["data"])
    local = prepare_corpus(cfg, env["tok"], str(tmp_path / "local"), workers=1, show_progress=False)
    beam = prepare_corpus(cfg, env["tok"], str(tmp_path / "beam"), runner="beam",
                          beam_options=["--runner=DirectRunner"], show_progress=False)
    assert beam["components"] == local["components"]
    # The shards themselves: the same documents (order may differ between runners), read back through
    # tfds.data_source as training reads them.
    from mellama_jax.data.sources import PreparedSource
    compared = 0
    for comp, splits in local["components"].items():
        for split in (s for s in ("train", "heldout") if splits.get(s, {}).get("documents")):
            def docs(root):
                source = PreparedSource(root, comp, split)
                return sorted(tuple(int(t) for t in source[i][0]["tokens"]) for i in range(len(source)))
            local_docs = docs(str(tmp_path / "local"))
            assert len(local_docs) == splits[split]["documents"]
            assert docs(str(tmp_path / "beam")) == local_docs, (comp, split)
            compared += 1
    assert compared >= len(local["components"])


def test_cli_demo_tokenizer_and_prepare(tmp_path):
    demo_dir = str(tmp_path / "demo")
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    r = run("-m", "mellama_jax.commands.make_demo_corpus", "--out_dir", demo_dir, "--scale", "0.1", "--tokenizer_vocab", "512")
    assert r.returncode == 0, r.stderr[-2000:]
    for task in ("pubmedqa", "medqa", "mednli", "i2b2", "hoc", "mimic_cxr", "emrqa"):
        with open(os.path.join(demo_dir, "eval", f"{task}.jsonl")) as f:
            rec = json.loads(f.readline())
        assert {"query", "answer", "choices", "gold"} <= set(rec)
    r = run("-m", "mellama_jax.commands.prepare_corpus", "--data_config", f"configs/data/demo_mix.py:{demo_dir}",
            "--tokenizer", os.path.join(demo_dir, "tokenizer"), "--out_dir", str(tmp_path / "prep"), "--workers", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "biomedical: train" in r.stdout and "tokens" in r.stdout  # per-domain token counts printed
    report = json.loads((tmp_path / "prep" / "corpus_report.json").read_text())
    assert report["components"]["clinical"]["heldout"]["documents"] > 0


# ------------------------------------------------------------------------------------------- pod configs
@pytest.fixture(scope="module")
def base_model(env, tmp_path_factory):
    """A tiny Llama-2-format HF directory with the corpus' tokenizer, standing in for LLaMA-2-13B."""
    from hf_fixtures import make_hf_model
    out = str(tmp_path_factory.mktemp("base") / "llama2")
    make_hf_model(out, vocab_size=1024, max_position_embeddings=4096)
    shutil.copy(os.path.join(env["root"], "tok", "tokenizer.model"), out)
    return out


def _pod_data(config_file: str, **overrides) -> list[str]:
    """What `mellama-train --config <config_file> --config.<k>=<v>... --dry_run` checks of the data."""
    cd = config_module(os.path.join(REPO, config_file)).get_config()
    apply_overrides(cd, overrides)
    cfg = TrainConfig.from_config_dict(adopt_init_from(cd, explicit=overrides))
    return check_inputs(cfg.data.mixture, cfg.data.kind)


def test_pretrain_pod_config_takes_its_prepared_corpus_by_flag(env, prepared, base_model, tmp_path):
    # The README's step 4, flags as typed there, on a local directory, through the CLI.
    out, report = prepared
    r = subprocess.run([sys.executable, "-m", "mellama_jax.train", "--config", "configs/me_llama/pretrain_13b.py",
                        "--workdir", str(tmp_path / "run"), f"--config.init_from={base_model}",
                        f"--config.data.mixture.prepared_dir={out}", "--dry_run"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for name, weight in (("biomedical", 15), ("clinical", 1), ("general", 4)):
        docs = report["components"][name]["train"]["documents"]
        assert f"dry run: data {name} (weight {weight}): prepared corpus {out}, {docs:,} documents" in r.stdout
    assert not os.path.exists(tmp_path / "run")
    # Without the flag, or with a directory that is not a finished corpus, the error names what to set.
    with pytest.raises(DataError, match=r"^config\.data\.mixture\.components\[0\] \('biomedical'\) has no data: "
                                        r"set --config\.data\.mixture\.prepared_dir=DIR"):
        _pod_data("configs/me_llama/pretrain_13b.py", init_from=base_model)
    with pytest.raises(DataError, match="not a finished prepared corpus"):
        _pod_data("configs/me_llama/pretrain_13b.py", init_from=base_model,
                     **{"data.mixture.prepared_dir": str(tmp_path)})
    # One component from another corpus, and a weight, by flag (the 70B config inherits its data).
    with pytest.raises(DataError, match=f"{tmp_path}: no corpus_report.json"):
        _pod_data("configs/me_llama/pretrain_70b.py", init_from=base_model,
                     **{"data.mixture.prepared_dir": out, "data.mixture.components[1].prepared_dir": str(tmp_path)})
    lines = _pod_data("configs/me_llama/pretrain_70b.py", init_from=base_model,
                         **{"data.mixture.prepared_dir": out, "data.mixture.components[0].weight": 12.0})
    assert any(line.startswith("data biomedical (weight 12): prepared corpus") for line in lines)


def test_pretrain_pod_config_reads_a_corpus_in_a_bucket(env, base_model, gcs, tmp_path):
    bucket = gcs.fresh_prefix("corpus")
    prepare_corpus(_prep_config(env["data"]), env["tok"], bucket, workers=1, show_progress=False)
    lines = _pod_data("configs/me_llama/pretrain_13b.py", init_from=base_model,
                         **{"data.mixture.prepared_dir": bucket})
    assert any(line.startswith(f"data clinical (weight 1): prepared corpus {bucket}") for line in lines)
    # an unfinished upload (no COMMIT marker) is refused
    epath.Path(bucket, "COMMIT").unlink()
    with pytest.raises(DataError, match="no corpus_report.json and COMMIT marker"):
        _pod_data("configs/me_llama/pretrain_13b.py", init_from=base_model,
                     **{"data.mixture.prepared_dir": bucket})


def test_chat_pod_config_takes_instruction_files_by_glob(base_model, tmp_path):
    config_file = "configs/me_llama/chat_13b_lora.py"  # chat_70b_lora.py builds its data the same way
    for i, sub in enumerate(("medqa/part-0.jsonl", "notes/2024/sum.jsonl")):  # any layout
        os.makedirs(os.path.dirname(tmp_path / "sft" / sub), exist_ok=True)
        write_jsonl(str(tmp_path / "sft" / sub), [{"instruction": f"q {i} {j}", "output": "a"} for j in range(5)])
    glob_flag = {"data.mixture.instruct.sources": str(tmp_path / "sft" / "**" / "*.jsonl")}
    lines = _pod_data(config_file, init_from=base_model, **glob_flag)
    assert any(line.startswith("data instructions: 2 file(s) from") for line in lines), lines
    with pytest.raises(DataError, match=r"^config\.data\.mixture\.instruct\.sources is empty: set "
                                        r"--config\.data\.mixture\.instruct\.sources=PATH_OR_GLOB"):
        _pod_data(config_file, init_from=base_model)
    with pytest.raises(DataError, match=r"config\.data\.mixture\.instruct\.sources: .*nothing.*: no file matches"):
        _pod_data(config_file, init_from=base_model,
                     **{"data.mixture.instruct.sources": str(tmp_path / "nothing" / "*.jsonl")})
