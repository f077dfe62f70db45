"""Decontamination: word n-gram overlap between training documents and evaluation test records.

As in lm-eval-harness's decontamination and Marin: text is lower-cased and split into word tokens (`\\w+`),
and a training document is contaminated by a test item when they share one n-gram (n = 13 by default). The
test side is every record of each task file the config names (the MIBE JSONL / Parquet files the
evaluation reads), fields `text` and `query` (n-grams never span two fields). Prompt boilerplate would
otherwise match everything: an n-gram present in more than `template_share` of a task's items (and in at
least two) is template text and ignored. Items shorter than n words cannot be matched; they are counted
(`items_too_short`) in the report.

mode "drop" removes a contaminated document; mode "span" removes the words covered by matching n-grams
(from the first to the last character of each run of matching n-grams) and keeps the rest.
"""
from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import json
import os
import re
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from mellama_jax.config_groups import PARSE, typed
from mellama_jax.data.errors import DataError, DataFieldError

_WORD = re.compile(r"\w+")
_MULT = np.uint64(0x100000001B3)  # FNV 64-bit prime: base of the polynomial n-gram hash
MODES = ("drop", "span")


@dataclasses.dataclass(frozen=True)
class DecontamConfig:
    # (task name, test file); in a config group {name: path} or [path, ...]
    tasks: tuple[tuple[str, str], ...] = dataclasses.field(default=(), metadata={PARSE: lambda v, _: _tasks(v)})
    n: int = 13
    mode: str = "drop"
    fields: tuple[str, ...] = ("text", "query")
    template_share: float = 0.5

    def __post_init__(self):
        if self.mode not in MODES:
            raise DataFieldError("decontaminate", "mode", self.mode, f"expected one of {MODES}")
        if self.n < 3:
            raise DataFieldError("decontaminate", "n", self.n, "expected >= 3 (13 in lm-eval-harness)")
        if not self.tasks:
            raise DataFieldError("decontaminate", "tasks", None, "empty: name at least one evaluation test file")

    @classmethod
    def from_any(cls, value: Any, where: str = "config.data.mixture.decontaminate") -> "DecontamConfig | None":
        """From the mixture's `decontaminate` group (None: none); errors name `where.<field>`."""
        if value is None or isinstance(value, DecontamConfig):
            return value
        return typed(cls, value, where, error=DataError)


def _tasks(value: Any) -> tuple[tuple[str, str], ...]:
    tasks = value or ()
    if hasattr(tasks, "items"):
        tasks = tuple(tasks.items())
    else:
        tasks = tuple((_task_name(p), p) if isinstance(p, str) else tuple(p) for p in tasks)
    return tuple((str(n), str(p)) for n, p in tasks)


def _task_name(path: str) -> str:
    base = os.path.basename(path)
    stem = base.split(".")[0]
    return os.path.basename(os.path.dirname(path)) if stem in ("test", "validation", "dev") else stem


def tokens(text: str) -> list[re.Match]:
    return list(_WORD.finditer(text))


def ngram_hashes(words: Sequence[str], n: int) -> np.ndarray:
    """uint64 hash of every word n-gram (position i: words[i:i+n]); stable across processes and machines.

    Each word is hashed once (blake2b, 8 bytes), then n-grams combine them polynomially mod 2**64 in numpy,
    so the test-set index is a sorted array (12 bytes per n-gram and item, copied into every worker) rather
    than a dict of strings."""
    if len(words) < n:
        return np.zeros(0, np.uint64)
    w = np.frombuffer(b"".join(hashlib.blake2b(x.encode(), digest_size=8).digest() for x in words), np.uint64)
    m = len(words) - n + 1
    acc = np.zeros(m, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            acc = acc * _MULT + w[k:k + m]
    return acc


def _records(path: str):
    """(item id, record) of a JSONL(.gz) or Parquet test file."""
    if not os.path.isfile(path):
        raise DataError(f"data.decontaminate.tasks: {path}: no such file")
    if path.endswith(".parquet"):
        for i, rec in enumerate(pq.read_table(path).to_pylist()):
            yield str(rec.get("id", i)), rec
        return
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        count = 0
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            yield str(rec.get("id", count)) if isinstance(rec, dict) else str(count), rec
            count += 1


class TestIndex:
    """Sorted (n-gram hash, test item) pairs over every configured test file: `keys` uint64, `owners` int32
    indices into `item_names` [(task, item id)] — 12 bytes per pair, so every worker can hold a copy."""

    def __init__(self, cfg: DecontamConfig):
        self.cfg = cfg
        self.items: dict[str, int] = {}
        self.too_short: dict[str, int] = {}
        self.item_names: list[tuple[str, str]] = []
        keys, owners = [], []
        for task, path in cfg.tasks:
            per_gram: dict[int, set[int]] = collections.defaultdict(set)
            n_items = short = 0
            for item, rec in _records(path):
                n_items += 1
                number = len(self.item_names)
                self.item_names.append((task, item))
                grams: set[int] = set()
                for field in cfg.fields:
                    value = rec.get(field) if isinstance(rec, dict) else None
                    if isinstance(value, str):
                        grams.update(ngram_hashes([m.group().lower() for m in tokens(value)], cfg.n).tolist())
                short += not grams
                for g in grams:
                    per_gram[g].add(number)
            limit = max(1, cfg.template_share * n_items)
            for g, ids in per_gram.items():
                if len(ids) <= limit:
                    keys.extend([g] * len(ids))
                    owners.extend(sorted(ids))
            self.items[task] = self.items.get(task, 0) + n_items
            self.too_short[task] = self.too_short.get(task, 0) + short
        keys = np.asarray(keys, np.uint64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]  # sorted; an n-gram of several items appears once per item
        self.owners = np.asarray(owners, np.int32)[order]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.owners.nbytes

    def find(self, text: str) -> tuple[set[tuple[str, str]], list[tuple[int, int]]]:
        """(the test items sharing an n-gram with `text`, character spans covered by matching n-grams)."""
        n = self.cfg.n
        toks = tokens(text)
        grams = ngram_hashes([m.group().lower() for m in toks], n)
        hits: set[tuple[str, str]] = set()
        spans: list[tuple[int, int]] = []
        if not len(grams) or not len(self.keys):
            return hits, spans
        pos = np.searchsorted(self.keys, grams)
        found = self.keys[np.minimum(pos, len(self.keys) - 1)] == grams
        for i in np.flatnonzero(found).tolist():
            j = int(pos[i])
            while j < len(self.keys) and self.keys[j] == grams[i]:
                hits.add(self.item_names[self.owners[j]])
                j += 1
            start, end = toks[i].start(), toks[i + n - 1].end()
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
        return hits, spans


def remove_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` without the character spans; the pieces left are joined by one space."""
    pieces, pos = [], 0
    for start, end in spans:
        pieces.append(text[pos:start].strip())
        pos = end
    pieces.append(text[pos:].strip())
    return " ".join(p for p in pieces if p)
