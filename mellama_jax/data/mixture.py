"""The domain mixture (Me-LLaMA: biomedical 15 : clinical 1 : general 4, in tokens), its stages and its accounting.

Each component is its own pipeline up to packed rows; `StagedMixIterDataset` hands out rows, each to the
component furthest behind its weight (stride scheduling on tokens, or documents with
data.weight_unit="documents"), so the achieved shares hold within about a row per component over any span.
The weights are those of the stage the current step is in (`data.stages`, keyed by step: the mixer emits
exactly `rows_per_step` rows per step). Component positions are saved by name, so a run resumed with other
weights or components continues each component where it stopped.

What the model actually saw is measured, not assumed: every packed row carries the component of each of
its segments in `meta` (packing.py) and its mixture stage, and `AccountingIterDataset` — the last stage, in
the training process — counts tokens per component and per stage, padding and overlong documents, strips
`meta` and the stage from the batch, keeps the counts in its checkpointable state and warns when a stage's
achieved shares drift from its weights by more than data.share_margin. `iterator.stats()` returns the
achieved token shares, per stage too, and the packing efficiency for TensorBoard and the log.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import grain
import numpy as np

from mellama_jax.data.packing import DOMAIN_MASK, OVERLONG_FLAG

log = logging.getLogger(__name__)


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


ROW_DOMAIN = "row_domain"  # batch field [B]: the row's component index (train/step.py's per-component loss)
STAGE_KEY = "stage"  # row field: the start step of the mixture stage the row was drawn in (removed by accounting)


class _StagedMixIterator(grain.DatasetIterator):
    def __init__(self, ds: "StagedMixIterDataset"):
        self._ds = ds
        self._iters = {name: part.__iter__() for name, part in ds.parts.items()}
        super().__init__(list(self._iters.values()))
        self._rows = 0
        self._drawn: dict[str, dict[str, float]] = {}  # stage start step -> component -> tokens (documents)
        self._dormant: dict[str, Any] = {}  # states of components this config leaves out (kept for a later run)

    def _stage(self) -> tuple[int, dict[str, float]]:
        step = self._rows // self._ds.rows_per_step
        current = self._ds.schedule[0]
        for stage in self._ds.schedule:
            if stage[0] <= step:
                current = stage
        return current

    def __next__(self):
        start, weights = self._stage()
        drawn = self._drawn.setdefault(str(start), {})
        # Stride scheduling: the component furthest behind its weight (drawn / weight smallest) gives the next
        # row, so each stage's achieved shares stay within about one row per component of its weights.
        name = min((n for n, w in weights.items() if w > 0),
                   key=lambda n: (drawn.get(n, 0.0) / weights[n], -weights[n]))
        row = dict(next(self._iters[name]))
        amount = np.count_nonzero(row["segment_ids"]) if self._ds.unit == "tokens" else np.count_nonzero(row["meta"])
        drawn[name] = drawn.get(name, 0.0) + float(amount)
        self._rows += 1
        row[STAGE_KEY] = np.int32(start)
        return row

    def get_state(self) -> dict[str, Any]:
        return {"rows": self._rows, "drawn": {k: dict(v) for k, v in self._drawn.items()},
                "components": {**self._dormant, **{n: it.get_state() for n, it in self._iters.items()}}}

    def set_state(self, state: dict[str, Any]) -> None:
        """Components are matched by name: a component new to this config starts at its beginning, one it leaves
        out keeps its saved position in the state (so it continues where it stopped if it comes back)."""
        saved = dict(state["components"])
        for name, part in self._ds.parts.items():
            if name in saved:
                self._iters[name].set_state(saved.pop(name))
            else:
                self._iters[name] = part.__iter__()
        self._dormant = saved
        self._rows = int(state["rows"])
        self._drawn = {k: dict(v) for k, v in state["drawn"].items()}

    def __str__(self) -> str:
        return f"StagedMixIterator({list(self._iters)})"


class StagedMixIterDataset(grain.IterDataset):
    """Interleaves packed rows of per-component pipelines by the weights of the stage the current step is in.

    Rows, not documents, are the unit of mixing: every row holds one component's documents, and each row is
    given to the component furthest behind its weight (in tokens or documents), so the achieved shares hold
    within one row per component over any span, whatever the document lengths (grain's `mix` draws whole
    elements by probability, and an element of long articles can be hundreds of thousands of tokens). The
    step of a row is known exactly (`rows_per_step` rows of this pipeline per step), so a stage starts at its
    step. The state holds every component's own position by name: changing the weights or the components
    between runs on the same workdir continues each component where it stopped — no document is drawn twice
    or skipped in an epoch — and the rows already emitted stay emitted.
    """

    def __init__(self, parts: dict[str, grain.IterDataset], schedule: Sequence[tuple[int, dict[str, float]]],
                 rows_per_step: int, unit: str = "tokens"):
        super().__init__(list(parts.values()))
        self.parts, self.schedule, self.rows_per_step, self.unit = dict(parts), tuple(schedule), rows_per_step, unit
        if not sum(self.schedule[0][1].values()) > 0:
            raise ValueError("the mixture has no positive weight before its first stage")

    def __iter__(self) -> _StagedMixIterator:
        return _StagedMixIterator(self)

    def __str__(self) -> str:
        return f"StagedMixIterDataset({list(self.parts)}, {len(self.schedule)} stage(s))"


class _AccountingIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, names: tuple[str, ...], report,
                 schedule: Sequence[tuple[int, dict[str, float]]] = (), margin: float = 0.05, min_tokens: int = 0):
        super().__init__(parent)
        self.names = names
        self.report = report
        self.schedule, self.margin, self.min_tokens = tuple(schedule), margin, min_tokens
        self._tokens = np.zeros(len(names), np.int64)
        self._stage_tokens: dict[str, dict[str, int]] = {}  # stage start step -> component -> tokens
        self._padding = 0
        self._overlong = 0
        self._targets = 0  # tokens with loss_mask 1
        self._batches = 0
        self._warned: set[tuple[str, str]] = set()

    def __next__(self):
        batch = dict(next(self._parent))
        meta = batch.pop("meta")
        stages = batch.pop(STAGE_KEY, None)
        tokens, padding, overlong = count_batch(meta, batch["segment_ids"], len(self.names))
        self._tokens += tokens
        self._padding += padding
        self._overlong += overlong
        self._targets += int(np.count_nonzero(batch["loss_mask"]))
        # The component of each row (every row holds one component's documents; -1: an empty row).
        batch[ROW_DOMAIN] = ((meta[:, 0] & DOMAIN_MASK).astype(np.int32) - 1)
        self._batches += 1
        if stages is not None:
            for start in np.unique(stages).tolist():
                sel = stages == start
                per = count_batch(meta[sel], batch["segment_ids"][sel], len(self.names))[0]
                counts = self._stage_tokens.setdefault(str(start), {})
                for name, t in zip(self.names, per.tolist()):
                    counts[name] = counts.get(name, 0) + int(t)
                self._check_drift(str(start))
        return batch

    def _check_drift(self, start: str) -> None:
        """Warn once per stage and component when the achieved share is further than `margin` from the weight
        (after `min_tokens` tokens of the stage, so that the first rows do not count as drift)."""
        weights = dict(self.schedule).get(int(start))
        counts = self._stage_tokens[start]
        total = sum(counts.values())
        if weights is None or total < self.min_tokens or not total:
            return
        wsum = sum(weights.values())
        for name, w in weights.items():
            share, target = counts.get(name, 0) / total, w / wsum
            if abs(share - target) > self.margin and (start, name) not in self._warned:
                self._warned.add((start, name))
                log.warning("mixture stage from step %s: component %r has %.1f%% of the %d tokens drawn, its "
                            "weight asks for %.1f%% (margin %.0f points; data.share_margin)", start, name,
                            100 * share, total, 100 * target, 100 * self.margin)

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "tokens": dict(zip(self.names, map(int, self._tokens))),
                "stage_tokens": {k: dict(v) for k, v in self._stage_tokens.items()},
                "padding": int(self._padding), "overlong": int(self._overlong), "targets": int(self._targets),
                "batches": int(self._batches)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._tokens = np.asarray([state["tokens"].get(n, 0) for n in self.names], np.int64)
        self._stage_tokens = {k: dict(v) for k, v in state.get("stage_tokens", {}).items()}
        self._padding, self._overlong, self._batches = state["padding"], state["overlong"], state["batches"]
        self._targets = state.get("targets", 0)

    def stats(self) -> dict[str, float]:
        """Scalars for logging: data/share/<name>, data/tokens/<name>, per mixture stage
        data/stage_<start step>/share/<name>, padding fraction, packing efficiency, overlong docs."""
        out: dict[str, float] = {}
        real = int(self._tokens.sum())
        for name, share in token_shares(self._tokens, self.names).items():
            out[f"data/share/{name}"] = share
        for name, t in zip(self.names, self._tokens):
            out[f"data/tokens/{name}"] = float(t)
        for start, counts in self._stage_tokens.items():
            total = sum(counts.values())
            for name, t in counts.items():
                out[f"data/stage_{start}/share/{name}"] = t / total if total else 0.0
        total = real + self._padding
        out["data/padding_fraction"] = self._padding / total if total else 0.0
        # Packing efficiency: the share of row positions holding a real token; target fraction: the share
        # of them the loss counts (SFT: completions only).
        out["data/packing_efficiency"] = real / total if total else 0.0
        out["data/target_fraction"] = self._targets / real if real else 0.0
        out["data/overlong_documents"] = float(self._overlong)
        out["data/batches"] = float(self._batches)
        out["data/skipped_records"] = float(self.report.total) if self.report is not None else 0.0
        return out

    def token_shares(self) -> dict[str, float]:
        return token_shares(self._tokens, self.names)

    def stage_shares(self) -> dict[int, dict[str, float]]:
        """Achieved token shares per mixture stage (by its start step)."""
        return {int(k): {n: t / max(sum(v.values()), 1) for n, t in v.items()} for k, v in self._stage_tokens.items()}

    def close(self) -> None:
        close = getattr(self._parent, "close", None)
        if close is not None:
            close()

    def __str__(self) -> str:
        return f"AccountingIterator({list(self.names)})"


class AccountingIterDataset(grain.IterDataset):
    """Final stage: counts tokens per component (and per mixture stage) from `meta`, removes `meta` and the
    rows' stage, keeps the counts in the state, warns when a stage's shares drift from its weights."""

    def __init__(self, parent: grain.IterDataset, names: Sequence[str], report=None,
                 schedule: Sequence[tuple[int, dict[str, float]]] = (), margin: float = 0.05, min_tokens: int = 0):
        super().__init__(parent)
        self.names = tuple(names)
        self.report = report
        self.schedule, self.margin, self.min_tokens = schedule, margin, min_tokens

    def __iter__(self) -> _AccountingIterator:
        return _AccountingIterator(self._parent.__iter__(), self.names, self.report, self.schedule, self.margin,
                                   self.min_tokens)

    def __str__(self) -> str:
        return f"AccountingIterDataset({list(self.names)})"
