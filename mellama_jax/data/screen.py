"""Screening before tokenization: which documents decontamination and deduplication remove.

Pass 1 (`scan_unit`, in the workers or a Beam pipeline): per document, its exact-text key, MinHash
signature and the test items it shares an n-gram with. Then `decide` (driver) visits every document in the
corpus's canonical order (units in plan order, records in file order): contaminated documents first
(dropped, or marked for span removal), then duplicates of an earlier kept document. Pass 2 (tokenizing,
prepare.py) skips the removed (unit, ordinal) pairs and trims the marked ones, so both runners write the
same documents. The report says what was removed, from which component and file, and why.
"""
from __future__ import annotations

import collections
from typing import Sequence

from mellama_jax.data.decontam import DecontamConfig, TestIndex
from mellama_jax.data.dedup import DedupConfig, Deduplicator, fingerprint
from mellama_jax.data.errors import DataReport
from mellama_jax.data.units import Unit, doc_id, iter_documents, report_key

MAX_EXAMPLES = 20


def scan_unit(unit: Unit, strict: bool, dedup: DedupConfig | None, index: TestIndex | None) -> list[tuple]:
    """[(ordinal, where, source file (report_key), doc id, exact key, signature, test items hit)] of the unit's
    valid documents.

    Bad input met here is reported by the tokenizing pass (this pass's report is discarded; in strict mode
    the first problem is raised here, before anything is written)."""
    report = DataReport(strict=strict)
    out = []
    for doc in iter_documents(unit, report, collections.Counter()):
        key, sig = fingerprint(doc.text, dedup) if dedup is not None else (None, None)
        hits = sorted(index.find(doc.text)[0]) if index is not None else []
        out.append((doc.ordinal, doc.where, report_key(unit, doc.file), doc_id(unit, doc.record), key, sig, hits))
    return out


class Decisions:
    """Documents to remove: `remove[unit index][ordinal] = "duplicate" | "contaminated"`; `trim[unit index]`:
    ordinals whose matching spans are cut (decontaminate.mode = "span")."""

    def __init__(self):
        self.remove: dict[int, dict[int, str]] = collections.defaultdict(dict)
        self.trim: dict[int, set[int]] = collections.defaultdict(set)
        self.report: dict = {}


def decide(units: Sequence[Unit], scans: Sequence[list], dedup: DedupConfig | None,
           decontam: DecontamConfig | None, index: TestIndex | None) -> Decisions:
    out = Decisions()
    dd = Deduplicator(dedup) if dedup is not None else None
    dup = {"removed": collections.Counter(), "by_component": collections.defaultdict(collections.Counter),
           "by_source": collections.defaultdict(collections.Counter), "examples": []}
    tasks = {t: {"test_items": index.items[t], "items_too_short": index.too_short[t], "items_found": set(),
                 "documents": 0, "sources": collections.defaultdict(set)} for t in (index.items if index else ())}
    contaminated = collections.Counter()
    contam_examples = []
    where_of = []  # canonical document number -> (component, where, id)
    for ui, (unit, docs) in enumerate(zip(units, scans)):
        for ordinal, where, path, did, key, sig, hits in docs:
            n = len(where_of)
            where_of.append((unit.component, where, did))
            if hits:
                for task in sorted({t for t, _ in hits}):
                    info = tasks[task]
                    items = {i for t, i in hits if t == task}
                    info["items_found"] |= items
                    info["documents"] += 1
                    info["sources"][path] |= items
                contaminated[unit.component] += 1
                if len(contam_examples) < MAX_EXAMPLES:
                    contam_examples.append({"where": where, "id": did, "items": [f"{t}:{i}" for t, i in hits[:5]]})
                if decontam.mode == "drop":
                    out.remove[ui][ordinal] = "contaminated"
                    continue
                out.trim[ui].add(ordinal)
            if dd is None:
                continue
            found = dd.check(n, key, sig)
            if found is None:
                continue
            kind, first = found
            out.remove[ui][ordinal] = "duplicate"
            dup["removed"][kind] += 1
            dup["by_component"][unit.component][kind] += 1
            dup["by_source"][path][kind] += 1
            if where_of[first][0] != unit.component:
                dup["by_component"][unit.component]["across_components"] += 1
            if len(dup["examples"]) < MAX_EXAMPLES:
                dup["examples"].append({"kind": kind, "where": where, "id": did, "duplicate_of": where_of[first][1],
                                        "duplicate_of_id": where_of[first][2]})
    if dedup is not None:
        out.report["dedup"] = {
            "config": dict(exact=dedup.exact, near=dedup.near, threshold=dedup.threshold, num_perm=dedup.num_perm,
                           shingle=dedup.shingle, seed=dedup.seed),
            "documents_seen": len(where_of), "removed": dict(dup["removed"]),
            "by_component": {k: dict(v) for k, v in dup["by_component"].items()},
            "by_source": {k: dict(v) for k, v in dup["by_source"].items()}, "examples": dup["examples"]}
    if decontam is not None:
        out.report["decontamination"] = {
            "n": decontam.n, "mode": decontam.mode, "fields": list(decontam.fields),
            "documents_" + ("removed" if decontam.mode == "drop" else "trimmed"): sum(contaminated.values()),
            "by_component": dict(contaminated),
            "tasks": {t: {"test_items": v["test_items"], "items_too_short": v["items_too_short"],
                          "items_found": len(v["items_found"]), "documents": v["documents"],
                          "sources": {p: len(s) for p, s in sorted(v["sources"].items())}}
                      for t, v in tasks.items()},
            "examples": contam_examples}
    return out
