"""Is a training checkpoint step readable? Checks that need no model config, run before every restore.

A step (`checkpoints/<step>/`, written by orbax) holds
    _CHECKPOINT_METADATA           the step's metadata (JSON)
    state/_METADATA, _sharding     the tree's metadata and shardings (JSON)
    state/array_metadatas/*        per-process array metadata (JSON)
    state/manifest.ocdbt, ocdbt.process_*/manifest.ocdbt, d/*, ocdbt.process_*/d/*
                                   the arrays: an OCDBT database (manifests, b-tree nodes, data files)
    data_iter/metadata             the data position (JSON)
    config/metadata                the run's config (JSON)
    commit_success.txt             orbax's commit markers (their content is free text and never read; on
                                   object storage a step without its marker is an unfinished save, which
                                   orbax does not list as a step at all)
A file that is missing, empty, cut or garbled makes the step damaged: `step_damage` names the file. The
JSON files are parsed and the OCDBT database is listed (its manifests and b-tree nodes read, no array
data); a cut or garbled data file is found by the restore itself (TensorStore's read errors, `damage_of`).
Only then can a failed restore of an intact step mean what it says: the model or optimizer changed.
"""
from __future__ import annotations

import json
import os
import re
import sys

import tensorstore as ts

from mellama_jax import paths
from mellama_jax.checkpoints.errors import CheckpointDamaged

REQUIRED_FILES = ("_CHECKPOINT_METADATA", "state/_METADATA", "state/manifest.ocdbt")
ITEM_FILES = ("data_iter/metadata", "config/metadata")  # required when the item's directory is there
JSON_FILES = ("_CHECKPOINT_METADATA", "_METADATA", "_sharding", "metadata")
COMMIT_MARKER = "commit_success.txt"

# TensorStore reports unreadable stored data with these status codes (a changed model is reported differently:
# orbax's "Requested shape ... is not compatible" ValueError).
_STORAGE_STATUS = re.compile(r"^(OUT_OF_RANGE|DATA_LOSS|FAILED_PRECONDITION|NOT_FOUND|UNAVAILABLE): (.*)", re.S)
_TS_READING = re.compile(r'Error reading "([^"]+)" in OCDBT database at (?:local file "([^"]+)"|(\S+?)): ')


def _is_json(f) -> bool:
    return f.name in JSON_FILES or f.parent.name == "array_metadatas"


def unreadable_json_files(step_dir: str) -> list[str]:
    """The step's JSON files (metadata of every item, the data position, the config) that do not parse."""
    bad = []
    for f in paths.files_under(step_dir):
        if _is_json(f):
            try:
                json.loads(f.read_text())
            except (ValueError, UnicodeDecodeError) as e:
                bad.append(f"{os.fspath(f)} ({type(e).__name__}: {e})")
    return bad


def step_damage(step: int, step_dir: str) -> CheckpointDamaged | None:
    """The first damaged file of a training checkpoint step, or None if every check passes."""
    root = paths.resolve(step_dir)
    required = REQUIRED_FILES + tuple(rel for rel in ITEM_FILES if (root / os.path.dirname(rel)).is_dir())
    for rel in required:
        if not (root / rel).exists():
            return CheckpointDamaged(step, os.fspath(root / rel), "missing file")
    for f in paths.files_under(step_dir):
        if f.name != COMMIT_MARKER and paths.info(f)[0] == 0:
            return CheckpointDamaged(step, os.fspath(f), "empty file")
    bad = unreadable_json_files(step_dir)
    if bad:
        return CheckpointDamaged(step, bad[0].split(" (")[0], "unreadable JSON (" + bad[0].split(" (", 1)[1])
    state = os.fspath(root / "state")
    try:
        ts.KvStore.open({"driver": "ocdbt", "base": state.rstrip("/") + "/" if paths.is_remote(state)
                         else "file://" + state}).result().list().result()
    except Exception as e:  # noqa: BLE001 - TensorStore raises plain ValueError/Exception with a status text
        return CheckpointDamaged(step, f"{state}/manifest.ocdbt (the array manifests)",
                                 f"unreadable ({str(e).splitlines()[0][:300]})")
    return None


def damage_of(step: int, step_dir: str, error: BaseException) -> CheckpointDamaged | None:
    """Describe `error` (raised restoring `step`) as damage to the stored files, or None if it is not."""
    chain, e = [], error
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, CheckpointDamaged):
            return e
        m = _STORAGE_STATUS.match(str(e))
        if m:
            where = _TS_READING.search(m.group(2))
            name = (f"array file {where.group(1)!r} of {where.group(2) or where.group(3)}" if where else step_dir)
            return CheckpointDamaged(step, name, f"{m.group(1)}: {m.group(2).splitlines()[0][:300]}")
        if isinstance(e, FileNotFoundError):
            return CheckpointDamaged(step, str(e.filename or step_dir), "missing file")
    if any(isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)) for e in chain):
        bad = unreadable_json_files(step_dir)
        return CheckpointDamaged(step, "; ".join(bad) or step_dir, "unreadable JSON")
    return step_damage(step, step_dir)


def _quiet_closed_loop_callbacks(unraisable) -> None:
    """When a restore fails on a damaged file, TensorStore's other reads of that restore still complete, and
    their callbacks into orbax's asyncio loop (already closed by then) raise "Event loop is closed", which
    Python prints as unraisable tracebacks after the one-line error. Those, and only those, are dropped."""
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
        return
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def quiet_failed_restores() -> None:
    """Install the filter above (idempotent)."""
    if sys.unraisablehook is not _quiet_closed_loop_callbacks:
        global _previous_unraisablehook
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _quiet_closed_loop_callbacks
