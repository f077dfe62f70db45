"""Work units of corpus preparation and the documents they hold.

A unit is a byte range of a plain JSONL file (aligned to lines), a whole compressed JSONL / Parquet /
ArrayRecord / XML / CSV file (or any object on gs://), or a group of MIMIC-CXR report files. `iter_documents` reads a unit the same
way in every pass (screening, tokenizing) and numbers its records, so a record's (unit, ordinal) names it
across passes, runners and worker counts.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import mmap
import os
import zlib
from typing import Any, Iterator

import numpy as np
import pyarrow.parquet as pq
from array_record.python.array_record_data_source import ArrayRecordDataSource

from mellama_jax.data import readers
from mellama_jax.data.config import DataConfig
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.sources import (
    SOURCE_FORMATS,
    SourceConfig,
    _decode_json,
    _read_bytes,
    detect_format,
    expand_paths,
    text_check,
    text_of,
)
from mellama_jax.paths import is_remote, join, resolve

UNIT_BYTES = 64 << 20  # plain JSONL files are cut into ~64 MiB units
CXR_FILES_PER_UNIT = 2000  # MIMIC-CXR has one small file per study (~227k)


@dataclasses.dataclass(frozen=True)
class Unit:
    """A piece of one source for one worker task."""
    component: str
    path: str
    fmt: str
    text_fields: tuple[str, ...]
    split_rule: str  # "train" / "heldout": whole file in that split; "hash": by heldout_fraction
    heldout_fraction: float
    start: int = 0  # byte range for plain JSONL, aligned to line starts
    end: int = -1
    first_line: int = 1  # line number of the first line at `start`
    source: SourceConfig | None = None  # reader options (deid, include)
    files: tuple[str, ...] = ()  # mimic_cxr_reports: the report files of this unit (path is the first)


def held_out(path: str, line: int, fraction: float) -> bool:
    # Agrees with sources.heldout_mask (the loader's split of raw sources) except for its at-least-one
    # rule, which needs every record's hash; corpus preparation streams, and reports an empty held-out split.
    return zlib.crc32(f"{os.path.basename(path)}:{line}".encode()) < int(fraction * 2 ** 32)


def plan_units(cfg: DataConfig, unit_bytes: int = UNIT_BYTES) -> list[Unit]:
    units = []
    for comp in cfg.components:
        groups = [(s, "hash" if comp.heldout_fraction > 0 else "train") for s in comp.sources]
        groups += [(s, "heldout") for s in comp.heldout_sources]
        for src, rule in groups:
            if src.format == "tfds":
                handled = ", ".join(("jsonl", "parquet", "array_record") + SOURCE_FORMATS)
                raise DataError(f"component {comp.name!r}: tfds sources are read directly by the loader; "
                                f"prepare_corpus handles files ({handled})")
            pattern = src.path
            if src.format == "mimic_cxr_reports" and resolve(pattern).is_dir():  # MIMIC-CXR's files/ directory
                pattern = join(pattern, "**", "s*.txt")
            paths = expand_paths(pattern)
            base = dict(component=comp.name, text_fields=src.text_fields, split_rule=rule,
                        heldout_fraction=comp.heldout_fraction, source=src)
            if src.format == "mimic_cxr_reports":
                for i in range(0, len(paths), CXR_FILES_PER_UNIT):
                    group = tuple(paths[i:i + CXR_FILES_PER_UNIT])
                    units.append(Unit(**base, path=group[0], fmt=src.format, files=group))
                continue
            for path in paths:
                fmt = detect_format(path) if src.format == "auto" else src.format
                remote = is_remote(path)
                # An object is one unit: a byte range of it would cost every worker a download of the whole
                # object (plain JSONL is cut into units only on local disk, where it is memory-mapped).
                plain = fmt == "jsonl" and not remote and not path.lower().endswith((".gz", ".zst", ".zstd"))
                size = os.path.getsize(path) if plain else 0
                if plain and size > unit_bytes:
                    for start, end, first_line in _line_aligned_ranges(path, size, unit_bytes):
                        units.append(Unit(**base, path=path, fmt=fmt, start=start, end=end, first_line=first_line))
                else:
                    units.append(Unit(**base, path=path, fmt=fmt))
    return units


def _line_aligned_ranges(path: str, size: int, unit_bytes: int) -> list[tuple[int, int, int]]:
    """(start, end, first line number) ranges of about unit_bytes, each starting at a line start.

    One sequential pass over the file (memory-mapped) counts the lines before each range, so workers
    report exact file:line numbers without rereading what precedes their range.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        starts = [0]
        for cut in range(unit_bytes, size, unit_bytes):
            nl = buf.find(b"\n", cut - 1)
            if nl < 0 or nl + 1 >= size:
                break
            if nl + 1 > starts[-1]:
                starts.append(nl + 1)
        bounds = starts + [size]
        ranges, line = [], 1
        for a, b in zip(bounds[:-1], bounds[1:]):
            ranges.append((a, b, line))
            line += int(np.count_nonzero(np.frombuffer(buf[a:b], dtype=np.uint8) == 10))
    return ranges


def _records(unit: Unit, report: DataReport, dropped: collections.Counter) -> Iterator[tuple[int, Any, str, str]]:
    """(line / row / record number — what the held-out hash uses —, raw JSON bytes or a parsed record, where,
    file) of the unit's records."""
    if unit.fmt == "jsonl":
        buf = _read_bytes(unit.path)
        n = len(buf)
        start, end = unit.start, (unit.end if unit.end >= 0 else n)
        line, pos = unit.first_line, start
        while pos < end:
            nl = buf.find(b"\n", pos)
            stop = n if nl < 0 else nl
            raw = bytes(buf[pos:stop])
            if raw.strip():
                yield line, raw, f"{unit.path}:{line}", unit.path
            line += 1
            pos = stop + 1
    elif unit.fmt == "parquet":
        table = pq.read_table(io.BytesIO(resolve(unit.path).read_bytes()) if is_remote(unit.path) else unit.path)
        for i, row in enumerate(table.to_pylist()):
            yield i, row, f"{unit.path}:row {i}", unit.path
    elif unit.fmt == "array_record":
        ds = ArrayRecordDataSource([unit.path])
        for i in range(len(ds)):
            yield i, ds[i], f"{unit.path}:record {i}", unit.path
    elif unit.fmt in readers.READERS:
        for path in unit.files or (unit.path,):
            for line, rec, where in readers.read(unit.fmt, path, unit.source, report, dropped):
                yield line, rec, where, path
    else:
        raise DataError(f"{unit.path}: unsupported format {unit.fmt!r} for corpus preparation")


@dataclasses.dataclass
class Document:
    ordinal: int  # index of the record in its unit (bad records included): its name across passes
    where: str
    split: str
    text: str
    record: dict
    file: str


def iter_documents(unit: Unit, report: DataReport, tally: collections.Counter,
                   split: str | None = None) -> Iterator[Document]:
    """The valid documents of `unit` (of `split` only, when given; records of the other split are not
    checked, so each problem is reported once, by the pass over its own split). `tally` counts "records"
    and the reasons readers dropped records for."""
    check = text_check(unit.text_fields)
    for ordinal, (line, raw, where, path) in enumerate(_records(unit, report, tally)):
        tally["records"] += 1
        if unit.split_rule == "hash":
            in_split = "heldout" if held_out(path, line, unit.heldout_fraction) else "train"
        else:
            in_split = unit.split_rule
        if split is not None and in_split != split:
            continue
        obj = _decode_json(raw, where, report) if isinstance(raw, (bytes, bytearray)) else raw
        if obj is None or not check(obj, where, report):
            continue
        yield Document(ordinal, where, in_split, text_of(obj, unit.text_fields), obj, path)


def report_key(unit: Unit, file: str) -> str:
    """The name a document's source goes by in the report: its file, or for MIMIC-CXR (one file per study,
    ~227k) the configured directory / glob."""
    if unit.fmt == "mimic_cxr_reports" and unit.source is not None:
        return unit.source.path
    return file


def doc_id(unit: Unit, record: dict) -> str | None:
    """The source's own identifier of a document (PMID, note id, study id), for the report."""
    field = readers.DOC_ID.get(unit.fmt)
    value = record.get(field) if field else record.get("id")
    return None if value is None else str(value)
