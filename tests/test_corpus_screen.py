"""Deduplication and decontamination in corpus preparation, the same shards from the local runner and Beam,
and a failed preparation leaving nothing behind."""
import collections
import gzip
import importlib.util
import json
import os
import random

import corpus_fixtures as F
import pytest
from data_fixtures import WORDS, make_demo, write_jsonl
from test_corpus_sources import shard_tokens

from mellama_jax import paths
from mellama_jax.data import readers
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.prepare import prepare_corpus
from mellama_jax.data.sources import PreparedSource, SourceConfig
from mellama_jax.data.tokenizer import Tokenizer

TOKENIZER = os.path.join(os.path.dirname(__file__), "assets", "llama2-tokenizer", "tokenizer.model")


def words(n, seed):
    r = random.Random(seed)
    return [r.choice(WORDS) for _ in range(n)]


def doc(seed, n=100):
    return " ".join(words(n, seed))


def edit(text, positions, seed):
    w = text.split()
    for p in positions:
        w[p] = f"changed{seed}x{p}"
    return " ".join(w)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_demo(str(tmp_path_factory.mktemp("tok")), scale=0.1)[1]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Two components with planted duplicates, test items and clean documents; returns paths and texts."""
    root = tmp_path_factory.mktemp("planted")
    base = [doc(s) for s in range(8)]
    t = dict(base=base)
    # exact duplicates: within a source (base[3] twice) and across components (base[0] re-cased/punctuated);
    # a near duplicate (one word of 100 changed: 5-shingle Jaccard ~0.90 >= 0.8) and a paraphrase (ten words
    # changed: Jaccard ~0.3) of documents of the other component.
    t["exact_variant"] = base[0].upper().replace(" ", " ,  ", 7) + "."
    t["near"] = edit(base[1], [50], 1)
    t["paraphrase"] = edit(base[2], range(5, 100, 10), 2)
    # evaluation sets: PubMedQA-like JSONL (a shared 18-word instruction in every query) and a Parquet file
    instruction = ("Answer the following biomedical research question with yes no or maybe using only the "
                   "context given below please")
    contexts = [doc(100 + i, 40) for i in range(3)]
    t["test_context"] = contexts[1]
    evald = root / "eval"
    write_jsonl(str(evald / "pubmedqa.jsonl"), [
        {"id": f"pqa{i}", "query": f"{instruction} Context: {c} Question: is it?", "answer": "yes",
         "choices": ["yes", "no", "maybe"], "gold": 0, "text": c} for i, c in enumerate(contexts)])
    import pyarrow as pa
    import pyarrow.parquet as pq
    nli = [doc(200 + i, 30) for i in range(2)]
    pq.write_table(pa.Table.from_pylist([{"id": f"nli{i}", "query": f"Premise: {p}", "answer": "entailment",
                                          "choices": ["entailment"], "gold": 0, "text": p}
                                         for i, p in enumerate(nli)]), str(evald / "mednli.parquet"))
    t["prefix"], t["suffix"] = doc(300, 20), doc(301, 20)
    t["contaminated"] = f"{t['prefix']} {contexts[1]} {t['suffix']}"          # a whole test context inside
    t["contaminated_nli"] = f"{doc(302, 20)} {' '.join(nli[0].split()[3:23])} {doc(303, 10)}"  # 20 of its words
    t["short_overlap"] = f"{doc(304, 20)} {' '.join(contexts[2].split()[:12])} {doc(305, 20)}"  # 12 < 13 words
    t["template_only"] = f"{doc(306, 20)} {instruction} {doc(307, 20)}"
    bio = write_jsonl(str(root / "bio" / "a.jsonl"), [{"text": x} for x in base[:6] + [base[3]] +
                                                      [t["contaminated"], t["short_overlap"], t["template_only"]]])
    # clinical: MIMIC-IV radiology (one note is a MIMIC-CXR report: the sources overlap) + MIMIC-CXR + JSONL
    cxr_raw = F.CXR_REPORTS["p10/p10000032/s50414267.txt"]
    radiology = F.write_csv(str(root / "mimic4" / "radiology.csv"), F.MIMIC4_HEADER,
                            [["10000032-RR-14", "10000032", "", "RR", "14", "2180-05-06 22:25:00", "", cxr_raw]])
    cxr = str(root / "cxr" / "files")
    for rel, text in F.CXR_REPORTS.items():
        os.makedirs(os.path.join(cxr, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(cxr, rel), "w") as f:
            f.write(text)
    clin = write_jsonl(str(root / "clin" / "b.jsonl"), [{"text": x} for x in [
        t["exact_variant"], t["near"], t["paraphrase"], base[6] + " clinical", t["contaminated_nli"], base[7]]])
    t.update(bio=bio, clin=clin, radiology=radiology, cxr=cxr, eval=str(evald))
    return t


ASSETS = os.path.join(os.path.dirname(__file__), "assets", "pubmed_pmc")  # real PubMed / PMC files (README there)
PMC_ARTICLES = ("1471-2180-11-174", "ehp-116-1694", "pone.0046493")


@pytest.fixture(scope="module")
def planted_real(planted, tmp_path_factory):
    """The recipe's other two reader kinds, on the real files of tests/assets/pubmed_pmc, with planted
    duplicates and a test item: a PubMed update file that re-ships the citation with one word revised (a near
    duplicate), the PMC articles with one of them shipped again in a second package (an exact duplicate), and a
    summarisation test item cut from the text of another PMC article (that article is contaminated)."""
    root = tmp_path_factory.mktemp("real")
    xml = open(os.path.join(ASSETS, "pubmed-29768149.xml")).read()
    (root / "pubmed").mkdir()
    (root / "pubmed" / "pubmed25n0001.xml").write_text(xml)
    assert xml.count("double-blind trial") == 1
    (root / "pubmed" / "pubmed25n1300.xml").write_text(xml.replace("double-blind trial", "double-blind study"))
    for sub, names in (("oa_comm", PMC_ARTICLES), ("oa_other", PMC_ARTICLES[2:])):
        (root / "pmc" / sub).mkdir(parents=True)
        for name in names:
            (root / "pmc" / sub / f"{name}.nxml.gz").write_bytes(open(os.path.join(ASSETS, f"{name}.nxml.gz"), "rb").read())
    ehp = str(root / "pmc" / "oa_comm" / "ehp-116-1694.nxml.gz")
    (_, article, _), = readers.read("pmc_jats", ehp, SourceConfig(ehp, format="pmc_jats"), DataReport(strict=True),
                                    collections.Counter())
    span = " ".join(article["text"].split()[400:440])  # 40 words of its body
    write_jsonl(str(root / "eval" / "pubmed_sum.jsonl"),
                [{"id": "ps0", "query": f"Summarize the following article: {span}", "answer": "a summary", "text": span}])
    return dict(planted, pubmed=str(root / "pubmed" / "*.xml"), pmc=str(root / "pmc" / "**" / "*.nxml.gz"),
                pubmed_revised=str(root / "pubmed" / "pubmed25n1300.xml"), ehp=ehp,
                pmc_again=str(root / "pmc" / "oa_other" / "pone.0046493.nxml.gz"),
                pubmed_sum=str(root / "eval" / "pubmed_sum.jsonl"))


def config(p, mode="drop", dedup=True, decontam=True):
    cfg = dict(components=[
        dict(name="biomedical", weight=15.0, sources=[p["bio"]]),
        dict(name="clinical", weight=1.0, sources=[p["clin"], dict(path=p["radiology"], format="mimic_notes_csv"),
                                                   dict(path=p["cxr"], format="mimic_cxr_reports")])])
    if dedup:
        cfg["dedup"] = dict(threshold=0.8)
    if decontam:
        cfg["decontaminate"] = dict(tasks=[os.path.join(p["eval"], "pubmedqa.jsonl"),
                                           os.path.join(p["eval"], "mednli.parquet")], n=13, mode=mode)
    if "pubmed" in p:  # planted_real: every reader kind of the recipe's mixture (configs/data/me_llama_mix.py)
        cfg["components"][0]["sources"] += [dict(path=p["pubmed"], format="pubmed_xml"),
                                            dict(path=p["pmc"], format="pmc_jats")]
        if decontam:
            cfg["decontaminate"]["tasks"].append(p["pubmed_sum"])
    return cfg


def expected(p, mode="drop"):
    bio = p["base"][:6] + [p["short_overlap"], p["template_only"]]
    bio += [f"{p['prefix']} {p['suffix']}"] if mode == "span" else []
    clin = [p["paraphrase"], p["base"][6] + " clinical", p["base"][7], F.CXR_REPORTS["p10/p10000032/s50414267.txt"].strip(),
            F.CXR_TEXTS[1]]
    return {"biomedical": bio, "clinical": clin}


def check_shards(out, tok, want):
    for comp, texts in want.items():
        assert shard_tokens(out, comp) == sorted(tuple(tok.encode(t, bos=False)) for t in texts), comp


def test_dedup_and_decontamination_remove_planted_documents(planted, tok, tmp_path):
    p = planted
    out = str(tmp_path / "drop")
    report = prepare_corpus(config(p), tok, out, workers=1, show_progress=False)
    check_shards(out, tok, expected(p))
    dd = report["dedup"]
    assert dd["removed"] == {"exact": 3, "near": 1}
    assert dd["by_component"] == {"biomedical": {"exact": 1},
                                  "clinical": {"exact": 2, "near": 1, "across_components": 2}}
    assert dd["by_source"] == {p["bio"]: {"exact": 1}, p["clin"]: {"exact": 1, "near": 1},
                               p["cxr"]: {"exact": 1}}  # MIMIC-CXR: per configured directory, not per file
    ex = {e["where"]: e for e in dd["examples"]}
    assert ex[f"{p['clin']}:2"]["kind"] == "near" and ex[f"{p['clin']}:2"]["duplicate_of"] == f"{p['bio']}:2"
    cxr_dup = os.path.join(p["cxr"], "p10/p10000032/s50414267.txt:1")
    assert ex[cxr_dup]["duplicate_of"] == f"{p['radiology']}:record 0 (note_id 10000032-RR-14)" and ex[cxr_dup]["id"] == "50414267"
    assert ex[cxr_dup]["duplicate_of_id"] == "10000032-RR-14"
    dc = report["decontamination"]
    assert dc["documents_removed"] == 2 and dc["by_component"] == {"biomedical": 1, "clinical": 1}
    assert dc["tasks"] == {
        "pubmedqa": {"test_items": 3, "items_too_short": 0, "items_found": 1, "documents": 1, "sources": {p["bio"]: 1}},
        "mednli": {"test_items": 2, "items_too_short": 0, "items_found": 1, "documents": 1, "sources": {p["clin"]: 1}}}
    assert report["removed"] == {"biomedical": {"train": {"duplicate": 1, "contaminated": 1}},
                                 "clinical": {"train": {"duplicate": 3, "contaminated": 1}}}
    # thresholds come from the config: at 0.95 the one-word edit is no longer a near duplicate
    cfg = config(p)
    cfg["dedup"]["threshold"] = 0.95
    strict_near = prepare_corpus(cfg, tok, str(tmp_path / "t95"), workers=1, show_progress=False)
    assert strict_near["dedup"]["removed"] == {"exact": 3}


def test_span_mode_cuts_the_test_text_and_keeps_the_rest(planted, tok, tmp_path):
    out = str(tmp_path / "span")
    report = prepare_corpus(config(planted, mode="span", dedup=False), tok, out, workers=1, show_progress=False)
    want = expected(planted, "span")
    # without dedup the duplicates stay; the contaminated documents are trimmed instead of dropped
    p = planted
    nli_kept = " ".join(p["contaminated_nli"].split()[:20] + p["contaminated_nli"].split()[40:])
    want["biomedical"] = want["biomedical"] + [p["base"][3]]
    want["clinical"] = [p["exact_variant"], p["near"], nli_kept, F.CXR_TEXTS[0]] + want["clinical"]
    check_shards(out, tok, want)
    assert report["decontamination"]["documents_trimmed"] == 2 and "dedup" not in report


def test_failed_preparation_leaves_nothing_and_foreign_out_dir_refused(planted, tok, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = dict(components=[dict(name="good", weight=1.0, sources=[planted["bio"]]),
                           dict(name="bad", weight=1.0, sources=[str(empty)])])
    out = tmp_path / "out"
    with pytest.raises(DataError, match="'bad'"):
        prepare_corpus(cfg, tok, str(out), workers=1, show_progress=False)
    assert not out.exists()  # created by the run, removed with it
    out.mkdir()
    with pytest.raises(DataError):
        prepare_corpus(cfg, tok, str(out), workers=1, show_progress=False)
    assert list(out.iterdir()) == []  # a directory the user made is left, empty
    # a finished corpus survives a failed --overwrite run
    good = dict(components=cfg["components"][:1])
    first = prepare_corpus(good, tok, str(out), workers=1, show_progress=False)
    with pytest.raises(DataError):
        prepare_corpus(cfg, tok, str(out), workers=1, overwrite=True, show_progress=False)
    assert sorted(os.listdir(out)) == ["COMMIT", "corpus_report.json", "mellama_corpus"]
    assert json.loads((out / "corpus_report.json").read_text())["components"] == first["components"]
    # unrelated files are refused, even with overwrite, and left alone
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"holds files that are not a prepared corpus \(notes.txt\)"):
            prepare_corpus(good, tok, str(user), workers=1, overwrite=overwrite, show_progress=False)
    assert os.listdir(user) == ["notes.txt"]


@pytest.mark.beam  # make test-beam runs it with apache-beam installed
def test_same_shards_local_workers_and_beam(planted_real, tok, tmp_path, request):
    """One source set with every reader kind of the recipe (PubMed XML, PMC JATS — real files —, JSONL, MIMIC-IV
    CSV, MIMIC-CXR; planted exact, near and test-set duplicates in each) prepared by the local runner (1 and 2
    worker processes) and by Beam on two worker processes into the GCS test server: the planted documents
    removed, the same documents in the same shards, the same report."""
    p = planted_real
    cfg = config(p)
    one = prepare_corpus(cfg, tok, str(tmp_path / "one"), workers=1, show_progress=False)
    # what the real-file sources add to test_dedup_and_decontamination_remove_planted_documents' removals
    dd, dc = one["dedup"], one["decontamination"]
    assert dd["removed"] == {"exact": 4, "near": 2}
    assert dd["by_source"][p["pubmed_revised"]] == {"near": 1} and dd["by_source"][p["pmc_again"]] == {"exact": 1}
    ex = {e["where"]: e for e in dd["examples"]}
    assert ex[f"{p['pmc_again']}:record 0 (PMCID 3460867)"]["duplicate_of_id"] == "3460867"
    assert ex[f"{p['pubmed_revised']}:record 0 (PMID 29768149)"]["kind"] == "near"
    assert dc["tasks"]["pubmed_sum"] == {"test_items": 1, "items_too_short": 0, "items_found": 1, "documents": 1,
                                         "sources": {p["ehp"]: 1}}
    kept = {os.path.relpath(path, os.path.dirname(os.path.dirname(p["pubmed"]))): s["documents"]
            for path, s in one["sources"]["biomedical"].items() if path != p["bio"]}
    assert kept == {"pubmed/pubmed25n0001.xml": {"train": 1}, "pmc/oa_comm/1471-2180-11-174.nxml.gz": {"train": 1},
                    "pmc/oa_comm/pone.0046493.nxml.gz": {"train": 1}}, kept
    two = prepare_corpus(cfg, tok, str(tmp_path / "two"), workers=2, show_progress=False)
    runs = {"two": two}
    if importlib.util.find_spec("apache_beam") is not None:  # make test-beam; not in the main environment
        # one Beam run is both: two worker processes, writing into the GCS test server (each Beam run costs
        # ~20 s of process start-ups on CI's 2 cores)
        workers = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
        gcs = request.getfixturevalue("gcs")
        remote = gcs.fresh_prefix("beam_corpus")
        # The worker processes write the shards: this (driver) process cannot write an ArrayRecord file at all,
        # and stages nothing locally.
        monkeypatch = request.getfixturevalue("monkeypatch")
        from array_record.python import array_record_module

        def driver_writes(*args, **kwargs):
            raise AssertionError("the driver wrote an ArrayRecord shard")
        monkeypatch.setattr(array_record_module, "ArrayRecordWriter", driver_writes)
        (tmp_path / "staging").mkdir()
        runs["beam_gcs"] = prepare_corpus(cfg, tok, remote, runner="beam", beam_options=workers,
                                          show_progress=False, staging_dir=str(tmp_path / "staging"))
        monkeypatch.undo()
        assert not any(n.endswith(".array_record") or "array_record-" in n for _, _, files in
                       os.walk(tmp_path / "staging") for n in files)
        shards = [p.name for p in paths.files_under(remote) if "array_record-" in p.name]
        assert shards and all("-of-" in n for n in shards), shards
        assert runs["beam_gcs"]["runner"] == "beam" and paths.resolve(paths.join(remote, paths.COMMIT_MARKER)).exists()
        # the Beam counters a user follows in the runner's UI, against the local runner's report
        removed = collections.Counter()
        for splits in one["removed"].values():
            for counts in splits.values():
                removed.update(counts)
        assert runs["beam_gcs"]["beam_counters"] == {
            "documents_read": one["dedup"]["documents_seen"], "contaminated": one["decontamination"]["documents_removed"],
            "exact_duplicates": one["dedup"]["removed"]["exact"],
            "near_pairs": one["dedup"]["removed"]["near"],  # each planted near duplicate is one pair
            "documents_written": sum(c[s]["documents"] for c in one["components"].values() for s in c),
            "tokens_written": one["total_tokens"], "removed_duplicate": removed["duplicate"],
            "removed_contaminated": removed["contaminated"], "trimmed": 0, "bad_input": 0}
        paths.copy_tree(remote, str(tmp_path / "beam_gcs"))
    def manifest(root):
        lines = []
        for name in os.listdir(root / "documents"):
            with gzip.open(root / "documents" / name, "rt") as f:
                lines += f.read().splitlines()
        return sorted(lines)

    def sources(root, comp):
        src = PreparedSource(str(root), comp, "train")
        return sorted((src[i][0]["source"].decode(), tuple(src[i][0]["tokens"].tolist())) for i in range(len(src)))

    # the radiology note + two CXR reports, less the duplicate; one PubMed citation; two of the PMC articles
    assert len(manifest(tmp_path / "one")) == 5
    for name, other in runs.items():
        for key in ("components", "sources", "removed", "dedup", "decontamination"):
            assert other[key] == one[key], (name, key)
        for comp in ("biomedical", "clinical"):
            assert sources(tmp_path / name, comp) == sources(tmp_path / "one", comp), (name, comp)
        assert manifest(tmp_path / name) == manifest(tmp_path / "one"), name


@pytest.mark.beam  # make test-beam
def test_portable_runner_writes_a_gcs_corpus(planted, tok, gcs):
    """A runner that is not this machine's DirectRunner — the portable job API that Flink, Spark and Prism take,
    here its embedded job server — with a gs:// out_dir is accepted (it was refused while shards went through
    the driver's disk); the loader reads the planted corpus from the bucket, and the shards have TFDS names."""
    pytest.importorskip("apache_beam")
    remote = gcs.fresh_prefix("portable")
    prepare_corpus(config(planted), tok, remote, runner="beam", show_progress=False,
                   beam_options=["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"])
    assert paths.is_committed(remote)
    check_shards(remote, tok, expected(planted))
    names = sorted(p.name for p in paths.files_under(paths.join(remote, "mellama_corpus", "clinical", "1.0.0")))
    # clinical has three source files, so three units and three train shards (no held-out split configured)
    assert names == ["dataset_info.json", "features.json"] + [
        f"mellama_corpus-train.array_record-0000{i}-of-00003" for i in range(3)], names


def test_cli_refuses_foreign_out_dir_in_one_line(planted, tmp_path):
    import subprocess
    import sys

    from data_fixtures import REPO
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"def get_config():\n    return dict(components=[dict(name='bio', weight=1.0, "
                   f"sources=[{planted['bio']!r}])])\n")
    tok_dir = tmp_path / "tok"
    make_demo(str(tok_dir), scale=0.05)
    r = subprocess.run([sys.executable, "-m", "mellama_jax.commands.prepare_corpus", "--data_config", str(cfg), "--tokenizer",
                        str(tok_dir / "tok"), "--out_dir", str(user)], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"prepare_corpus: --out_dir {user}: holds files that are not a prepared corpus (notes.txt)" in r.stderr
    assert os.listdir(user) == ["notes.txt"]


@pytest.mark.beam  # make test-beam
def test_killed_beam_preparation_leaves_no_corpus_and_a_rerun_completes(planted, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    pytest.importorskip("apache_beam")
    from data_fixtures import REPO
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"def get_config():\n    return {config(planted)!r}\n")
    out = tmp_path / "corpus"
    cmd = [sys.executable, "-m", "mellama_jax.commands.prepare_corpus", "--data_config", str(cfg), "--tokenizer", TOKENIZER,
           "--out_dir", str(out), "--runner", "beam", "--beam_options=--runner=DirectRunner"]
    job = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "killed.log", "w"))
    deadline = time.time() + 240
    while not (out / ".partial" / "_unit_stats").exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the Beam pipelines
    assert job.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert not (out / "COMMIT").exists() and not (out / "corpus_report.json").exists()
    with pytest.raises(DataError):
        PreparedSource(str(out), "biomedical", "train")  # the loader refuses what the killed job left
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "COMMIT").exists() and not (out / ".partial").exists()
    check_shards(str(out), Tokenizer.load(TOKENIZER), expected(planted))


def _unit_examples(task):
    """A unit's examples as prepare.ComponentPlan.beam_tokenizer returns them (module level: Beam pickles it)."""
    import numpy as np
    unit, n = task
    return [(f"{unit}:{i}#{i}", {"tokens": np.arange(i % 7 + 1, dtype=np.int32), "source": f"{unit}:{i}"})
            for i in range(n)]


@pytest.mark.beam  # make test-beam
def test_beam_shards_rewritten_by_other_bundles_are_the_same_files(tmp_path):
    """What a retried or re-bundled tokenizing stage does to the shards: a second run over the same units, on
    two worker threads instead of one, rewrites the same shard names with the same bytes — nothing added,
    nothing lost (documents are sorted canonically, by unit then record, inside each shard)."""
    pytest.importorskip("apache_beam")
    from mellama_jax.data import shards_beam
    units = [("a.jsonl", 5), ("b.jsonl", 9), ("c.jsonl", 1)]
    work, stats = str(tmp_path / "work"), str(tmp_path / "stats")

    def run(options):
        shards_beam.write_shards({("comp", "train"): (4, units, _unit_examples)}, ["--runner=DirectRunner", *options],
                                 work, stats)
        return {str(p.relative_to(work)): p.read_bytes() for p in paths.files_under(work)}

    first = run([])
    again = run(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    assert again == first and len(first) == 4
    counts = shards_beam.written_shards(work, stats, "comp", "train", 4)
    assert sum(n for n, _ in counts) == 15
