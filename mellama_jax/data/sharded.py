"""Training input from grain pipelines: the global batch as `data.shards` logical shards, exactly resumable on
any process count; the Me-LLaMA mixture and instruction-tuning sources and their held-out batches.

Each source yields *host* batches: numpy rows [start, stop) of the global batch, the rows this process must
supply (train/batches.py: `process_rows` finds them on the mesh and places the rows on devices). Shard s supplies
rows [s*B/S, (s+1)*B/S) and is one grain pipeline (data/loader.py); each process runs the shards overlapping
its rows and takes the rows it needs (a shard spanning several processes is computed by each of them: identical,
deterministic pipelines). The position is every shard's grain state: each process's `get_state()`, merged by
`merge_states` into the one JSON a checkpoint holds, so any process count P with B % P == 0 restores the same
global order.

Why not grain's own `ElasticIterator` (grain.experimental): it re-shards a MapDataset it batches itself and
refuses many-to-one steps without a fixed ratio; our rows come out of IterDataset steps (mixing, first-fit
packing) whose ratio of documents to rows is not fixed, so the shard layout must stay what it was at the start.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from mellama_jax.config import ConfigError
from mellama_jax.data import loader
from mellama_jax.data.packing import BATCH_KEYS
from mellama_jax.data.synthetic import COMPONENTS
from mellama_jax.data.tokenizer import Tokenizer


class ShardedGrainSource:
    """The global batch as `shards` logical grain pipelines; this process supplies rows [start, stop).

    make_iterator(shard, shards) -> a grain DatasetIterator yielding shard `shard`'s B/shards rows per batch.
    `shards` = 0 takes the shard count of a restored state, else `configured` (data.shards), else the process
    count of this (fresh) run, `processes`."""

    def __init__(self, make_iterator: Callable[[int, int], Any], *, global_batch_size: int, rows: tuple[int, int],
                 shards: int = 0, configured: int = 0, processes: int = 1):
        self.make_iterator, self.global_batch_size, self.rows = make_iterator, global_batch_size, rows
        self.configured = configured  # data.shards as set by the user (0: automatic)
        self._build(shards or configured or processes)

    def _build(self, shards: int) -> None:
        B = self.global_batch_size
        if shards < 1 or B % shards:
            raise ConfigError(f"data.shards={shards} must divide train.global_batch_size={B}")
        per = B // shards
        start, stop = self.rows
        self.shards = shards
        # shard -> (first, last) of its rows this process takes, in row order
        self.take = {s: (max(start, s * per) - s * per, min(stop, (s + 1) * per) - s * per)
                     for s in range(start // per, (stop - 1) // per + 1)}
        self.iterators = {s: self.make_iterator(s, shards) for s in self.take}

    def __next__(self) -> dict[str, np.ndarray]:
        parts = []
        for s, (a, b) in self.take.items():
            batch = next(self.iterators[s])
            parts.append({k: np.asarray(v)[a:b] for k, v in batch.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def get_state(self) -> dict:
        """This process's shards' states (the gathered form is what checkpoints hold)."""
        return {"shards": self.shards, "states": {str(s): it.get_state() for s, it in self.iterators.items()}}

    def set_state(self, state: dict) -> None:
        saved = int(state["shards"])
        if saved != self.shards:
            if self.configured and self.configured != saved:
                raise ConfigError(f"data.shards={self.configured}, but the checkpoint's data order has {saved} "
                                  f"shards; keep data.shards={saved} (or 0) to resume this run")
            self._build(saved)
        missing = [s for s in self.take if str(s) not in state["states"]]
        if missing:
            raise ValueError(f"data iterator state lacks shard(s) {missing} of {saved}")
        for s, it in self.iterators.items():
            it.set_state(state["states"][str(s)])

    @staticmethod
    def merge_states(states: list[dict]) -> dict:
        """One state from every process's `get_state()` (a shard run by several processes has one state):
        what checkpoints hold, so any process count restores the same global order."""
        merged: dict = {"shards": states[0]["shards"], "states": {}}
        for part in states:
            for s, st in part["states"].items():
                merged["states"].setdefault(s, st)
        return merged


    @property
    def domain_names(self) -> tuple[str, ...]:
        """The mixture components, in the order of the rows' `row_domain` values."""
        return tuple(getattr(next(iter(self.iterators.values())), "names", ()))

    def stats(self) -> dict[str, float]:
        """Achieved token shares etc. (mean over this process's shards; cumulative, restored with the state)."""
        per_shard = [loader.iterator_stats(it) for it in self.iterators.values()]
        keys = set().union(*per_shard) if per_shard else set()
        return {k: float(np.mean([p[k] for p in per_shard if k in p])) for k in keys}


def _tokenizer(path: str):
    return Tokenizer.load(path)


def _source(make_iterator, data_cfg, *, seq_len: int, global_batch_size: int, seed: int, rows: tuple[int, int],
            processes: int) -> ShardedGrainSource:
    """This process's BatchSource over `make_iterator` (loader.make_pretrain_iterator or make_sft_iterator)."""
    tokenizer = _tokenizer(data_cfg.tokenizer)
    make = lambda shard, shards: make_iterator(  # noqa: E731
        data_cfg.mixture, tokenizer, seq_len=seq_len, global_batch_size=global_batch_size, seed=seed,
        process_index=shard, process_count=shards)
    return ShardedGrainSource(make, global_batch_size=global_batch_size, rows=rows, configured=data_cfg.shards,
                              processes=processes)


def mixture_source(data_cfg, **kwargs) -> ShardedGrainSource:
    """The Me-LLaMA mixture (mellama_jax.data) as this process's BatchSource (keyword arguments: `_source`'s)."""
    return _source(loader.make_pretrain_iterator, data_cfg, **kwargs)


def mixture_heldout(data_cfg, *, seq_len: int, batch_size: int, batches: int, process: tuple[int, int]
                    ) -> dict[str, list[dict]]:
    """Held-out batches per mixture component: process (index, count)'s share of rows."""
    tokenizer = _tokenizer(data_cfg.tokenizer)
    names = [c["name"] for c in data_cfg.mixture.to_dict().get("components", [])] or list(COMPONENTS)
    out = {}
    for name in names:
        out[name] = loader.make_heldout_batches(data_cfg.mixture, tokenizer, name, seq_len=seq_len,
                                                batch_size=batch_size, num_batches=batches,
                                                process_index=process[0], process_count=process[1])
    return out


def sft_source(data_cfg, **kwargs) -> ShardedGrainSource:
    """Packed instruction-tuning rows (mellama_jax.data: `data.mixture.instruct`; loss on responses only)."""
    return _source(loader.make_sft_iterator, data_cfg, **kwargs)


def sft_heldout(data_cfg, *, seq_len: int, batch_size: int, batches: int, process: tuple[int, int]
                ) -> dict[str, list[dict]]:
    """Up to `batches` fixed batches of the held-out instruction split (`instruct.heldout_fraction`)."""
    iterator = loader.make_sft_iterator(data_cfg.mixture, _tokenizer(data_cfg.tokenizer), seq_len=seq_len,
                                        global_batch_size=batch_size, seed=0, process_index=process[0],
                                        process_count=process[1], split="heldout", repeat=False)
    out = [{k: np.asarray(b[k]) for k in BATCH_KEYS} for _, b in zip(range(batches), iterator)]
    if not out:
        raise ConfigError(f"data.mixture.instruct: the held-out split gives no full batch of {batch_size} rows of "
                         f"{seq_len} tokens; raise instruct.heldout_fraction, lower eval.batch_size, or set "
                         f"eval.every_steps=0")
    return {"instruct": out}
