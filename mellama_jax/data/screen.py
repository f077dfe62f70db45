"""Screening before tokenization: which documents decontamination and deduplication remove.

Pass 1 (`scan_unit`, in the workers or a Beam pipeline): per document, its exact-text key, MinHash
signature and the test items it shares an n-gram with. Then `decide` (driver) numbers every document in the
corpus's canonical order (units in plan order, records in file order): contaminated documents first
(dropped, or marked for span removal), then duplicates (dedup.duplicates: connected components of exact
groups and near pairs, each keeping its first document). Pass 2 (tokenizing,
prepare.py) skips the removed (unit, ordinal) pairs and trims the marked ones, so both runners write the
same documents. The report says what was removed, from which component and file, and why.
"""
from __future__ import annotations

import collections
from typing import Any, NamedTuple, Sequence

from mellama_jax.data.decontam import DecontamConfig, TestIndex
from mellama_jax.data.dedup import DedupConfig, duplicates, fingerprint
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
        self.counters: dict[str, int] = {}  # the Beam screening pipeline's counters (screen_beam.py)


class Doc(NamedTuple):
    """A screened document. `id` = (unit index, ordinal) is its number in the corpus's canonical order (units
    are planned in that order, records numbered in file order), the same on every runner."""
    id: tuple[int, int]
    component: str
    where: str
    path: str  # source file as the report names it (report_key)
    did: str | None
    key: bytes | None
    sig: Any
    hits: list


def docs_of(units: Sequence[Unit], scans: Sequence[list]):
    for ui, (unit, docs) in enumerate(zip(units, scans)):
        for ordinal, where, path, did, key, sig, hits in docs:
            yield Doc((ui, ordinal), unit.component, where, path, did, key, sig, hits)


def decide(units: Sequence[Unit], scans: Sequence[list], dedup: DedupConfig | None,
           decontam: DecontamConfig | None, index: TestIndex | None) -> Decisions:
    """In one process (the local runner): every document's scan is here."""
    docs = list(docs_of(units, scans))
    contaminated = [d for d in docs if d.hits]
    dropped = {d.id for d in contaminated} if decontam is not None and decontam.mode == "drop" else set()
    found = {}
    if dedup is not None:
        found = duplicates([(d.id, d.key, d.sig) for d in docs if d.id not in dropped], dedup)
    info = {d.id: d._replace(key=None, sig=None) for d in docs}
    return assemble(len(docs), contaminated, found, info, dedup, decontam, index)


def assemble(seen: int, contaminated: Sequence[Doc], found: dict, info: dict, dedup: DedupConfig | None,
             decontam: DecontamConfig | None, index: TestIndex | None) -> Decisions:
    """Decisions and report from the contaminated documents, the duplicates found ({id: (kind, kept id)}) and
    `info` (Doc without key / signature) of every document named in either."""
    out = Decisions()
    tasks = {t: {"test_items": index.items[t], "items_too_short": index.too_short[t], "items_found": set(),
                 "documents": 0, "sources": collections.defaultdict(set)} for t in (index.items if index else ())}
    by_component = collections.Counter()
    contam_examples = []
    for d in sorted(contaminated):
        for task in sorted({t for t, _ in d.hits}):
            task_info = tasks[task]
            items = {i for t, i in d.hits if t == task}
            task_info["items_found"] |= items
            task_info["documents"] += 1
            task_info["sources"][d.path] |= items
        by_component[d.component] += 1
        if len(contam_examples) < MAX_EXAMPLES:
            contam_examples.append({"where": d.where, "id": d.did, "items": [f"{t}:{i}" for t, i in d.hits[:5]]})
        if decontam.mode == "drop":
            out.remove[d.id[0]][d.id[1]] = "contaminated"
        else:
            out.trim[d.id[0]].add(d.id[1])
    dup = {"removed": collections.Counter(), "by_component": collections.defaultdict(collections.Counter),
           "by_source": collections.defaultdict(collections.Counter), "examples": []}
    for number in sorted(found):  # canonical order: the report's examples are the first ones
        kind, first = found[number]
        d, kept = info[number], info[first]
        out.remove[number[0]][number[1]] = "duplicate"
        dup["removed"][kind] += 1
        dup["by_component"][d.component][kind] += 1
        dup["by_source"][d.path][kind] += 1
        if kept.component != d.component:
            dup["by_component"][d.component]["across_components"] += 1
        if len(dup["examples"]) < MAX_EXAMPLES:
            dup["examples"].append({"kind": kind, "where": d.where, "id": d.did, "duplicate_of": kept.where,
                                    "duplicate_of_id": kept.did})
    if dedup is not None:
        out.report["dedup"] = {
            "config": dict(exact=dedup.exact, near=dedup.near, threshold=dedup.threshold, num_perm=dedup.num_perm,
                           shingle=dedup.shingle, seed=dedup.seed),
            "documents_seen": seen, "removed": dict(dup["removed"]),
            "by_component": {k: dict(v) for k, v in dup["by_component"].items()},
            "by_source": {k: dict(v) for k, v in dup["by_source"].items()}, "examples": dup["examples"]}
    if decontam is not None:
        out.report["decontamination"] = {
            "n": decontam.n, "mode": decontam.mode, "fields": list(decontam.fields),
            "documents_" + ("removed" if decontam.mode == "drop" else "trimmed"): sum(by_component.values()),
            "by_component": dict(by_component),
            "tasks": {t: {"test_items": v["test_items"], "items_too_short": v["items_too_short"],
                          "items_found": len(v["items_found"]), "documents": v["documents"],
                          "sources": {p: len(s) for p, s in sorted(v["sources"].items())}}
                      for t, v in tasks.items()},
            "examples": contam_examples}
    return out
