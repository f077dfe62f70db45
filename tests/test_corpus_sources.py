"""Readers of the corpus sources' own formats (PubMed XML, PMC JATS, MIMIC notes CSV, MIMIC-CXR) and their
preparation into shards; files written from the published schemas (corpus_fixtures.py)."""
import collections
import gzip
import json
import os

import corpus_fixtures as F
import pytest
from data_fixtures import make_demo

from mellama_jax.data import errors as E
from mellama_jax.data import readers
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.prepare import prepare_corpus
from mellama_jax.data.sources import PreparedSource, SourceConfig


def _read(fmt, path, strict=False, **options):
    report, dropped = DataReport(strict=strict), collections.Counter()
    recs = list(readers.read(fmt, path, SourceConfig(path, format=fmt, **options), report, dropped))
    return recs, report, dropped


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return F.write_sources(str(tmp_path_factory.mktemp("sources")))


def test_pubmed_baseline_citations(src):
    recs, report, dropped = _read("pubmed_xml", src["pubmed"], strict=True)
    assert [r["text"] for _, r, _ in recs] == F.PUBMED_TEXTS
    assert [{k: r[k] for k in readers.METADATA["pubmed_xml"]} for _, r, _ in recs] == F.PUBMED_META
    assert dropped == {"no_abstract": 1}
    # provenance: file, record index (the third citation, no abstract, is dropped) and PMID
    assert [(i, where) for i, _, where in recs] == [
        (i, f"{src['pubmed']}:record {i} (PMID {m['pmid']})") for i, m in enumerate(F.PUBMED_META)]


def test_pmc_jats_body_without_references_tables_captions(src):
    recs, report, dropped = _read("pmc_jats", src["jats"], strict=True)
    assert [r["text"] for _, r, _ in recs] == [F.JATS_TEXT]
    assert {k: recs[0][1][k] for k in readers.METADATA["pmc_jats"]} == F.JATS_META
    recs, _, _ = _read("pmc_jats", src["jats"], include=("tables", "captions"))
    assert recs[0][1]["text"] == F.JATS_TEXT_ALL
    with pytest.raises(DataError, match="include"):
        SourceConfig(src["jats"], format="pmc_jats", include=("references",))


@pytest.mark.parametrize("rule", ["keep", "mask", "label"])
def test_mimic3_noteevents_iserror_multiline_and_deid_rule(src, rule):
    recs, report, dropped = _read("mimic_notes_csv", src["mimic3"], strict=True, deid=rule)
    assert [r["text"] for _, r, _ in recs] == F.MIMIC3_TEXTS[rule]
    assert [{k: r[k] for k in F.MIMIC3_META[0]} for _, r, _ in recs] == F.MIMIC3_META
    assert dropped == {"iserror": 1}
    # provenance: the row (0-based) and ROW_ID, not the line (the first note spans 6 lines)
    assert [where for _, _, where in recs] == [f"{src['mimic3']}:record {i} (ROW_ID {m['note_id']})"
                                               for i, m in enumerate(F.MIMIC3_META)]


def test_mimic4_discharge_and_cxr_reports(src):
    recs, _, _ = _read("mimic_notes_csv", src["mimic4"], strict=True)
    assert [r["text"] for _, r, _ in recs] == [F.MIMIC4_TEXT]
    assert {k: recs[0][1][k] for k in ("note_id", "subject_id", "hadm_id", "category", "note_seq", "charttime")} == {
        "note_id": "10000032-DS-21", "subject_id": "10000032", "hadm_id": "22595853", "category": "DS",
        "note_seq": "21", "charttime": "2180-05-07 00:00:00"}
    paths = sorted(os.path.join(src["cxr"], rel) for rel in F.CXR_REPORTS)
    got = [_read("mimic_cxr_reports", p, strict=True)[0][0][1] for p in paths]
    assert [r["text"] for r in got] == F.CXR_TEXTS
    assert [(r["subject_id"], r["study_id"]) for r in got] == [("10000032", "50414267"), ("10000764", "57375967")]


def test_malformed_xml_and_csv_reported_with_file_line(tmp_path):
    bad_xml = tmp_path / "pubmed_bad.xml"
    text = F.PUBMED_XML.replace("<Language>spa</Language>", "<Language>spa</Lang>")
    bad_xml.write_text(text)
    bad_line = next(i for i, ln in enumerate(text.splitlines(), 1) if "</Lang>" in ln)
    recs, report, _ = _read("pubmed_xml", str(bad_xml))
    assert [r["text"] for _, r, _ in recs] == F.PUBMED_TEXTS[:1]  # the citation before the error is kept
    assert report.counts == {E.MALFORMED_XML: 1}
    assert report.examples[E.MALFORMED_XML][0].where == f"{bad_xml}:{bad_line}"
    with pytest.raises(DataError, match=f"{bad_xml}:{bad_line}: malformed_xml"):
        _read("pubmed_xml", str(bad_xml), strict=True)

    bad_csv = tmp_path / "NOTEEVENTS.csv"
    rows = [F.MIMIC3_ROWS[0], ["999", "1", "2", "2100-01-01", "", "", "Nursing/other", "Report"], F.MIMIC3_ROWS[1]]
    F.write_csv(str(bad_csv), F.MIMIC3_HEADER, rows)
    with open(bad_csv, "a") as f:  # a quote that never closes: the csv module reports it at end of data
        f.write('177,1,2,2100-01-01,,,Nursing/other,Report,,,"unterminated\n')
    recs, report, _ = _read("mimic_notes_csv", str(bad_csv))
    assert [r["note_id"] for _, r, _ in recs] == ["174", "175"]
    assert report.counts == {E.MALFORMED_CSV: 2}
    assert [p.where for p in report.examples[E.MALFORMED_CSV]] == [f"{bad_csv}:8", f"{bad_csv}:10"]
    with pytest.raises(DataError, match=f"{bad_csv}:8: malformed_csv"):
        _read("mimic_notes_csv", str(bad_csv), strict=True)
    other = tmp_path / "other.csv"
    F.write_csv(str(other), ["id", "body"], [["1", "x"]])
    with pytest.raises(DataError, match=f"{other}:1: header.*neither MIMIC-III"):
        _read("mimic_notes_csv", str(other))


def test_raw_loader_points_to_preparation(src):
    from mellama_jax.data.sources import RecordSource, text_check
    with pytest.raises(DataError, match="read by corpus preparation only"):
        RecordSource.build([SourceConfig(src["pubmed"], format="pubmed_xml")], lambda c: text_check(c.text_fields),
                           DataReport())


def sources_config(src, **extra):
    return dict(components=[
        dict(name="biomedical", weight=15.0, sources=[dict(path=src["pubmed"], format="pubmed_xml"),
                                                      dict(path=src["jats"], format="pmc_jats")]),
        dict(name="clinical", weight=1.0, sources=[dict(path=src["mimic3"], format="mimic_notes_csv", deid="mask"),
                                                   dict(path=src["mimic4"], format="mimic_notes_csv"),
                                                   dict(path=src["cxr"], format="mimic_cxr_reports")]),
    ], **extra)


def shard_tokens(out, component, split="train"):
    source = PreparedSource(out, component, split)
    return sorted(tuple(int(t) for t in source[i][0]["tokens"]) for i in range(len(source)))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_demo(str(tmp_path_factory.mktemp("tok")), scale=0.1)[1]


def test_prepare_sources_into_shards_of_exactly_the_expected_texts(src, tok, tmp_path):
    out = str(tmp_path / "prepared")
    report = prepare_corpus(sources_config(src), tok, out, workers=1, show_progress=False)
    want = {"biomedical": F.PUBMED_TEXTS + [F.JATS_TEXT],
            "clinical": F.MIMIC3_TEXTS["mask"] + [F.MIMIC4_TEXT] + F.CXR_TEXTS}
    for comp, texts in want.items():
        assert shard_tokens(out, comp) == sorted(tuple(tok.encode(t, bos=False)) for t in texts), comp
        assert report["components"][comp]["train"]["documents"] == len(texts)
    assert sorted(os.listdir(out)) == ["COMMIT", "corpus_report.json", "documents", "mellama_corpus"]
    # every shard document names its record; the record's metadata is in documents/, not in the text
    manifest = {}
    for name in os.listdir(os.path.join(out, report["documents_metadata"])):
        with gzip.open(os.path.join(out, "documents", name), "rt") as f:
            manifest.update((m["source"], m) for m in map(json.loads, f))
    sources = {comp: sorted(PreparedSource(out, comp, "train")[i][0]["source"].decode()
                            for i in range(len(PreparedSource(out, comp, "train")))) for comp in want}
    assert sorted(manifest) == sorted(sources["biomedical"] + sources["clinical"])
    assert sorted(m["pmid"] for m in manifest.values() if "pmcid" not in m and "pmid" in m) == ["38000001", "38000002"]
    assert manifest[f"{src['mimic3']}:record 0 (ROW_ID 174)"]["note_id"] == "174"
    assert manifest[f"{src['mimic3']}:record 1 (ROW_ID 175)"]["subject_id"] == "13702"
    jats = next(m for m in manifest.values() if m.get("pmcid"))
    assert {k: jats[k] for k in F.JATS_META} == F.JATS_META
    cxr = sorted((m["subject_id"], m["study_id"]) for m in manifest.values() if "study_id" in m)
    assert cxr == [("10000032", "50414267"), ("10000764", "57375967")]
    bio, clin = report["sources"]["biomedical"], report["sources"]["clinical"]
    assert bio[src["pubmed"]]["dropped"] == {"no_abstract": 1} and bio[src["pubmed"]]["documents"] == {"train": 2}
    assert bio[src["pubmed"]]["metadata_fields"]["pmid"] == 2
    assert clin[src["mimic3"]]["dropped"] == {"iserror": 1}
    assert clin[src["mimic3"]]["category"] == {"Discharge summary": 1, "Nursing/other": 1}
    assert clin[src["mimic4"]]["category"] == {"DS": 1}
    assert clin[src["cxr"]]["documents"] == {"train": 2}  # MIMIC-CXR summed over its ~227k files
    assert sorted(clin) == sorted([src["mimic3"], src["mimic4"], src["cxr"]])
    assert report["bad_input"]["counts"] == {}


def test_me_llama_mix_reads_the_sources_as_distributed():
    from data_fixtures import REPO

    from mellama_jax.config import config_module
    from mellama_jax.data.config import DataConfig
    cfg = DataConfig.from_config(config_module(os.path.join(REPO, "configs/data/me_llama_mix.py")).get_config("/d"))
    formats = {c.name: [s.format for s in c.sources] for c in cfg.components}
    assert formats["biomedical"] == ["pubmed_xml", "pmc_jats"]
    assert formats["clinical"] == ["mimic_notes_csv"] * 3 + ["mimic_cxr_reports"]
    assert len(cfg.decontaminate.tasks) == 12 and cfg.decontaminate.n == 13 and cfg.dedup.threshold == 0.8


def test_prepare_reports_malformed_rows_once_with_file_line(tok, tmp_path):
    bad_csv = str(tmp_path / "NOTEEVENTS.csv")
    F.write_csv(bad_csv, F.MIMIC3_HEADER, [F.MIMIC3_ROWS[0], ["999", "1", "2"], F.MIMIC3_ROWS[1]])
    bad_xml = tmp_path / "pubmed_bad.xml"
    bad_xml.write_text(F.PUBMED_XML.replace("<Language>spa</Language>", "<Language>spa</Lang>"))
    cfg = dict(components=[dict(name="c", weight=1.0, sources=[dict(path=bad_csv, format="mimic_notes_csv"),
                                                              dict(path=str(bad_xml), format="pubmed_xml")])],
               dedup=dict())  # the screening pass reads every record too; problems are still counted once
    report = prepare_corpus(cfg, tok, str(tmp_path / "out"), workers=1, show_progress=False)
    assert report["bad_input"]["counts"] == {E.MALFORMED_CSV: 1, E.MALFORMED_XML: 1}
    assert report["bad_input"]["examples"][E.MALFORMED_CSV][0].startswith(f"{bad_csv}:8: malformed_csv")
    assert report["components"]["c"]["train"]["documents"] == 3
    with pytest.raises(DataError, match=f"{bad_csv}:8: malformed_csv"):
        prepare_corpus(dict(cfg, strict=True), tok, str(tmp_path / "strict"), workers=1, show_progress=False)
    assert not (tmp_path / "strict").exists()
