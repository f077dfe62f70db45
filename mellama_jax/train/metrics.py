"""Where training metrics go: metrics.jsonl and TensorBoard in the workdir, and a tqdm progress bar.

Only process 0 writes; other processes get a writer that does nothing, so callers never branch on rank.
Every record is one JSON object per line with "step", "kind" ("train" | "eval") and the scalar values,
flushed immediately so a killed run keeps everything it logged.

On object storage (a gs:// workdir) a file cannot be appended to: the writer keeps the file's lines and
re-uploads the whole object (an atomic replace) at `sync()` — the loop calls it at every checkpoint, so
what a resumed run has not redone is always stored — and at most every REMOTE_UPLOAD_EVERY_S seconds.
TensorBoard event files of a gs:// workdir are written to a local staging directory and copied up under
the same rhythm (tensorboardX's own GCS writer re-uploads on garbage collection, after the run, and retries
for minutes if the bucket is gone by then).
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time

from tensorboardX import SummaryWriter
from tqdm import tqdm

from mellama_jax import paths

METRICS_FILE = "metrics.jsonl"
REMOTE_UPLOAD_EVERY_S = 60.0  # object stores: upload metrics at most this often between checkpoints


class _ObjectLines:
    """An append-only text file on object storage: all lines kept, the object replaced on flush."""

    def __init__(self, path: str):
        self.path = paths.resolve(path)
        self.text = self.path.read_text() if self.path.exists() else ""
        self.dirty = False

    def write(self, line: str) -> None:
        self.text += line
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self.path.write_text(self.text)
            self.dirty = False

    def close(self) -> None:
        self.flush()


class MetricsWriter:
    def __init__(self, workdir: str, *, total_steps: int, initial_step: int = 0, enabled: bool = True,
                 tensorboard: bool = True, progress_bar: bool = True):
        self.enabled = enabled
        self._jsonl = self._tb = self._bar = None
        if not enabled:
            return
        self._remote = paths.is_remote(workdir)
        self._uploaded = time.monotonic()
        paths.resolve(workdir).mkdir(parents=True, exist_ok=True)
        target = paths.join(workdir, METRICS_FILE)
        self._jsonl = _ObjectLines(target) if self._remote else open(target, "a")
        self._tb_remote = paths.join(workdir, "tensorboard")
        self._tb_stage = tempfile.mkdtemp(prefix="mellama-tb-") if self._remote else None
        if tensorboard:
            self._tb = SummaryWriter(self._tb_stage or self._tb_remote)
        if progress_bar:
            self._bar = tqdm(total=total_steps, initial=initial_step, desc="train", unit="step", dynamic_ncols=True)

    def write(self, step: int, kind: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": int(step), "kind": kind, "time": time.time(), **clean}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))
        if not self._remote or time.monotonic() - self._uploaded > REMOTE_UPLOAD_EVERY_S:
            self.sync()

    def sync(self) -> None:
        """Make everything written so far durable (local: flush; object storage: upload)."""
        if not self.enabled or self._jsonl is None:
            return
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()
            if self._tb_stage is not None:
                paths.copy_tree(self._tb_stage, self._tb_remote)
        self._uploaded = time.monotonic()

    def progress(self, step: int, values: dict[str, float]) -> None:
        """Move the bar to `step`, showing loss and tokens/s (tqdm computes the ETA)."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
            if self._tb_stage is not None:
                paths.copy_tree(self._tb_stage, self._tb_remote)
                shutil.rmtree(self._tb_stage, ignore_errors=True)
        if self._jsonl is not None:
            self._jsonl.close()
        self._jsonl = self._tb = self._bar = None
