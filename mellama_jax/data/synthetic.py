"""Synthetic training data: deterministic packed rows of learnable "documents", for tests and benchmarks.

Batch i is a function of (seed, i) alone, so any process can produce its rows of any batch, and the position a
checkpoint holds is just the batch index (the same on every process; resumable on any process count).
The config group is `data.synthetic` (train/config.py: SyntheticDataConfig: seed, pad_fraction, min_doc_len,
max_doc_len).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from mellama_jax.data.packing import BATCH_KEYS

COMPONENTS = ("biomedical", "clinical", "general")  # the Me-LLaMA mixture components (15:1:4)


class SyntheticSource:
    """Deterministic packed rows of learnable "documents" (a stride pattern mod vocab), for tests and
    benchmarks. Batch i is a function of (seed, i) only, so any process can produce its rows of any batch
    and the state is just the batch index (identical on every process: saved as JSON by process 0)."""

    def __init__(self, cfg: Any, *, vocab_size: int, seq_len: int, global_batch_size: int,
                 rows: tuple[int, int] | None = None, component: str = "train", strides: tuple[int, ...] = (1, 2, 3)):
        self.cfg, self.vocab_size, self.seq_len, self.global_batch_size = cfg, vocab_size, seq_len, global_batch_size
        self.rows = rows or (0, global_batch_size)
        self.component, self.strides = component, strides
        self.index = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.make_batch(self.index)
        self.index += 1
        return batch

    def make_batch(self, index: int) -> dict[str, np.ndarray]:
        salt = sum(ord(c) * 31 ** i for i, c in enumerate(self.component)) % (2**31)
        rng = np.random.default_rng((self.cfg.seed, salt, index))
        rows = [self._row(rng) for _ in range(self.global_batch_size)]
        start, stop = self.rows
        return {k: np.stack([r[k] for r in rows[start:stop]]) for k in BATCH_KEYS}

    def _row(self, rng) -> dict[str, np.ndarray]:
        T = self.seq_len
        tokens = np.zeros(T, np.int32)
        seg = np.zeros(T, np.int32)
        pos = np.zeros(T, np.int32)
        fill = T - int(rng.random() * self.cfg.pad_fraction * T)
        t, doc = 0, 1
        while t < fill:
            n = min(int(rng.integers(self.cfg.min_doc_len, self.cfg.max_doc_len + 1)), fill - t)
            stride = int(rng.choice(self.strides))
            first = int(rng.integers(3, self.vocab_size))
            # token k of a document: first + k * stride, kept clear of the special ids 0..2
            tokens[t:t + n] = 3 + (first - 3 + stride * np.arange(n)) % (self.vocab_size - 3)
            tokens[t] = 1  # BOS starts every document
            seg[t:t + n] = doc
            pos[t:t + n] = np.arange(n)
            t, doc = t + n, doc + 1
        return {"tokens": tokens, "segment_ids": seg, "positions": pos, "loss_mask": (seg > 0).astype(np.int32)}

    def get_state(self) -> dict:
        return {"index": self.index}

    def set_state(self, state: dict) -> None:
        self.index = int(state["index"])


def synthetic_heldout(cfg: Any, *, vocab_size: int, seq_len: int, batch_size: int,
                      batches: int, rows: tuple[int, int]) -> dict[str, list[dict[str, np.ndarray]]]:
    """Fixed held-out batches per mixture component (each component its own document pattern)."""
    patterns = {"biomedical": (1, 2, 3), "clinical": (5,), "general": (7, 11)}
    out = {}
    for name in COMPONENTS:
        src = SyntheticSource(dataclasses.replace(cfg, seed=cfg.seed + 1), vocab_size=vocab_size,
                              seq_len=seq_len, global_batch_size=batch_size, rows=rows, component=name,
                              strides=patterns[name])
        out[name] = [src.make_batch(i) for i in range(batches)]
    return out
