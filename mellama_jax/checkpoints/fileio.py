"""Output directories that are complete or absent, tokenizer files, JSON.

Every directory is written atomically, so a failed or interrupted save never leaves something that looks
like a complete checkpoint or export: locally into `<out>.tmp-XXXX` next to the destination, renamed at the
end; on object storage (gs://, no atomic rename) in place, with a COMMIT marker written last, and readers
refuse a remote directory without it. Paths go through `mellama_jax.paths` (etils.epath): local or gs://.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from typing import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from mellama_jax import paths
from mellama_jax.checkpoints.errors import CheckpointError
from mellama_jax.data.hf_tokenizer import TOKENIZER_JSON, export_tokenizer_dir
from mellama_jax.data.tokenizer import MODEL_FILE


# ---------------------------------------------------------------- atomic output directories
def is_primary() -> bool:
    return jax.process_index() == 0


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _shared_token() -> str:
    """A random suffix every process agrees on (all processes write into the same temporary directory)."""
    token = secrets.randbits(31)
    if jax.process_count() > 1:
        token = int(multihost_utils.broadcast_one_to_all(np.int32(token)))
    return f"{token:08x}"


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str) -> None:
    """Give `path` and everything under it the permissions of files the user creates normally (0666/0777 less
    the umask): temporary directories are 0700 and safetensors writes 0600, which colleagues cannot read."""
    mask = current_umask()
    os.chmod(path, 0o777 & ~mask)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Yield the directory to write into; what it holds becomes `out_dir` only if the block succeeds.

    Local: a fresh temporary directory next to `out_dir`, renamed onto it at the end. Object storage (no
    atomic rename): `out_dir` itself, with the COMMIT marker written last (readers require it). Either way a
    COMMIT marker ends up in the finished directory.
    An existing `out_dir` is an error unless `overwrite`; locally it is replaced only after the new content is
    complete, on object storage its marker is removed first (so it never looks complete half-replaced).
    On failure the partial output is removed (best effort) and the exception propagates.
    In multi-process runs every process must enter this together; process 0 does the file-system moves.
    """
    out = paths.resolve(out_dir, what="output directory")
    out_dir = os.fspath(out)
    remote = paths.is_remote(out_dir)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir}: output directory already exists; pass overwrite=True "
                                  f"(--overwrite) to replace it")
        if not out.is_dir():
            raise FileExistsError(f"{out_dir}: exists and is not a directory; refusing to replace it")
    if remote:
        if is_primary() and out.exists():
            (out / paths.COMMIT_MARKER).unlink(missing_ok=True)  # not complete from here on
            out.rmtree()
        _barrier(f"mellama_jax.remote_clear:{out_dir}")
        try:
            yield out_dir
            _barrier(f"mellama_jax.remote_done:{out_dir}")
            if is_primary():
                paths.write_commit_marker(out_dir)
            _barrier(f"mellama_jax.remote_commit:{out_dir}")
        except BaseException:
            if is_primary():
                paths.remove_tree(out_dir)
            raise
        return
    parent = os.path.dirname(out_dir)
    tmp = f"{out_dir}.tmp-{_shared_token()}"
    if is_primary():
        os.makedirs(parent, exist_ok=True)
        os.makedirs(tmp)
    _barrier(f"mellama_jax.atomic_mkdir:{tmp}")
    try:
        yield tmp
        _barrier(f"mellama_jax.atomic_done:{tmp}")
        if is_primary():
            honour_umask(tmp)
            paths.write_commit_marker(tmp)
            if os.path.lexists(out_dir):
                old = f"{out_dir}.old-{secrets.token_hex(4)}"
                os.rename(out_dir, old)
                os.rename(tmp, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, out_dir)
        _barrier(f"mellama_jax.atomic_rename:{tmp}")
    except BaseException:
        if is_primary():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def local_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Like atomic_output_dir, for writers that need local files (safetensors): on object storage the block
    writes into a local staging directory, uploaded (then committed by the marker) only if it succeeds."""
    if not paths.is_remote(out_dir):
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
            yield tmp
        return
    stage = tempfile.mkdtemp(prefix="mellama-out-")
    try:
        yield stage
        with atomic_output_dir(out_dir, overwrite=overwrite) as remote:
            if is_primary():
                paths.copy_tree(stage, remote)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def require_complete(directory: str | os.PathLike, what: str) -> None:
    """Object storage: refuse a directory whose writer did not finish (no COMMIT marker). Local directories
    were renamed into place complete (and older ones predate the marker)."""
    if paths.is_remote(directory) and not paths.is_committed(directory):
        raise CheckpointError(f"{os.fspath(directory)}: incomplete {what} (no {paths.COMMIT_MARKER} marker: its "
                              f"writer did not finish); write it again")


# ---------------------------------------------------------------- tokenizer files
def copy_tokenizer_files(src: str | os.PathLike, dst_dir: str | os.PathLike) -> list[str]:
    """The tokenizer found in `src` (a directory, or a path to tokenizer.model) as HF tokenizer files in
    `dst_dir` that give sentencepiece's ids (`hf_tokenizer.export_tokenizer_dir`); [] when `src` holds none.
    Either end may be on object storage (read and written through a local stage)."""
    source = paths.resolve(src, what="tokenizer")
    src_dir = paths.as_str(source.parent if source.is_file() else source)
    with paths.local_copy(src_dir) as local_dir:
        local_src = os.path.join(local_dir, source.name) if source.is_file() else local_dir
        if not paths.is_remote(dst_dir):
            return export_tokenizer_dir(local_src, paths.as_str(dst_dir))
        stage = tempfile.mkdtemp(prefix="mellama-tok-")
        try:
            names = export_tokenizer_dir(local_src, stage)
            if names:
                paths.copy_tree(stage, dst_dir)
            return names
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def has_tokenizer(directory: str | os.PathLike) -> bool:
    directory = paths.resolve(directory)
    return any((directory / n).is_file() for n in (MODEL_FILE, TOKENIZER_JSON))



def write_json(path: str, value) -> None:
    paths.resolve(path).write_text(json.dumps(value, indent=2, sort_keys=True))


def read_json(path: str):
    return json.loads(paths.resolve(path).read_text())
