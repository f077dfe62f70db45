"""Where a prepared corpus is written: its output directory, staging, and the step that publishes it.

A corpus is complete only when `corpus_report.json` is there (written last) and, on object storage, the
`COMMIT` marker after it (paths.py): readers refuse anything else, so a killed run never looks finished.

* Local `out_dir`: shards are written into `<out_dir>/.partial/` and renamed into place when every component is
  done (the previous corpus, with --overwrite, stays readable until then).
* Object storage (`gs://`): with the Beam runner the workers write their shards straight into
  `<out_dir>/.partial/` (shards_beam.py; `shared_staging`). The local runner's TFDS writer writes local files
  only (this array_record build; its reader opens gs:// objects itself, see docs/cloud_storage.md), so there
  shards are staged on local disk and uploaded component by component into `<out_dir>/.partial/` (the local
  copy of a component is removed once uploaded, so local disk holds the largest component, not the corpus).
  Publishing moves `.partial/*` into place server-side, then writes the report and the COMMIT marker. A
  leftover of a killed run (no COMMIT marker) is cleared by the next run.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

from mellama_jax import paths
from mellama_jax.data.errors import DataError

log = logging.getLogger(__name__)

CORPUS_REPORT = "corpus_report.json"
CORPUS_DIR = "mellama_corpus"
DOCUMENTS_DIR = "documents"  # per-document metadata of the source formats (process_unit's manifest)
STAGING = ".partial"  # everything is written here first; removed on failure
OURS = frozenset({CORPUS_REPORT, CORPUS_DIR, DOCUMENTS_DIR, STAGING, paths.COMMIT_MARKER})


def _check_entries(out_dir: str, entries: list[str], overwrite: bool, complete: bool) -> None:
    foreign = sorted(e for e in entries if e not in OURS)
    if foreign:
        raise DataError(f"--out_dir {out_dir}: holds files that are not a prepared corpus ({', '.join(foreign[:5])}"
                        f"{', ...' if len(foreign) > 5 else ''}); use a new or empty directory")
    if complete and not overwrite:
        raise DataError(f"{out_dir}: already holds a prepared corpus; pass overwrite=True (--overwrite)")


class LocalOutput:
    """A local out_dir: staging inside it, published by renames."""

    def __init__(self, out_dir: str, overwrite: bool):
        self.out_dir = out_dir
        self.created = not os.path.exists(out_dir)
        if not self.created:
            if not os.path.isdir(out_dir):
                raise DataError(f"--out_dir {out_dir}: exists and is not a directory")
            entries = os.listdir(out_dir)
            _check_entries(out_dir, entries, overwrite, bool(set(entries) & {CORPUS_REPORT, CORPUS_DIR, DOCUMENTS_DIR}))
        self.staging = os.path.join(out_dir, STAGING)
        shutil.rmtree(self.staging, ignore_errors=True)  # left by a run that was killed
        os.makedirs(self.staging)
        self.shared_staging = self.staging  # where Beam workers write (they share this disk or mount it)

    def component_done(self, name: str) -> None:
        del name  # already in place under the staging directory

    def publish(self, result: dict) -> None:
        """Replace any previous corpus by the staged one; the report goes last (the corpus is complete then)."""
        report_path = os.path.join(self.out_dir, CORPUS_REPORT)
        if os.path.exists(report_path):
            os.remove(report_path)  # first: the directory stops looking complete
        marker = os.path.join(self.out_dir, paths.COMMIT_MARKER)
        if os.path.exists(marker):
            os.remove(marker)
        for name in (CORPUS_DIR, DOCUMENTS_DIR):
            shutil.rmtree(os.path.join(self.out_dir, name), ignore_errors=True)
            if os.path.isdir(os.path.join(self.staging, name)) and any(os.scandir(os.path.join(self.staging, name))):
                os.replace(os.path.join(self.staging, name), os.path.join(self.out_dir, name))
        shutil.rmtree(self.staging)
        tmp = report_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, report_path)
        paths.write_commit_marker(self.out_dir)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.created and os.path.isdir(self.out_dir) and not os.listdir(self.out_dir):
            os.rmdir(self.out_dir)


class RemoteOutput:
    """An out_dir on object storage: staged on local disk under `staging_root`, uploaded per component."""

    def __init__(self, out_dir: str, overwrite: bool, staging_root: str | None = None):
        self.out_dir = out_dir
        root = paths.resolve(out_dir)
        entries = [p.name for p in root.iterdir()] if root.exists() else []
        committed = paths.COMMIT_MARKER in entries
        _check_entries(out_dir, entries, overwrite, committed)
        if entries and not committed:
            log.warning("%s: clearing what a previous, unfinished preparation left (no %s marker): %s", out_dir,
                        paths.COMMIT_MARKER, ", ".join(sorted(entries)))
            for name in entries:
                paths.remove_tree(paths.join(out_dir, name))
        self.remote_staging = paths.join(out_dir, STAGING)
        paths.remove_tree(self.remote_staging)
        self.shared_staging = self.remote_staging  # Beam workers write here themselves
        self.staging = tempfile.mkdtemp(prefix="mellama-prepare-", dir=staging_root)
        log.info("staging the corpus in %s before uploading it to %s", self.staging, out_dir)

    def component_done(self, name: str) -> None:
        """Upload a finished component staged on local disk and free that disk (Beam workers uploaded theirs)."""
        local = os.path.join(self.staging, CORPUS_DIR, name)
        if not os.path.isdir(local):
            return
        paths.copy_tree(local, paths.join(self.remote_staging, CORPUS_DIR, name))
        shutil.rmtree(local)

    def publish(self, result: dict) -> None:
        documents = os.path.join(self.staging, DOCUMENTS_DIR)
        if os.path.isdir(documents) and any(os.scandir(documents)):
            paths.copy_tree(documents, paths.join(self.remote_staging, DOCUMENTS_DIR))
        # The old corpus (with --overwrite) stops looking complete first, then is replaced.
        for name in (paths.COMMIT_MARKER, CORPUS_REPORT):
            marker = paths.resolve(paths.join(self.out_dir, name))
            if marker.exists():
                marker.unlink()
        for name in (CORPUS_DIR, DOCUMENTS_DIR):
            target = paths.join(self.out_dir, name)
            paths.remove_tree(target)
            if paths.resolve(paths.join(self.remote_staging, name)).exists():
                paths.move(paths.join(self.remote_staging, name), target)
        paths.remove_tree(self.remote_staging)
        paths.resolve(paths.join(self.out_dir, CORPUS_REPORT)).write_text(json.dumps(result, indent=2))
        paths.write_commit_marker(self.out_dir)
        shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            paths.remove_tree(self.remote_staging)
        except Exception as e:  # noqa: BLE001 - the run already failed; its own error is the one to see
            log.warning("%s: could not remove the upload staging (%s); the next run clears it", self.remote_staging, e)


def claim(out_dir: str, overwrite: bool, staging_root: str | None = None) -> LocalOutput | RemoteOutput:
    """Check `out_dir` may be written and set up its staging."""
    if paths.is_remote(out_dir):
        return RemoteOutput(out_dir, overwrite, staging_root)
    return LocalOutput(out_dir, overwrite)
