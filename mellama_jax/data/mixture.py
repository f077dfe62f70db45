"""The domain mixture (Me-LLaMA: biomedical 15 : clinical 1 : general 4, in tokens) and its accounting.

grain's `IterDataset.mix` interleaves components deterministically in proportion to per-*document*
weights. Me-LLaMA's ratio is in *tokens*, so token weights are divided by each component's mean document
length (exact for a prepared corpus, from its token counts; estimated on a fixed sample of documents for
raw sources) — `document_weights`.

What the model actually saw is measured, not assumed: every packed row carries the component of each of
its segments in `meta` (packing.py), and `AccountingIterDataset` — the last stage, in the training
process — counts tokens per component, padding and overlong documents, strips `meta` from the batch, and
keeps the counts in its checkpointable state. `iterator.stats()` returns the achieved token shares for TensorBoard and the log.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import grain
import numpy as np

from mellama_jax.data.packing import DOMAIN_MASK, OVERLONG_FLAG

log = logging.getLogger(__name__)


def document_weights(token_weights: Sequence[float], mean_doc_tokens: Sequence[float]) -> list[float]:
    """Per-document mixing weights that give the requested token shares."""
    out = []
    for w, m in zip(token_weights, mean_doc_tokens):
        if m <= 0:
            raise ValueError(f"mean document length must be positive, got {m}")
        out.append(w / m)
    scale = 1.0 / min(out)
    return [w * scale for w in out]


def token_shares(tokens: Sequence[int] | np.ndarray, names: Sequence[str]) -> dict[str, float]:
    tokens = np.asarray(tokens, dtype=np.float64)
    total = tokens.sum()
    return {n: (float(t / total) if total else 0.0) for n, t in zip(names, tokens)}


def count_batch(meta: np.ndarray, segment_ids: np.ndarray, num_domains: int) -> tuple[np.ndarray, int, int]:
    """(tokens per component, padding tokens, overlong documents) of one batch.

    meta[b, j] describes segment j + 1 of row b (0 past the row's last segment).
    """
    B, T = segment_ids.shape
    # Segment lengths [B, T]: count of each segment id per row (ids offset per row, 0 = padding dropped).
    offsets = (np.arange(B, dtype=np.int64) * (T + 1))[:, None]
    lengths = np.bincount((segment_ids + offsets).ravel(), minlength=B * (T + 1)).reshape(B, T + 1)[:, 1:]
    present = meta != 0
    domains = (meta[present] & DOMAIN_MASK) - 1
    tokens = np.bincount(domains, weights=lengths[present], minlength=num_domains)[:num_domains]
    overlong = int(np.count_nonzero(meta[present] & OVERLONG_FLAG))
    padding = int(np.count_nonzero(segment_ids == 0))
    return tokens.astype(np.int64), padding, overlong


class _AccountingIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, names: tuple[str, ...], report):
        super().__init__(parent)
        self.names = names
        self.report = report
        self._tokens = np.zeros(len(names), np.int64)
        self._padding = 0
        self._overlong = 0
        self._batches = 0

    def __next__(self):
        batch = dict(next(self._parent))
        meta = batch.pop("meta")
        tokens, padding, overlong = count_batch(meta, batch["segment_ids"], len(self.names))
        self._tokens += tokens
        self._padding += padding
        self._overlong += overlong
        self._batches += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "tokens": [int(t) for t in self._tokens],
                "padding": int(self._padding), "overlong": int(self._overlong), "batches": int(self._batches)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._tokens = np.asarray(state["tokens"], np.int64)
        self._padding, self._overlong, self._batches = state["padding"], state["overlong"], state["batches"]

    def stats(self) -> dict[str, float]:
        """Scalars for logging: data/share/<name>, data/tokens/<name>, padding fraction, overlong docs."""
        out: dict[str, float] = {}
        real = int(self._tokens.sum())
        for name, share in token_shares(self._tokens, self.names).items():
            out[f"data/share/{name}"] = share
        for name, t in zip(self.names, self._tokens):
            out[f"data/tokens/{name}"] = float(t)
        total = real + self._padding
        out["data/padding_fraction"] = self._padding / total if total else 0.0
        out["data/overlong_documents"] = float(self._overlong)
        out["data/batches"] = float(self._batches)
        out["data/skipped_records"] = float(self.report.total) if self.report is not None else 0.0
        return out

    def token_shares(self) -> dict[str, float]:
        return token_shares(self._tokens, self.names)

    def close(self) -> None:
        close = getattr(self._parent, "close", None)
        if close is not None:
            close()

    def __str__(self) -> str:
        return f"AccountingIterator({list(self.names)})"


class AccountingIterDataset(grain.IterDataset):
    """Final stage: counts tokens per component from `meta`, removes `meta`, keeps counts in the state."""

    def __init__(self, parent: grain.IterDataset, names: Sequence[str], report=None):
        super().__init__(parent)
        self.names = tuple(names)
        self.report = report

    def __iter__(self) -> _AccountingIterator:
        return _AccountingIterator(self._parent.__iter__(), self.names, self.report)

    def __str__(self) -> str:
        return f"AccountingIterDataset({list(self.names)})"
