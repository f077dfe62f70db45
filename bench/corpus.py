"""Corpus preparation throughput and memory: readers, screening, tokenization, and the Beam path.

(a) documents/s of each source reader (PubMed baseline XML, PMC JATS, MIMIC notes CSV, MIMIC-CXR reports)
    on generated files in the published schemas, one process;
(b) screening on a generated corpus of --docs documents (default 100k, ~--words words each, 1% exact and 1%
    near duplicates, 0.1% carrying a test item): documents/s of `screen.scan_unit`'s per-document work
    (MinHash signature + 13-gram lookup against twelve generated MIBE-sized test sets) and of the driver's
    `decide` (LSH queries/inserts), and the peak Python memory (tracemalloc) of the LSH index + signatures,
    per million documents. Sizes of the generated test sets follow the released MIBE tests (approximate);
(c) tokenization: ours against HF `tokenizers` and bare sentencepiece on the same real texts, same run, ratio;
(d) the Beam path's stages against the local runner's, and (e) the Beam driver's peak memory at growing corpus
    sizes (bench/corpus_beam.py; only where Apache Beam is installed: run with .venv-beam/bin/python).

    .venv-beam/bin/python bench/corpus.py [--docs 100000] [--words 200] [--reader_docs 5000] [--tokenize_docs 2000]
        [--beam_docs 4000] [--driver_docs 1000] [--driver_multiples 1,4,16]

Prints one JSON object; run on an idle core for numbers worth comparing.
"""
import argparse
import collections
import gzip
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
import tracemalloc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mellama_jax.data import readers  # noqa: E402
from mellama_jax.data.decontam import DecontamConfig, TestIndex  # noqa: E402
from mellama_jax.data.dedup import DedupConfig, duplicates, fingerprint  # noqa: E402
from mellama_jax.data.errors import DataReport  # noqa: E402
from mellama_jax.data.screen import decide  # noqa: E402
from mellama_jax.data.sources import SourceConfig  # noqa: E402
from mellama_jax.data.units import Unit  # noqa: E402

# (task, test items, words per item) — approximate sizes of the released MIBE test sets.
MIBE = (("pubmedqa", 500, 250), ("medqa", 1273, 150), ("medmcqa", 4183, 40), ("emrqa", 1000, 300),
        ("i2b2", 1000, 60), ("ddi2013", 5000, 50), ("hoc", 315, 250), ("mtsample", 1000, 400),
        ("pubmed_sum", 200, 2000), ("mimic_cxr", 3000, 80), ("bionli", 6000, 150), ("mednli", 1422, 40))
VOCAB = [f"w{i}" for i in range(30000)]


def words(r: random.Random, n: int) -> str:
    return " ".join(r.choice(VOCAB) for _ in range(n))


def write_pubmed(path: str, n: int, r: random.Random) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>\n')
        for i in range(n):
            f.write(f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">{i + 1}</PMID>'
                    f'<Article PubModel="Print"><Journal><JournalIssue><PubDate><Year>2020</Year></PubDate>'
                    f'</JournalIssue><ISOAbbreviation>J Ex</ISOAbbreviation></Journal><ArticleTitle>{words(r, 12)}'
                    f'</ArticleTitle><Abstract><AbstractText Label="BACKGROUND">{words(r, 60)}</AbstractText>'
                    f'<AbstractText Label="RESULTS">{words(r, 120)}</AbstractText></Abstract><Language>eng</Language>'
                    f'</Article></MedlineCitation></PubmedArticle>\n')
        f.write("</PubmedArticleSet>\n")


def write_jats(root: str, n: int, r: random.Random) -> list[str]:
    paths = []
    for i in range(n):
        secs = "".join(f'<sec><title>S{k}</title><p>{words(r, 150)} [<xref ref-type="bibr">{k}</xref>]</p>'
                       f'<p>{words(r, 150)}</p></sec>' for k in range(8))
        path = os.path.join(root, f"PMC{i}.nxml")
        with open(path, "w") as f:
            f.write(f'<article><front><article-meta><article-id pub-id-type="pmc">PMC{i}</article-id><title-group>'
                    f'<article-title>{words(r, 10)}</article-title></title-group><abstract><p>{words(r, 200)}</p>'
                    f'</abstract></article-meta></front><body>{secs}</body><back><ref-list><ref>{words(r, 20)}</ref>'
                    f'</ref-list></back></article>')
        paths.append(path)
    return paths


def write_mimic3(path: str, n: int, r: random.Random) -> None:
    import csv
    with gzip.open(path, "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
                    "DESCRIPTION", "CGID", "ISERROR", "TEXT"])
        for i in range(n):
            text = "\n".join(f"{words(r, 30)} [**Hospital1 {i % 90}**]," for _ in range(15))
            w.writerow([i, i // 10, i // 5, "2150-01-01", "", "", "Discharge summary", "Report", "", "", text])


def write_cxr(root: str, n: int, r: random.Random) -> list[str]:
    paths = []
    for i in range(n):
        d = os.path.join(root, f"p1{i // 100:01d}", f"p1{i:07d}")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"s5{i:07d}.txt")
        with open(path, "w") as f:
            f.write(f"                                 FINAL REPORT\n FINDINGS: {words(r, 60)}\n \n IMPRESSION: "
                    f"{words(r, 15)}\n")
        paths.append(path)
    return paths


def bench_readers(tmp: str, n: int) -> dict:
    r = random.Random(0)
    out = {}
    jobs = {}
    pubmed = os.path.join(tmp, "pubmed.xml.gz")
    write_pubmed(pubmed, n, r)
    jobs["pubmed_xml"] = [pubmed]
    os.makedirs(os.path.join(tmp, "pmc"))
    jobs["pmc_jats"] = write_jats(os.path.join(tmp, "pmc"), max(1, n // 10), r)
    mimic = os.path.join(tmp, "NOTEEVENTS.csv.gz")
    write_mimic3(mimic, n, r)
    jobs["mimic_notes_csv"] = [mimic]
    jobs["mimic_cxr_reports"] = write_cxr(os.path.join(tmp, "cxr"), n, r)
    for fmt, paths in jobs.items():
        opts = SourceConfig(paths[0], format=fmt, deid="mask")
        started, docs, chars = time.process_time(), 0, 0
        for p in paths:
            for _, rec, _ in readers.read(fmt, p, opts, DataReport(), collections.Counter()):
                docs += 1
                chars += len(rec["text"])
        secs = time.process_time() - started
        out[fmt] = {"documents": docs, "docs_per_s_per_core": round(docs / secs), "MB_text_per_s": round(chars / secs / 1e6, 2)}
    return out


def make_docs(r: random.Random, n_docs: int, n_words: int, test_texts: list[str]) -> list[str]:
    """Generated documents: 1% exact duplicates, 1% near duplicates, 0.1% carrying a test item."""
    docs = []
    for i in range(n_docs):
        if i % 100 == 1 and docs:  # 1% exact duplicates
            docs.append(docs[r.randrange(len(docs))].upper())
        elif i % 100 == 2 and docs:  # 1% near duplicates: one word in 200 changed
            w = docs[r.randrange(len(docs))].split()
            w[len(w) // 2] = "changed"
            docs.append(" ".join(w))
        elif i % 1000 == 3:  # 0.1% contaminated
            docs.append(f"{words(r, 50)} {test_texts[(i // 1000) % len(test_texts)]} {words(r, 50)}")
        else:
            docs.append(words(r, n_words))
    return docs


def bench_screen(tmp: str, n_docs: int, n_words: int) -> dict:
    r = random.Random(1)
    tasks = []
    test_texts = []
    for name, n, w in MIBE:
        path = os.path.join(tmp, f"{name}.jsonl")
        instruction = f"You are an expert. Answer the {name} question using only the given input text and nothing else."
        with open(path, "w") as f:
            for i in range(n):
                text = words(r, w)
                if len(test_texts) < n_docs // 1000 + 1:
                    test_texts.append(text)
                f.write(json.dumps({"id": f"{name}{i}", "query": f"{instruction}\n{text}\nAnswer:", "answer": "x",
                                    "choices": [], "gold": None, "text": text}) + "\n")
        tasks.append((name, path))
    started = time.process_time()
    index = TestIndex(DecontamConfig(tasks=tuple(tasks)))
    index_s = time.process_time() - started
    docs = make_docs(r, n_docs, n_words, test_texts)
    dedup = DedupConfig()
    text_mb = sum(len(t.encode()) for t in docs) / 1e6
    started = time.process_time()
    fps = [fingerprint(text, dedup) for text in docs]
    minhash_s = time.process_time() - started
    started = time.process_time()
    found = [sorted(index.find(text)[0]) for text in docs]
    ngram_s = time.process_time() - started
    scan = [(i, f"gen:{i}", "gen", None, key, sig, hits) for i, ((key, sig), hits) in enumerate(zip(fps, found))]
    scan_s = minhash_s + ngram_s
    unit = Unit(component="general", path="gen", fmt="jsonl", text_fields=("text",), split_rule="train",
                heldout_fraction=0.0)
    started = time.process_time()
    decisions = decide([unit], [scan], dedup, DecontamConfig(tasks=tuple(tasks)), index)
    decide_s = time.process_time() - started
    # Peak memory of the local runner's deduplication: exact keys, signatures and band buckets of every document
    # (the Beam runner spreads these over GroupByKey stages; its driver holds only the duplicates found).
    tracemalloc.start()
    duplicates([(i, key, sig) for i, (_, _, _, _, key, sig, _) in enumerate(scan)], dedup)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"documents": n_docs, "words_per_doc": n_words, "test_items": sum(index.items.values()),
            "test_ngram_item_pairs": len(index), "test_index_MiB": round(index.nbytes / 2 ** 20, 1), "test_index_build_s": round(index_s, 2),
            "scan_docs_per_s_per_core": round(n_docs / scan_s), "decide_docs_per_s": round(n_docs / decide_s),
            "text_MB": round(text_mb, 1), "minhash_MB_per_s_per_core": round(text_mb / minhash_s, 2),
            "ngram_screen_MB_per_s_per_core": round(text_mb / ngram_s, 2),
            "removed": decisions.report["dedup"]["removed"],
            "contaminated": decisions.report["decontamination"]["documents_removed"],
            "lsh_peak_MiB_per_million_docs": round(peak / 2 ** 20 * 1e6 / n_docs)}


def real_paragraphs() -> list[str]:
    """Paragraphs of the real PubMed / PMC articles in tests/assets/pubmed_pmc, as the readers give them."""
    root = os.path.join(REPO, "tests", "assets", "pubmed_pmc")
    texts = []
    for name in sorted(os.listdir(root)):
        fmt = "pubmed_xml" if name.startswith("pubmed") else "pmc_jats" if ".nxml" in name else None
        if fmt:
            path = os.path.join(root, name)
            texts += [rec["text"] for _, rec, _ in readers.read(fmt, path, SourceConfig(path, format=fmt), DataReport(),
                                                                collections.Counter())]
    return [p for t in texts for p in t.split("\n\n") if len(p.split()) >= 20]


def bench_tokenize(n_docs: int) -> dict:
    """Tokens/s per core of the LLaMA-2 tokenizer as corpus preparation runs it (prepare.process_unit: our
    `Tokenizer.encode`, one document at a time), and in the same run on the same texts the references: HF
    `tokenizers` (the tokenizer.json our HF export writes — the layout of Meta's LLaMA-2 tokenizer.json, BPE with
    no pre-tokenizer — `encode_batch` on one thread) and sentencepiece's own batch `Encode`. Texts: paragraphs
    of the real PubMed / PMC articles in tests/assets, each made unique (tokenizers caches whole words)."""
    import sentencepiece  # noqa: PLC0415

    from mellama_jax.data.hf_tokenizer import hf_backend  # noqa: PLC0415
    from mellama_jax.data.tokenizer import Tokenizer  # noqa: PLC0415
    paragraphs = real_paragraphs()
    docs = [f"{paragraphs[i % len(paragraphs)]} ({i})" for i in range(n_docs)]
    model = os.path.join(REPO, "tests", "assets", "llama2-tokenizer", "tokenizer.model")
    ours, spm = Tokenizer.load(model), sentencepiece.SentencePieceProcessor(model_file=model)
    hf = hf_backend(ours)
    timings = collections.defaultdict(float)
    counts = {}
    for _ in range(2):  # interleaved rounds: the shared machine's load moves
        for name, encode in (("ours", lambda: [ours.encode(d, bos=False) for d in docs]),
                             ("hf_tokenizers", lambda: [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]),
                             ("sentencepiece_batch", lambda: spm.Encode(docs))):
            started = time.process_time()
            ids = encode()
            timings[name] += time.process_time() - started
            counts[name] = ids
    if not counts["ours"] == counts["hf_tokenizers"] == counts["sentencepiece_batch"]:
        raise SystemExit("the three tokenizers disagree on the ids: the comparison would not be like for like")
    n = 2 * sum(map(len, counts["ours"]))
    rate = {k: round(n / v) for k, v in timings.items()}
    return {"documents": n_docs, "text_MB": round(sum(len(d.encode()) for d in docs) / 1e6, 2),
            "tokens": n // 2, "tokens_per_s_per_core": rate,
            "ours_vs_hf_tokenizers": round(rate["ours"] / rate["hf_tokenizers"], 2),
            "ours_vs_sentencepiece_batch": round(rate["ours"] / rate["sentencepiece_batch"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--words", type=int, default=200)
    p.add_argument("--reader_docs", type=int, default=5000)
    p.add_argument("--tokenize_docs", type=int, default=2000)
    p.add_argument("--beam_docs", type=int, default=4000, help="(d) documents of the per-stage comparison")
    p.add_argument("--driver_docs", type=int, default=1000, help="(e) documents of the 1x corpus")
    p.add_argument("--driver_multiples", default="1,4,16", help="(e) corpus sizes, as multiples of --driver_docs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"readers": bench_readers(tmp, args.reader_docs), "screening": bench_screen(tmp, args.docs, args.words),
                  "tokenize": bench_tokenize(args.tokenize_docs)}
        if importlib.util.find_spec("apache_beam") is None:
            result["beam"] = "not measured: Apache Beam is not installed here (run with .venv-beam/bin/python)"
        else:
            import corpus_beam  # noqa: PLC0415 - bench/corpus_beam.py; it imports this module's generator
            result["beam_stages"] = corpus_beam.stages(os.path.join(tmp, "stages"), args.beam_docs, args.words)
            result["beam_driver_memory"] = corpus_beam.driver_memory(
                os.path.join(tmp, "driver"), args.driver_docs, args.words,
                [int(m) for m in args.driver_multiples.split(",")])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
