"""Host batches onto the mesh, and the data position in checkpoints.

The input pipelines live in mellama_jax.data (grain mixtures, SFT, synthetic data, per-host shards); they yield
*host* batches: numpy rows [start, stop) of the global batch, the rows `process_rows` says this process
supplies. Here those rows become one global, sharded jax.Array per field (`global_batch`), and a source's
position becomes the checkpoint's `data_iter` item (`Checkpointed`: JSON, every process's state merged where a
source says how).
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Protocol

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from mellama_jax import parallel
from mellama_jax.data.packing import BATCH_KEYS
from mellama_jax.train.step import ROW_DOMAIN, TRAIN_KEYS, row_sharding


class HostSource(Protocol):
    """What the data package gives training: host batches and a JSON position."""
    def __next__(self) -> dict[str, np.ndarray]: ...
    def get_state(self) -> Any: ...
    def set_state(self, state: Any) -> None: ...


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


def _gathered(state: Any, merge) -> Any:
    """Every process's JSON state, merged by `merge` (one process: the state itself)."""
    if jax.process_count() == 1 or merge is None:
        return state  # a source without merge_states has the same state on every process (e.g. synthetic)
    local = json.dumps(state).encode()
    size = np.asarray([len(local)], np.int32)
    longest = int(np.max(multihost_utils.process_allgather(size)))
    padded = np.zeros(longest, np.uint8)
    padded[:len(local)] = np.frombuffer(local, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(-1, longest)
    return merge([json.loads(row.tobytes().rstrip(b"\0")) for row in rows])


class Checkpointed:
    """A host source with its position as the checkpoint's `data_iter` item (the loop's BatchSource)."""

    def __init__(self, source: HostSource):
        self.source = source

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self.source)

    @property
    def domain_names(self) -> tuple[str, ...]:
        """The mixture components, in the order of the rows' `row_domain` values (none: one component)."""
        return tuple(getattr(self.source, "domain_names", ()))

    def stats(self) -> dict[str, float]:
        stats = getattr(self.source, "stats", None)
        return stats() if callable(stats) else {}

    def save_args(self) -> ocp.args.CheckpointArgs:
        return ocp.args.JsonSave(_gathered(self.source.get_state(), getattr(self.source, "merge_states", None)))

    def restore_args(self) -> ocp.args.CheckpointArgs:
        return ocp.args.JsonRestore()

    def restored(self, value: Any) -> None:
        self.source.set_state(value)


def checkpointed(source) -> Checkpointed:
    """`source` as the loop's BatchSource (already one: itself)."""
    return source if hasattr(source, "save_args") else Checkpointed(source)
