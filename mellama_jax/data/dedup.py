"""Exact and near-duplicate removal over the whole corpus (every component, every source, both splits).

* exact: blake2b of the normalised text (NFKC, lower case, word characters only, single spaces), so copies
  that differ in case, punctuation or whitespace are one document.
* near: MinHash signatures of word `shingle`-grams (datasketch.MinHash, `num_perm` permutations, fixed
  seed) indexed in datasketch.MinHashLSH at `threshold`; an LSH candidate counts as a duplicate only when
  the signatures' estimated Jaccard similarity reaches `threshold`.

Signatures are computed by the workers (`fingerprint`); `Deduplicator` then sees every document in the
corpus's canonical order (components in config order, sources in order, files sorted, records in file
order) and keeps the first of each group, so the result does not depend on the runner or worker count.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from mellama_jax.data.errors import DataError
from mellama_jax.data.fields import group

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
            raise DataError(f"data.dedup.threshold={self.threshold}: expected 0 < threshold <= 1")
        if self.num_perm < 16 or self.shingle < 1:
            raise DataError(f"data.dedup: num_perm={self.num_perm} (>= 16) / shingle={self.shingle} (>= 1)")

    @classmethod
    def from_any(cls, value: Any) -> "DedupConfig | None":
        if value is None or isinstance(value, DedupConfig):
            return value
        d = group(value, cls, "data.dedup")
        return cls(**d)


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
