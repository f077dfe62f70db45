"""Resumable stages for the staged Me-LLaMA driver.

A stage is complete when its `DONE.json` marker exists; the marker is written last, after every output
of the stage is in place, so an interrupted stage is simply run again (stages that train resume from
their own checkpoints inside, so a rerun continues rather than restarts).

A marker records the stage's input key: a hash of the stage's own config (`Stage.inputs`) and of the marker of
the stage before it (which includes that stage's unique run id). A stage whose config changed, or whose
upstream stage ran again, no longer matches its marker and runs again, and so does every stage after it.
`force=NAME` runs NAME and everything after it regardless.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from typing import Any, Callable

from mellama_jax import paths

log = logging.getLogger(__name__)

MARKER = "DONE.json"
INPUT_KEY_FILE = "INPUT_KEY"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[str], dict]  # receives the stage directory, returns a JSON-able summary
    description: str = ""
    inputs: Any = None  # JSON-able config the stage reads (part of its input key)


def stage_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, name)


def is_done(workdir: str, name: str) -> bool:
    return paths.resolve(os.path.join(stage_dir(workdir, name), MARKER)).exists()


def read_summary(workdir: str, name: str) -> dict:
    return json.loads(paths.resolve(os.path.join(stage_dir(workdir, name), MARKER)).read_text())


def write_text_atomic(path: str, text: str) -> None:
    """Local: write a temporary file and rename it into place. Object storage: one object write, which is
    atomic already (readers see the old object or the whole new one)."""
    if paths.is_remote(path):
        paths.resolve(path).write_text(text)
        return
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def input_key(stage: Stage, upstream: dict | None) -> str:
    """Hash of the stage's inputs and its upstream marker's key and run id."""
    blob = json.dumps({"inputs": stage.inputs, "upstream": upstream and [upstream.get("input_key"),
                                                                         upstream.get("run_id")]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_stages(workdir: str, stages: list[Stage], *, only: tuple[str, ...] = (), force: str | None = None,
               echo=print) -> dict[str, dict]:
    """Run each stage not yet done with the same inputs, in order; return every stage's summary."""
    summaries = {}
    names = [s.name for s in stages]
    for s in (*only, *([force] if force else [])):
        if s not in names:
            raise ValueError(f"unknown stage {s!r}; stages are {names}")
    forced = False
    upstream = None
    for i, stage in enumerate(stages, 1):
        d = stage_dir(workdir, stage.name)
        key = input_key(stage, upstream)
        forced = forced or stage.name == force
        if is_done(workdir, stage.name) and not forced:
            summary = read_summary(workdir, stage.name)
            if summary.get("input_key", key) == key:  # markers from before input keys count as matching
                summary["input_key"] = key
                summaries[stage.name] = upstream = summary
                echo(f"[{i}/{len(stages)}] {stage.name}: already complete, skipped ({d})")
                continue
            echo(f"[{i}/{len(stages)}] {stage.name}: its inputs changed since it ran; running it again")
        if only and stage.name not in only:
            echo(f"[{i}/{len(stages)}] {stage.name}: not selected, stopping here")
            break
        marker, key_file = paths.resolve(os.path.join(d, MARKER)), paths.resolve(os.path.join(d, INPUT_KEY_FILE))
        stale = marker.exists() or (key_file.exists() and key_file.read_text() != key)
        if stale:  # outputs of other inputs (a finished run, or an interrupted one): start the stage afresh
            paths.remove_tree(d)
        echo(f"[{i}/{len(stages)}] {stage.name}: {stage.description}")
        paths.resolve(d).mkdir(parents=True, exist_ok=True)
        key_file.write_text(key)  # an interrupted run resumes only with the same inputs
        t0 = time.time()
        summary = dict(stage.run(d) or {})
        summary["seconds"] = round(time.time() - t0, 1)
        summary["input_key"] = key
        summary["run_id"] = uuid.uuid4().hex
        write_text_atomic(os.fspath(marker), json.dumps(summary, indent=2, sort_keys=True, default=str))
        summaries[stage.name] = upstream = summary
        echo(f"[{i}/{len(stages)}] {stage.name}: done in {summary['seconds']} s")
    return summaries
