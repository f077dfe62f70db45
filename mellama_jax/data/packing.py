"""Packing token documents into fixed-length rows, with grain's first-fit packer.

Upstream stages work on *blocks* of documents (a list per grain element), which amortises grain's
per-element cost over many documents. A document is
    tokens     int32 [n]: BOS + text + EOS (EOS separates documents inside a row)
    loss_mask  int32 [n] (SFT only): 1 on response tokens
    doc_meta   int: component index + 1, plus OVERLONG_FLAG when the document had to be split or
               truncated — it lets the training process count achieved tokens per domain and overlong
               documents exactly, even when packing runs in grain worker processes
    where      "file:line" (for messages; dropped before packing)

`BlockChunker` enforces the row length (split / truncate / error) and groups the block's consecutive
documents into *packing units* of at most `unit_tokens` tokens (the block's last group is emitted one
document per unit, so that small units remain to fill the ends of rows; blocks of documents longer than a
third of a unit are not grouped at all). A unit is one int32 array [n, C] whose columns hold, per token, the
token id, its position in its document (0 where a document starts), the document's doc_meta on its first
token (0 elsewhere) and, for SFT, the loss mask. grain's first-fit packer
(`grain.experimental.FirstFitPackIterDataset`) then places whole units into rows: its cost is per element,
and short documents (the demo's ~170 tokens, many PubMed abstracts) made it the input pipeline's largest
cost after tokenization. Units keep every document contiguous and in order, so `finalize_row` recovers
the per-document segment ids (1, 2, … from each position-0 start; 0 = padding) and positions exactly, and
produces the batch contract of docs/architecture.md — tokens, segment_ids, positions, loss_mask — plus
`meta` (meta[j] = doc_meta of segment j + 1), removed again by the accounting stage (mixture.py).
A unit never exceeds the row, so no document is split by packing; only overlong documents are split
(or truncated) by policy, each chunk its own segment.
"""
from __future__ import annotations

import collections
import logging

import grain
import numpy as np

from mellama_jax.data.errors import DataError

log = logging.getLogger(__name__)

# The batch contract (docs/architecture.md, "Batches"): the fields every training batch holds, int32 [B, T].
BATCH_KEYS = ("tokens", "segment_ids", "positions", "loss_mask")

OVERLONG_FLAG = 1 << 16
DOMAIN_MASK = OVERLONG_FLAG - 1
# Columns of a packing unit.
TOKEN, POSITION, META, LOSS = 0, 1, 2, 3
UNIT_KEY = "unit"
# Blocks whose mean document fills more than 1/MIN_DOCS_PER_UNIT of a unit are packed document by document.
MIN_DOCS_PER_UNIT = 3


def default_unit_tokens(seq_len: int) -> int:
    """A sixth of the row. Measured at 4096-token rows and 170-token documents (bench/input_pipeline.py,
    blocks of 32 documents, 256 packing bins): the raw-text pipeline runs ~20% faster than packing each
    document alone, at the same padding (0.8%); an eighth gains less, a quarter no more."""
    return max(1, seq_len // 6)


_ARANGE = np.arange(1 << 20, dtype=np.int32)  # positions; a unit never exceeds the row (seq_len <= 2**20)


class BlockChunker(grain.experimental.FlatMapTransform):
    """Flattens a block of documents into packing units after making every document fit a row.

    Overlong documents (more than seq_len tokens):
    split:    consecutive chunks of at most seq_len tokens (each its own segment; positions restart)
    truncate: keep the first seq_len tokens
    error:    raise DataError naming the document's file:line
    unit_tokens: documents are grouped while a unit stays within this many tokens (a longer document
    forms a unit by itself); 1 packs every document separately.
    """

    def __init__(self, seq_len: int, policy: str, unit_tokens: int | None = None, max_fan_out: int = 1 << 20):
        if policy not in ("split", "truncate", "error"):
            raise DataError(f"overlong policy {policy!r}: expected split, truncate or error")
        self.seq_len = seq_len
        self.policy = policy
        if seq_len > len(_ARANGE):
            raise DataError(f"row length {seq_len} > {len(_ARANGE)} tokens is not supported")
        self.unit_tokens = min(seq_len, unit_tokens or default_unit_tokens(seq_len))
        if self.unit_tokens < 1:
            raise DataError(f"packing unit of {unit_tokens} tokens: must be >= 1")
        self.max_fan_out = max_fan_out
        self._overlong_seen: collections.Counter[str] = collections.Counter()  # per source file

    def flat_map(self, block: list[dict]) -> list[dict]:
        docs = []
        for doc in block:
            n = len(doc["tokens"])
            if n > self.seq_len:
                docs.extend(self._overlong(doc))
            elif n:  # an empty document (no BOS/EOS, no text) has nothing to pack
                docs.append(doc)
        if sum(len(d["tokens"]) for d in docs) * MIN_DOCS_PER_UNIT > self.unit_tokens * len(docs):
            # Documents this long gain little from grouping, and grouping them would use up the short ones
            # that fill the ends of rows (measured: padding 2.6% -> 4.8% at 524-token documents).
            return [_unit([d]) for d in docs]
        units, group, size = [], [], 0
        for doc in docs:
            n = len(doc["tokens"])
            if group and size + n > self.unit_tokens:
                units.append(_unit(group))
                group, size = [], 0
            group.append(doc)
            size += n
        # The block's last, partial group goes document by document: a supply of small elements fills
        # the gaps whole units leave at the ends of rows (padding then stays at the per-document level).
        units.extend(_unit([d]) for d in group)
        return units

    def _overlong(self, doc: dict) -> list[dict]:
        where, n = doc.get("where", "?"), len(doc["tokens"])
        if self.policy == "error":
            raise DataError(f"{where}: document of {n} tokens is longer than the row ({self.seq_len} tokens); "
                            f"set data.overlong to 'split' or 'truncate' to accept such documents")
        self._log_overlong(where, n)
        arrays = {k: v for k, v in doc.items() if isinstance(v, np.ndarray)}
        starts = [0] if self.policy == "truncate" else range(0, n, self.seq_len)
        chunks = [dict({k: v[s: s + self.seq_len] for k, v in arrays.items()}, doc_meta=doc["doc_meta"], where=where)
                  for s in starts]
        chunks[0]["doc_meta"] = doc["doc_meta"] | OVERLONG_FLAG
        return chunks


    def _log_overlong(self, where: str, n: int) -> None:
        """One WARNING per source file, at its first overlong document; then its count at 10, 100, 1000...
        (every document is counted in the data/overlong_documents metric). One line per document, every
        epoch, buried the documented setting's few real messages."""
        source = where.rsplit(":", 1)[0] if where.rsplit(":", 1)[-1].isdigit() else where
        self._overlong_seen[source] += 1
        count = self._overlong_seen[source]
        action = "split into row-sized chunks" if self.policy == "split" else "truncated to the row"
        if count == 1:
            log.warning("%s: overlong_document: %d tokens > row length %d: %s (data.overlong=%s); the source's "
                        "further overlong documents are counted, not listed", where, n, self.seq_len, action,
                        self.policy)
        elif str(count).rstrip("0") == "1":  # 10, 100, 1000, ...
            log.warning("%s: %d overlong documents so far, %s", source, count, action)


def _unit(docs: list[dict]) -> dict:
    """One packing unit [n, C] from consecutive documents (see module doc for the columns).

    Filled document by document with slice copies: a handful of whole-array numpy calls (concatenate,
    cumsum, repeat) costs three times as much at the 2–5 documents of a typical unit.
    """
    sft = "loss_mask" in docs[0]
    unit = np.zeros((sum(len(d["tokens"]) for d in docs), 4 if sft else 3), np.int32)
    start = 0
    for d in docs:
        end = start + len(d["tokens"])
        unit[start:end, TOKEN] = d["tokens"]
        unit[start:end, POSITION] = _ARANGE[: end - start]
        unit[start, META] = d["doc_meta"]
        if sft:
            unit[start:end, LOSS] = d["loss_mask"]
        start = end
    return {UNIT_KEY: unit}


def pack(ds: grain.IterDataset, seq_len: int, *, num_bins: int, seed: int,
         shuffle_bins: bool = True) -> grain.IterDataset:
    """First-fit pack the packing units of `BlockChunker` into rows of seq_len (the batch contract)."""
    packed = grain.experimental.FirstFitPackIterDataset(
        ds, length_struct={UNIT_KEY: seq_len}, num_packing_bins=num_bins, seed=seed, shuffle_bins=shuffle_bins)
    return packed.map(finalize_row)


def finalize_row(row: dict) -> dict:
    unit = row[UNIT_KEY]
    real = row[f"{UNIT_KEY}_segment_ids"] != 0
    positions = np.where(real, unit[:, POSITION], 0).astype(np.int32)
    starts = real & (positions == 0)
    segment_ids = np.where(real, np.cumsum(starts), 0).astype(np.int32)
    out = {
        "tokens": np.where(real, unit[:, TOKEN], 0).astype(np.int32),
        "segment_ids": segment_ids,
        "positions": positions,
    }
    if unit.shape[1] > LOSS:
        out["loss_mask"] = np.where(real, unit[:, LOSS], 0).astype(np.int32)
    else:  # pretraining: every real token is a target
        out["loss_mask"] = real.astype(np.int32)
    meta = np.zeros(len(segment_ids), np.int32)
    doc_meta = unit[starts, META]
    meta[: len(doc_meta)] = doc_meta
    out["meta"] = meta
    return out


def pad_batch(rows: list[dict], batch_size: int) -> dict:
    """Stack rows into a batch, adding all-padding rows (segment id 0) up to batch_size."""
    if not rows:
        raise ValueError("pad_batch needs at least one row")
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    missing = batch_size - len(rows)
    if missing > 0:
        stacked = {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)]) for k, v in stacked.items()}
    return stacked
