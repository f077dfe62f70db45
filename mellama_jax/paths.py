"""The one path layer: every file the project reads or writes goes through `etils.epath`.

Why epath rather than fsspec directly: orbax (our checkpoints) already takes and returns `epath.Path`, so a
workdir is the same object for checkpoints, metrics, TensorBoard and config copies; its `gs://` / `s3://`
backend *is* fsspec (gcsfs / s3fs), so nothing is lost, and local paths stay `pathlib`-like. Array data in
checkpoints does not go through Python at all: orbax hands the same `gs://` path to tensorstore's own GCS
driver.

Rules:
* `resolve(p)` turns a user's string into an absolute local path or a URL with a scheme we handle; any other
  scheme is an error naming it (no silent `./hdfs:/...` directory on the local disk).
* Object stores have no atomic rename: a directory that must look complete only when it is (exports,
  prepared corpora) is written in place and committed last by a marker file (`write_commit_marker`);
  readers refuse a directory without it (`checkpoints.fileio.require_complete`). Training checkpoints use
  orbax's own commit markers.

Transient object-store errors (408, 429, 5xx, timeouts) are retried by the clients: gs:// files go through
`mellama_jax.gcs_client` (gcsfs with tensorstore's patience, registered below), checkpoint arrays through
tensorstore's own GCS driver.

Test/emulator endpoints are the clients' own settings: `STORAGE_EMULATOR_HOST` (gcsfs) and
`TENSORSTORE_GCS_HTTP_URL` (tensorstore); nothing here knows about them.
"""
from __future__ import annotations

import contextlib
import glob as stdlib_glob
import json
import os
import re
import shutil
import tempfile
import time
from typing import Iterable, Iterator

import fsspec
from etils import epath
from etils.epath import backend as epath_backend

from mellama_jax.config import ConfigError

REMOTE_SCHEMES = ("gs", "s3")  # served by epath's fsspec backend (gcsfs / s3fs)
COMMIT_MARKER = "COMMIT"  # written last into a finished export / prepared directory

# Registered by name, so gcsfs is imported only when a gs:// path is first used.
for _protocol in ("gs", "gcs"):
    fsspec.register_implementation(_protocol, "mellama_jax.gcs_client.PatientGCSFileSystem", clobber=True)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class PathSchemeError(ConfigError):
    """A path names a storage scheme this project cannot read or write."""


def scheme(p: str | os.PathLike) -> str:
    """'gs' for gs://b/x, '' for a local path."""
    m = _SCHEME.match(os.fspath(p))
    return m.group(1).lower() if m else ""


def is_remote(p: str | os.PathLike) -> bool:
    return scheme(p) != ""


def resolve(p: str | os.PathLike, *, what: str = "path") -> epath.Path:
    """An absolute local path (~ expanded) or a gs:// / s3:// URL; other schemes raise PathSchemeError."""
    s = os.fspath(p)
    sch = scheme(s)
    if sch == "file":
        s, sch = s[len("file://"):], ""
    if sch and sch not in REMOTE_SCHEMES:
        raise PathSchemeError(f"{what} {s!r}: the scheme '{sch}://' is not supported; use a local path or one of "
                              f"{', '.join(x + '://' for x in REMOTE_SCHEMES)}")
    if sch:
        return epath.Path(s)
    return epath.Path(os.path.abspath(os.path.expanduser(s)))


def as_str(p: str | os.PathLike, *, what: str = "path") -> str:
    return os.fspath(resolve(p, what=what))


def join(base: str | os.PathLike, *parts: str) -> str:
    """os.path.join that keeps a URL a URL (epath joins with '/')."""
    return os.fspath(epath.Path(os.fspath(base)).joinpath(*parts))


def glob(pattern: str | os.PathLike) -> list[str]:
    """Sorted matches of a glob pattern: local patterns as Python's glob (no `**` recursion), remote ones as
    gcsfs' glob."""
    s = os.fspath(pattern)
    if is_remote(s):
        resolve(s)
        prefix = scheme(s) + "://"
        return sorted(m if "://" in m else prefix + m for m in _fs(s).glob(s))
    return sorted(stdlib_glob.glob(os.path.expanduser(s)))


def info(p: str | os.PathLike) -> tuple[int, float]:
    """(size in bytes, modification time) of a local or remote file."""
    s = os.fspath(p)
    if not is_remote(s):
        st = os.stat(os.path.expanduser(s))
        return st.st_size, st.st_mtime_ns
    i = _fs(s).info(s)
    return int(i.get("size", 0)), hash(str(i.get("generation") or i.get("updated") or i.get("mtime") or ""))


def open_file(p: str | os.PathLike, mode: str = "rb"):
    """A file object for a local or remote path (binary or text by mode)."""
    return resolve(p).open(mode)


def walk(directory: str | os.PathLike) -> Iterable[tuple[epath.Path, list[str], list[str]]]:
    """epath's walk, with every root a full path (its gs:// backend yields roots without the scheme)."""
    top = resolve(directory)
    prefix = scheme(top) + "://" if is_remote(top) else ""
    for root, dirs, files in top.walk():
        root_s = os.fspath(root)
        if prefix and not root_s.startswith(prefix):
            root = epath.Path(prefix + root_s)
        yield root, dirs, files


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a directory tree file by file (any backend to any backend)."""
    src_p, dst_p = resolve(src), resolve(dst)
    for root, _, files in walk(src_p):
        rel = os.fspath(root)[len(os.fspath(src_p)):].strip("/")
        target = dst_p / rel if rel else dst_p
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            (root / f).copy(target / f, overwrite=True)


def move_aside(p: str | os.PathLike, tag: str) -> str:
    """Rename a directory to `<name>.<tag>-<UTC timestamp>` next to it (never deletes its contents).

    Local: one atomic rename. Object stores: server-side copy of every object, then removal of the
    originals (gcsfs' rename tries a per-object move API first, which emulators and older buckets lack)."""
    src = resolve(p)
    dst = src.parent / f"{src.name}.{tag}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    return move(src, dst)


def move(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Move a file or directory tree to `dst` (which must not exist) on the same storage; returns dst.

    Local: one atomic rename. Object stores: server-side copy of every object (no bytes pass through this
    machine), then removal of the originals, so it is not atomic: callers commit with a marker afterwards."""
    src, dst = resolve(src), resolve(dst)
    if not is_remote(src):
        os.rename(src, dst)
        return os.fspath(dst)
    fs = _fs(src)
    fs.copy(os.fspath(src), os.fspath(dst), recursive=True)
    fs.rm(os.fspath(src), recursive=True)
    fs.invalidate_cache()  # gcsfs caches listings; the next listing (orbax's steps) must see the move
    return os.fspath(dst)


def forget_listings(p: str | os.PathLike) -> None:
    """Drop cached listings of a remote path's filesystem: other processes (Beam workers) wrote there."""
    if is_remote(p):
        _fs(p).invalidate_cache()


def _fs(p):
    """The fsspec filesystem epath itself uses for a remote path (one instance, so one listing cache)."""
    return epath_backend.fsspec_backend.fs(os.fspath(p))


def remove_tree(p: str | os.PathLike) -> None:
    p = resolve(p)
    if p.exists():
        p.rmtree()


def write_commit_marker(directory: str | os.PathLike, info: dict | None = None) -> None:
    """Mark a directory complete. Call it after every other file of the directory is written."""
    (resolve(directory) / COMMIT_MARKER).write_text(json.dumps(info or {}, sort_keys=True) + "\n")


def is_committed(directory: str | os.PathLike) -> bool:
    return (resolve(directory) / COMMIT_MARKER).exists()


def files_under(directory: str | os.PathLike) -> Iterable[epath.Path]:
    for root, _, files in walk(directory):
        for f in files:
            yield root / f


@contextlib.contextmanager
def local_copy(directory: str | os.PathLike) -> Iterator[str]:
    """A local path holding `directory`'s files: itself when local, else a temporary download (for readers
    that need real files, e.g. memory-mapped safetensors), removed afterwards."""
    if not is_remote(directory):
        yield as_str(directory)
        return
    stage = tempfile.mkdtemp(prefix="mellama-in-")
    try:
        copy_tree(directory, stage)
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
