"""Corpus preparation throughput: readers, and dedup + decontamination screening, per core.

(a) documents/s of each source reader (PubMed baseline XML, PMC JATS, MIMIC notes CSV, MIMIC-CXR reports)
    on generated files in the published schemas, one process;
(b) screening on a generated corpus of --docs documents (default 100k, ~--words words each, 1% exact and 1%
    near duplicates, 0.1% carrying a test item): documents/s of `screen.scan_unit`'s per-document work
    (MinHash signature + 13-gram lookup against twelve generated MIBE-sized test sets) and of the driver's
    `decide` (LSH queries/inserts), and the peak Python memory (tracemalloc) of the LSH index + signatures,
    per million documents. Sizes of the generated test sets follow the released MIBE tests (approximate).

    python bench/corpus.py [--docs 100000] [--words 200] [--reader_docs 5000]

Prints one JSON object; run on an idle core for numbers worth comparing.
"""
import argparse
import collections
import gzip
import json
import os
import random
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def bench_tokenize(n_docs: int) -> dict:
    """Tokens/s per core of the LLaMA-2 tokenizer as corpus preparation runs it (sentencepiece, one document at a
    time). (HF tokenizers as a same-run reference is not measured: transformers 5's LlamaTokenizerFast built
    from tokenizer.model alone encodes to nothing here.)"""
    from mellama_jax.data.tokenizer import Tokenizer  # noqa: PLC0415
    model = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "assets",
                         "llama2-tokenizer", "tokenizer.model")
    r = random.Random(1)
    english = ("the patient was admitted with chest pain and shortness of breath after a week of fever cough "
               "and fatigue blood cultures were negative and the chest radiograph showed bilateral infiltrates").split()
    docs = [" ".join(r.choice(english) for _ in range(300)) + f" {i}" for i in range(n_docs)]
    ours = Tokenizer.load(model)
    started = time.process_time()
    n_ours = sum(len(ours.encode(d, bos=False)) for d in docs)
    ours_s = time.process_time() - started
    return {"documents": n_docs, "tokens": n_ours, "tokens_per_s_per_core": round(n_ours / ours_s)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--words", type=int, default=200)
    p.add_argument("--reader_docs", type=int, default=5000)
    p.add_argument("--tokenize_docs", type=int, default=2000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"readers": bench_readers(tmp, args.reader_docs), "screening": bench_screen(tmp, args.docs, args.words),
                  "tokenize": bench_tokenize(args.tokenize_docs)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
