"""Exact and near-duplicate removal over the whole corpus (every component, every source, both splits).

* exact: blake2b of the normalised text (NFKC, lower case, word characters only, single spaces), so copies
  that differ in case, punctuation or whitespace are one document.
* near: MinHash signatures of word `shingle`-grams (datasketch.MinHash, `num_perm` permutations, fixed
  seed) indexed in datasketch.MinHashLSH at `threshold`; an LSH candidate counts as a duplicate only when
  the signatures' estimated Jaccard similarity reaches `threshold`.

Signatures are computed by the workers (`fingerprint`); `duplicates` then joins exact groups and verified
LSH-band pairs into connected components and keeps each component's first document in the corpus's
canonical order (components in config order, sources in order, files sorted, records in file order), so the
result does not depend on the runner, worker count or bundle order. `Deduplicator` is the streaming
first-seen rule (a document is a duplicate of an earlier *kept* one), kept for the benchmark's comparison.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
import unicodedata
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from mellama_jax.config_groups import typed
from mellama_jax.data.errors import DataError, DataFieldError

_WORD = re.compile(r"\w+")
# datasketch >= 2.0's 32-bit universal hashing; named so signatures stay comparable across versions.
SCHEME = "affine32"


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    exact: bool = True
    near: bool = True
    threshold: float = 0.8  # estimated Jaccard similarity of shingle sets at which documents are duplicates
    num_perm: int = 128
    shingle: int = 5  # words per shingle
    seed: int = 1

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise DataFieldError("dedup", "threshold", self.threshold, "expected 0 < threshold <= 1")
        if self.num_perm < 16:
            raise DataFieldError("dedup", "num_perm", self.num_perm, "expected >= 16")
        if self.shingle < 1:
            raise DataFieldError("dedup", "shingle", self.shingle, "expected >= 1")

    @classmethod
    def from_any(cls, value: Any, where: str = "config.data.mixture.dedup") -> "DedupConfig | None":
        """From the mixture's `dedup` group (None: no deduplication); errors name `where.<field>`."""
        if value is None or isinstance(value, DedupConfig):
            return value
        return typed(cls, value, where, error=DataError)


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def fingerprint(text: str, cfg: DedupConfig) -> tuple[bytes, np.ndarray | None]:
    """(exact key, MinHash signature as uint32 [num_perm] or None when near-dedup is off)."""
    w = words(text)
    key = hashlib.blake2b(" ".join(w).encode(), digest_size=16).digest()
    if not cfg.near:
        return key, None
    k = cfg.shingle
    shingles = {" ".join(w[i:i + k]).encode() for i in range(max(1, len(w) - k + 1))}
    m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme=SCHEME)
    m.update_batch(list(shingles))
    return key, m.hashvalues.astype(np.uint32)


def bands(cfg: DedupConfig) -> tuple[int, int]:
    """(bands, rows per band) of the LSH at cfg.threshold: datasketch's choice minimising the weighted
    false-positive and false-negative probability for num_perm permutations."""
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    return lsh.b, lsh.r


def band_keys(sig: np.ndarray, b: int, r: int) -> list[bytes]:
    """One key per band: the band's number and its r hash values; documents sharing a key are LSH candidates."""
    return [bytes([i]) + sig[i * r:(i + 1) * r].tobytes() for i in range(b)]


def similar(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    """The signatures' estimated Jaccard similarity reaches `threshold`."""
    return float(np.mean(a == b)) >= threshold


class _Components:
    """Union-find over document numbers; every component's root is its smallest (canonically first) member."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def duplicates(docs, cfg: DedupConfig) -> dict[int, tuple[str, int]]:
    """Which documents deduplication removes: {document number: ("exact" | "near", the document kept for it)}.

    `docs`: (document number in the corpus's canonical order, exact key, signature). The semantics (the same
    on every runner, docs/corpus_sources.md): documents with the same exact key form a group; two documents
    are near duplicates when they share an LSH band key and their signatures' estimate reaches the threshold;
    groups and near pairs join transitively into components, and each component keeps its canonically first
    document. A removed document is an "exact" duplicate when an earlier document has its exact key (then
    `kept` is that document), else "near" (`kept` is its component's first document). Exact copies have the
    same signature, so only the first of each exact group enters the band stage."""
    first_of_key: dict[bytes, int] = {}
    out: dict[int, tuple[str, int]] = {}
    reps = []
    for n, key, sig in sorted(docs, key=lambda d: d[0]):  # arrival order (workers, bundles) must not matter
        first = first_of_key.setdefault(key, n) if cfg.exact else n
        if first != n:
            out[n] = ("exact", first)
        else:
            reps.append((n, sig))
    if not cfg.near:
        return out
    b, r = bands(cfg)
    buckets: dict[bytes, list[int]] = collections.defaultdict(list)
    sigs = dict(reps)
    for n, sig in reps:
        for k in band_keys(sig, b, r):
            buckets[k].append(n)
    edges = []
    for members in buckets.values():
        near_pairs(members, sigs, cfg.threshold, lambda a, c: edges.append((a, c)))
    out.update(near_components(edges))
    return out


def near_components(edges) -> dict:
    """{document: ("near", its component's first document)} for every document of a near pair that is not
    the first of its component (union-find over the pairs only)."""
    uf = _Components()
    for a, c in edges:
        uf.union(a, c)
    return {n: ("near", uf.find(n)) for n in sorted(uf.parent) if uf.find(n) != n}


def near_pairs(members, sigs, threshold: float, emit) -> None:
    """emit(a, b) for every pair of a bucket's members whose signatures are similar."""
    members = sorted(set(members))
    for i, a in enumerate(members):
        for c in members[i + 1:]:
            if similar(sigs[a], sigs[c], threshold):
                emit(a, c)


class Deduplicator:
    """Feed documents in canonical order; `check` says whether each is a duplicate of an earlier kept one."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.exact: dict[bytes, int] = {}
        self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm) if cfg.near else None
        self.signatures: dict[int, np.ndarray] = {}

    def check(self, doc: int, key: bytes, sig: np.ndarray | None) -> tuple[str, int] | None:
        """None if `doc` is kept (and indexed), else ("exact" | "near", the kept document it duplicates)."""
        if self.cfg.exact:
            first = self.exact.get(key)
            if first is not None:
                return "exact", first
        if self.lsh is not None:
            candidates = sorted(self.lsh.query(LeanMinHash(seed=self.cfg.seed, hashvalues=sig, scheme=SCHEME)))
            for other in candidates:
                if float(np.mean(self.signatures[other] == sig)) >= self.cfg.threshold:
                    return "near", other
            self.lsh.insert(doc, LeanMinHash(seed=self.cfg.seed, hashvalues=sig, scheme=SCHEME),
                            check_duplication=False)
            self.signatures[doc] = sig
        if self.cfg.exact:
            self.exact.setdefault(key, doc)
        return None
