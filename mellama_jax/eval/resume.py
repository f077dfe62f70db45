"""Per-batch results of a running evaluation, kept so that a killed run continues where it stopped.

Beside the report directory, `<out_dir>.partial/` holds

    settings.json                        the run's settings (EvalConfig and model), to refuse another run's work
    <task>/<pass>/<first row>.json       the outputs of one batch, written when it finishes

where a pass is one decoding of a task's prompts ("generate", "loglik", "shots1-generate", "sample2", …).
Batches are formed deterministically from the prompts and the settings (lengths sorted, fixed batch size), so
a rerun with the same command asks for the same batches, reads back those already done and decodes the rest.
The report is built from the outputs exactly as in one uninterrupted run, and the partial directory is
removed once the report is written. Files are written whole (local: renamed into place; object storage:
one object per batch), so a kill leaves no half-written batch. Multi-host runs need an out_dir every process
sees (gs://): process 0 writes, every process reads the same files before the batch's collective work.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
from jax.experimental import multihost_utils

from mellama_jax import paths

PARTIAL_SUFFIX = ".partial"
SETTINGS = "settings.json"


class ResumeError(ValueError):
    """The partial results found belong to another evaluation (a user error: different flags)."""


def partial_dir(out_dir: str) -> str:
    return paths.as_str(out_dir).rstrip("/") + PARTIAL_SUFFIX


class BatchStore:
    """Results of the batches of one pass, by the index of the batch's first (sorted) row."""

    def __init__(self, directory: str | None):
        self.directory = directory

    def load(self, start: int) -> Any | None:
        if self.directory is None:
            return None
        path = paths.resolve(paths.join(self.directory, f"{start}.json"))
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, start: int, value: Any) -> None:
        if self.directory is None or jax.process_index() != 0:
            return
        _write_whole(paths.join(self.directory, f"{start}.json"), json.dumps(value, ensure_ascii=False))


class Progress:
    """Where a run keeps its batches (`open`), or nowhere (`Progress(None)`: nothing kept, nothing resumed)."""

    def __init__(self, root: str | None):
        self.root = root

    @classmethod
    def open(cls, out_dir: str, settings: dict, *, overwrite: bool = False) -> "Progress":
        """The partial directory of `out_dir` for a run with `settings`: created, or reused when a run with the
        same settings left one (`overwrite` discards it). Another run's partial results are a ResumeError."""
        root = partial_dir(out_dir)
        settings = json.loads(json.dumps(settings))  # as it reads back
        stored_path = paths.resolve(paths.join(root, SETTINGS))
        primary = jax.process_index() == 0
        if overwrite:
            if primary and paths.resolve(root).exists():
                paths.remove_tree(root)
        elif stored_path.is_file():  # every process checks, so all refuse together
            stored = json.loads(stored_path.read_text())
            changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
            if changed:
                raise ResumeError(
                    f"{root}: partial results of another evaluation (it differs in {', '.join(changed)}); rerun "
                    f"that command to finish it, or pass --overwrite to start this one afresh")
        if primary and not stored_path.is_file():
            _write_whole(paths.join(root, SETTINGS), json.dumps(settings, indent=2, sort_keys=True))
        if jax.process_count() > 1:  # nobody reads batches before process 0 has cleared or kept them
            multihost_utils.sync_global_devices("mellama_jax.eval.resume.open")
        return cls(root)

    def batches(self, task: str, pass_name: str) -> BatchStore:
        return BatchStore(None if self.root is None else paths.join(self.root, task, pass_name))

    def done(self) -> None:
        """The report is written: the partial results are no longer needed."""
        if self.root is not None and jax.process_index() == 0 and paths.resolve(self.root).exists():
            paths.remove_tree(self.root)


def run_settings(cfg, model_name: str) -> dict:
    """What must match for a rerun to continue a run: every setting of the evaluation except the display
    ones, and the model."""
    values = dataclasses.asdict(cfg)
    values.pop("progress", None)
    return {"model": model_name, **values}


def _write_whole(path: str, text: str) -> None:
    target = paths.resolve(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if paths.is_remote(path):
        target.write_text(text)  # one object, visible whole or not at all
        return
    tmp = f"{os.fspath(target)}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, target)


NOWHERE = Progress(None)  # keeps nothing: the default of library calls (the CLI keeps every batch)
