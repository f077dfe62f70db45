"""Where the train loop gets batches from: the `BatchSource` protocol, a synthetic source, and the step
that turns process-local rows into one global, sharded jax.Array per field.

A source yields *process-local* numpy rows (this process's share of the global batch, see
`process_rows`) and can save/restore its position so a resumed run sees exactly the batches an
uninterrupted run would. Its state goes into the checkpoint's `data_iter` item as JSON.

Resuming on another number of hosts: the synthetic source's batch i is a function of i alone. Grain
pipelines (mellama_jax.data) are per shard of the data: `ShardedGrainSource` makes the global batch of
`data.shards` logical shards (shard s supplies rows [s*B/S, (s+1)*B/S)), each one grain pipeline, and each
process runs the shards overlapping its rows, taking the rows it needs (a shard spanning several processes
is computed by each of them: identical, deterministic pipelines). Its state is every shard's grain state,
gathered to one JSON object, so any process count with B % P == 0 restores the same global order.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator, Protocol

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from mellama_jax import parallel
from mellama_jax.config import ConfigError
from mellama_jax.data import loader
from mellama_jax.data.tokenizer import Tokenizer
from mellama_jax.train.config import SyntheticDataConfig
from mellama_jax.train.step import BATCH_KEYS, ROW_DOMAIN, TRAIN_KEYS, row_sharding

COMPONENTS = ("biomedical", "clinical", "general")  # the Me-LLaMA mixture components (15:1:4)


class BatchSource(Protocol):
    def __next__(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> Any: ...
    def set_state(self, state: Any) -> None: ...
    def save_args(self) -> ocp.args.CheckpointArgs: ...  # orbax args saving the position
    def restore_args(self) -> ocp.args.CheckpointArgs: ...  # orbax args restoring it (applied by the handler or `restored`)
    def restored(self, value: Any) -> None: ...  # called with what restore_args restored


def process_rows(mesh: Mesh, global_batch_size: int) -> tuple[int, int]:
    """[start, stop) rows of the global batch whose data this process must supply."""
    sharding = parallel.batch_sharding(mesh)
    indices = sharding.addressable_devices_indices_map((global_batch_size, 1))
    starts = [idx[0].start or 0 for idx in indices.values()]
    stops = [global_batch_size if idx[0].stop is None else idx[0].stop for idx in indices.values()]
    start, stop = min(starts), max(stops)
    covered = sum(b - a for a, b in {(a, b) for a, b in zip(starts, stops)})
    if covered != stop - start:
        raise ValueError(f"this process's batch rows are not contiguous ({sorted(zip(starts, stops))}); "
                         f"reorder the mesh so each process holds one block of the batch")
    return start, stop


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, global_batch_size: int,
                 keys: tuple[str, ...] = TRAIN_KEYS) -> dict[str, jax.Array]:
    """Process-local rows -> global arrays sharded over the data-parallel axes: a training batch (the rows'
    mixture component comes along; component 0 for a source without components, e.g. synthetic), or with
    keys=BATCH_KEYS the four [B, T] fields only (the eval step's batch)."""
    sharding = parallel.batch_sharding(mesh)
    out = {}
    if ROW_DOMAIN in keys and ROW_DOMAIN not in local:
        local = {**local, ROW_DOMAIN: np.zeros(len(local["tokens"]), np.int32)}
    for key in keys:
        if key == ROW_DOMAIN:
            x = np.asarray(local[key], np.int32)
            out[key] = jax.make_array_from_process_local_data(row_sharding(mesh), x, (global_batch_size,))
            continue
        if key not in local:
            raise KeyError(f"batch is missing field {key!r}; a batch holds {BATCH_KEYS} (docs/architecture.md)")
        x = np.asarray(local[key], np.int32)
        out[key] = jax.make_array_from_process_local_data(sharding, x, (global_batch_size,) + x.shape[1:])
    return out


class SyntheticSource:
    """Deterministic packed rows of learnable "documents" (a stride pattern mod vocab), for tests and
    benchmarks. Batch i is a function of (seed, i) only, so any process can produce its rows of any batch
    and the state is just the batch index (identical on every process: saved as JSON by process 0)."""

    def __init__(self, cfg: SyntheticDataConfig, *, vocab_size: int, seq_len: int, global_batch_size: int,
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

    def save_args(self):
        return ocp.args.JsonSave(self.get_state())

    def restore_args(self):
        return ocp.args.JsonRestore()

    def restored(self, value) -> None:
        self.set_state(value)


class ShardedGrainSource:
    """The global batch as `shards` logical grain pipelines; this process supplies rows [start, stop).

    make_iterator(shard, shards) -> a grain DatasetIterator yielding shard `shard`'s B/shards rows per batch.
    `shards` = 0 takes the shard count of a restored state, else the process count (fresh runs)."""

    def __init__(self, make_iterator: Callable[[int, int], Any], *, global_batch_size: int, rows: tuple[int, int],
                 shards: int = 0, configured: int = 0):
        self.make_iterator, self.global_batch_size, self.rows = make_iterator, global_batch_size, rows
        self.configured = configured  # data.shards as set by the user (0: automatic)
        self._build(shards or configured or jax.process_count())

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

    def global_state(self) -> dict:
        """Every shard's state, from all processes (a shard run by several processes has one state)."""
        local = json.dumps(self.get_state()).encode()
        if jax.process_count() == 1:
            return json.loads(local)
        size = np.asarray([len(local)], np.int32)
        longest = int(np.max(multihost_utils.process_allgather(size)))
        padded = np.zeros(longest, np.uint8)
        padded[:len(local)] = np.frombuffer(local, np.uint8)
        merged: dict = {"shards": self.shards, "states": {}}
        for row in np.asarray(multihost_utils.process_allgather(padded)).reshape(-1, longest):
            part = json.loads(row.tobytes().rstrip(b"\0"))
            for s, st in part["states"].items():
                merged["states"].setdefault(s, st)
        return merged

    def save_args(self):
        return ocp.args.JsonSave(self.global_state())

    def restore_args(self):
        return ocp.args.JsonRestore()

    def restored(self, value) -> None:
        self.set_state(value)

    @property
    def domain_names(self) -> tuple[str, ...]:
        """The mixture components, in the order of the rows' `row_domain` values."""
        return tuple(getattr(next(iter(self.iterators.values())), "names", ()))

    def stats(self) -> dict[str, float]:
        """Achieved token shares etc. (mean over this process's shards; cumulative, restored with the state)."""
        per_shard = [_loader_module().iterator_stats(it) for it in self.iterators.values()]
        keys = set().union(*per_shard) if per_shard else set()
        return {k: float(np.mean([p[k] for p in per_shard if k in p])) for k in keys}


def synthetic_heldout(cfg: SyntheticDataConfig, *, vocab_size: int, seq_len: int, batch_size: int,
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


def _loader_module():
    return loader


def _tokenizer(path: str):
    return Tokenizer.load(path)


def mixture_source(data_cfg, *, seq_len: int, global_batch_size: int, seed: int,
                   rows: tuple[int, int]) -> ShardedGrainSource:
    """The Me-LLaMA mixture (mellama_jax.data) as this process's BatchSource."""
    loader = _loader_module()
    tokenizer = _tokenizer(data_cfg.tokenizer)
    make = lambda shard, shards: loader.make_pretrain_iterator(  # noqa: E731
        data_cfg.mixture, tokenizer, seq_len=seq_len, global_batch_size=global_batch_size, seed=seed,
        process_index=shard, process_count=shards)
    return ShardedGrainSource(make, global_batch_size=global_batch_size, rows=rows, configured=data_cfg.shards)


def mixture_heldout(data_cfg, *, seq_len: int, batch_size: int, batches: int) -> dict[str, list[dict]]:
    """Held-out batches per mixture component from mellama_jax.data (process-local rows)."""
    loader = _loader_module()
    tokenizer = _tokenizer(data_cfg.tokenizer)
    names = [c["name"] for c in data_cfg.mixture.to_dict().get("components", [])] or list(COMPONENTS)
    out = {}
    for name in names:
        out[name] = loader.make_heldout_batches(data_cfg.mixture, tokenizer, name, seq_len=seq_len,
                                                batch_size=batch_size, num_batches=batches,
                                                process_index=jax.process_index(),
                                                process_count=jax.process_count())
    return out


def sft_source(data_cfg, *, seq_len: int, global_batch_size: int, seed: int,
               rows: tuple[int, int]) -> ShardedGrainSource:
    """Packed instruction-tuning rows (mellama_jax.data: `data.mixture.instruct`; loss on responses only)."""
    loader = _loader_module()
    tokenizer = _tokenizer(data_cfg.tokenizer)
    make = lambda shard, shards: loader.make_sft_iterator(  # noqa: E731
        data_cfg.mixture, tokenizer, seq_len=seq_len, global_batch_size=global_batch_size, seed=seed,
        process_index=shard, process_count=shards)
    return ShardedGrainSource(make, global_batch_size=global_batch_size, rows=rows, configured=data_cfg.shards)


def sft_heldout(data_cfg, *, seq_len: int, batch_size: int, batches: int) -> dict[str, list[dict]]:
    """Up to `batches` fixed batches of the held-out instruction split (`instruct.heldout_fraction`)."""
    loader = _loader_module()
    iterator = loader.make_sft_iterator(data_cfg.mixture, _tokenizer(data_cfg.tokenizer), seq_len=seq_len,
                                        global_batch_size=batch_size, seed=0, process_index=jax.process_index(),
                                        process_count=jax.process_count(), split="heldout", repeat=False)
    out = [{k: np.asarray(b[k]) for k in BATCH_KEYS} for _, b in zip(range(batches), iterator)]
    if not out:
        raise ConfigError(f"data.mixture.instruct: the held-out split gives no full batch of {batch_size} rows of "
                         f"{seq_len} tokens; raise instruct.heldout_fraction, lower eval.batch_size, or set "
                         f"eval.every_steps=0")
    return {"instruct": out}
