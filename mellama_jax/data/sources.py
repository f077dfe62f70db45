"""Random-access readers of raw records: JSONL (plain, .gz, .zst), Parquet, ArrayRecord, TFDS.

A `RecordSource` is a grain-compatible data source (`__len__`, `__getitem__`) over the *valid* records of
one or more files. Building it runs one validation pass over every record (`check`), so that

* bad records are found before training starts and reported with `file:line` (lenient) or raised
  (strict) by the `DataReport` — nothing is dropped unreported, nothing fails hours into a run, and
* the index holds only good records, so shuffling, per-process sharding and resume are exact.

Indexing costs one parse per record; it is meant for instruction sets and small corpora. Corpora at
pretraining scale are tokenized once by `mellama-prepare-corpus` into ArrayRecord shards (prepare.py),
read by `PreparedSource` without any validation pass. Compressed JSONL is decompressed into memory when
indexed (random access into a gzip/zstd stream is not possible); plain JSONL is memory-mapped.

Elements are `(record: dict, where: str)`; `where` is "path:line" (JSONL), "path:row N" (Parquet),
"path:record N" (ArrayRecord) or "tfds:name/split:index".
"""
from __future__ import annotations

import dataclasses
import glob
import gzip
import io
import json
import mmap
import os
import zlib
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from array_record.python.array_record_data_source import ArrayRecordDataSource

from mellama_jax import paths
from mellama_jax.config_groups import typed
from mellama_jax.data import errors as E
from mellama_jax.data.errors import DamagedFile, DataError, DataFieldError, DataReport
from mellama_jax.data.readers.jats import INCLUDE as JATS_INCLUDE
from mellama_jax.data.readers.mimic import DEID_RULES
from mellama_jax.data.sft_records import FORMATS as RECORD_FORMATS

# Streaming readers of the sources' own formats (data/readers), read by corpus preparation only.
SOURCE_FORMATS = ("pubmed_xml", "pmc_jats", "mimic_notes_csv", "mimic_cxr_reports")
FORMATS = ("auto", "jsonl", "parquet", "array_record", "tfds", "hf_disk") + SOURCE_FORMATS
# What `datasets.Dataset.save_to_disk` / `DatasetDict.save_to_disk` leave in a directory (format "hf_disk").
HF_DISK_STATE, HF_DISK_DICT = "state.json", "dataset_dict.json"


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One entry of a component's `sources` list.

    path: a file or glob (jsonl/parquet/array_record), a TFDS dataset name (format="tfds"), or a directory
          written by `datasets`' save_to_disk (format "hf_disk", detected; a DatasetDict's `split` is read).
    text_fields: record fields joined (blank line between) into the document text.
    record_format: instruction data only: the records' shape (sft_records.FORMATS; "auto" detects per record).
    """
    path: str
    format: str = "auto"
    text_fields: tuple[str, ...] = ("text",)
    split: str = "train"  # tfds and hf_disk DatasetDicts only
    data_dir: str | None = None  # tfds only
    deid: str = "keep"  # MIMIC de-identification placeholders: keep | mask | label (readers/mimic.py)
    include: tuple[str, ...] = ()  # pmc_jats: optional parts, "tables" and/or "captions" (readers/jats.py)
    record_format: str = "auto"

    def __post_init__(self):
        if self.format not in FORMATS:
            raise DataFieldError(f"source {self.path!r}", "format", self.format, f"expected one of {FORMATS}")
        if self.record_format not in RECORD_FORMATS:
            raise DataFieldError(f"source {self.path!r}", "record_format", self.record_format,
                                 f"expected one of {RECORD_FORMATS}")
        if self.deid not in DEID_RULES:
            raise DataFieldError(f"source {self.path!r}", "deid", self.deid, f"expected one of {DEID_RULES}")
        object.__setattr__(self, "include", (self.include,) if isinstance(self.include, str) else tuple(self.include))
        if set(self.include) - set(JATS_INCLUDE):
            raise DataFieldError(f"source {self.path!r}", "include", ",".join(self.include),
                             f"expected a subset of {JATS_INCLUDE}")
        if isinstance(self.text_fields, str):
            object.__setattr__(self, "text_fields", (self.text_fields,))
        object.__setattr__(self, "text_fields", tuple(self.text_fields))
        if not self.text_fields:
            raise DataFieldError(f"source {self.path!r}", "text_fields", None, "empty")

    @classmethod
    def from_any(cls, value: Any, where: str) -> "SourceConfig":
        """From a path (or glob) or a {path, format, ...} group at config path `where`."""
        if isinstance(value, SourceConfig):
            return value
        if isinstance(value, str):
            value = {"path": value}
        return typed(cls, value, where, error=DataError)


def detect_format(path: str) -> str:
    name = os.path.basename(path).lower()
    for suffix in (".gz", ".zst", ".zstd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if ".array_record" in name or name.endswith(".arrayrecord"):
        return "array_record"
    if name.endswith(".nxml"):
        return "pmc_jats"
    raise DataError(f"{path}: cannot tell the format from the file name; set format= to one of {FORMATS[1:]}")


def expand_paths(pattern: str) -> list[str]:
    try:
        paths.as_str(pattern, what="source path")  # a scheme we cannot read is an error naming it
    except paths.PathSchemeError as e:
        raise DataError(str(e)) from e
    if paths.is_remote(pattern):
        found = paths.glob(pattern)  # gs://: listing on the bucket
    else:
        found = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not found:
        raise DataError(f"{pattern}: no file matches this path/glob")
    return found


# ---------------------------------------------------------------------------------------------- checks
def text_of(record: dict, fields: Sequence[str]) -> str:
    """The document text: the named string fields joined by a blank line (missing/empty ones skipped)."""
    parts = [record[f] for f in fields if isinstance(record.get(f), str) and record[f]]
    return parts[0] if len(parts) == 1 else "\n\n".join(parts)


def text_check(fields: Sequence[str]) -> Callable[[Any, str, DataReport], bool]:
    """A record check for pretraining text: an object holding at least one of `fields` as a non-empty string."""
    fields = tuple(fields)

    def check(record: Any, where: str, report: DataReport) -> bool:
        if not isinstance(record, dict):
            report.add(E.BAD_RECORD, where, f"expected a JSON object, got {type(record).__name__}")
            return False
        present = [f for f in fields if f in record and record[f] is not None]
        if not present:
            report.add(E.MISSING_FIELD, where, f"none of the text field(s) {list(fields)} is present "
                                               f"(record has {sorted(record)[:8]})")
            return False
        bad = [f for f in present if not isinstance(record[f], str)]
        if bad:
            report.add(E.MISSING_FIELD, where, f"text field(s) {bad} must be strings, got "
                                               f"{[type(record[f]).__name__ for f in bad]}")
            return False
        if not any(record[f].strip() for f in present):
            report.add(E.EMPTY_TEXT, where, f"text field(s) {present} are empty")
            return False
        return True

    return check


# ---------------------------------------------------------------------------------------------- files
def _read_bytes(path: str):
    """The file's (decompressed) bytes: a read-only mmap for plain files, bytes for .gz/.zst. A compressed
    file cut short or corrupt (an interrupted download) raises DamagedFile naming it."""
    lower = path.lower()
    try:
        if paths.is_remote(path):  # object storage: the whole object, read once (mmap needs a local file)
            raw = paths.resolve(path).read_bytes()
            if lower.endswith(".gz"):
                return gzip.decompress(raw)
            if lower.endswith((".zst", ".zstd")):
                return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
            return raw
        if lower.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        if lower.endswith((".zst", ".zstd")):
            with open(path, "rb") as f:
                return zstandard.ZstdDecompressor().stream_reader(f).read()
    except (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError) as e:
        raise DamagedFile(f"{path}: {E.DAMAGED_FILE}: the compressed file is cut short or corrupt ({e}); "
                          f"download it again") from e
    if os.path.getsize(path) == 0:
        return b""
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _decode_json(raw: bytes, where: str, report: DataReport):
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        report.add(E.NOT_UTF8, where, f"invalid UTF-8 at byte {e.start} of the line ({raw[e.start:e.start + 4]!r})")
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        report.add(E.MALFORMED_JSON, where, f"not valid JSON ({e.msg} at column {e.colno})")
        return None


class _JsonlFile:
    kind = "jsonl"

    def __init__(self, path: str):
        self.path = path
        self._buf = None

    @property
    def buf(self):
        if self._buf is None:
            self._buf = _read_bytes(self.path)
        return self._buf

    def __getstate__(self):
        return {"path": self.path, "text_fields": getattr(self, "text_fields", ("text",))}

    def __setstate__(self, state):
        self.path, self._buf, self.text_fields = state["path"], None, state["text_fields"]

    def scan(self, check, report: DataReport, keep: list):
        buf = self.buf
        n = len(buf)
        if n == 0:
            return 0
        data = np.frombuffer(buf, dtype=np.uint8)
        ends = np.flatnonzero(data == 10)
        starts = np.concatenate([[0], ends + 1])
        ends = np.concatenate([ends, [n]])
        records = 0
        for lineno, (s, e) in enumerate(zip(starts.tolist(), ends.tolist()), start=1):
            raw = bytes(buf[s:e])
            if not raw.strip():
                continue  # blank lines (e.g. the final newline) are not records
            where = f"{self.path}:{lineno}"
            obj = _decode_json(raw, where, report)
            records += 1
            if obj is not None and check(obj, where, report):
                keep.append((s, e, lineno))
        return records

    def get(self, loc):
        s, e, lineno = loc
        return json.loads(bytes(self.buf[s:e]).decode("utf-8")), f"{self.path}:{lineno}"


class _ParquetFile:
    kind = "parquet"

    def __init__(self, path: str):
        self.path = path
        self._table = None

    @property
    def table(self):
        if self._table is None:
            try:
                self._table = (pq.read_table(io.BytesIO(paths.resolve(self.path).read_bytes()))
                               if paths.is_remote(self.path) else pq.read_table(self.path, memory_map=True))
            except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses
                raise DataError(f"{self.path}: not a readable Parquet file ({e})") from e
        return self._table

    def __getstate__(self):
        return {"path": self.path, "text_fields": getattr(self, "text_fields", ("text",))}

    def __setstate__(self, state):
        self.path, self._table, self.text_fields = state["path"], None, state["text_fields"]

    def scan(self, check, report: DataReport, keep: list):
        table = self.table
        rows = table.to_pylist()
        for i, row in enumerate(rows):
            where = f"{self.path}:row {i}"
            if check(row, where, report):
                keep.append((i, 0, i))
        return len(rows)

    def get(self, loc):
        i = loc[0]
        return self.table.slice(i, 1).to_pylist()[0], f"{self.path}:row {i}"


class _ArrayRecordFile:
    """ArrayRecord file whose records are UTF-8 JSON objects."""
    kind = "array_record"

    def __init__(self, path: str):
        self.path = path
        self._reader = None

    @property
    def reader(self):
        if self._reader is None:
            # gs:// too: array_record's reader fetches records by byte range itself (docs/cloud_storage.md)
            self._reader = ArrayRecordDataSource([self.path])
        return self._reader

    def __getstate__(self):
        return {"path": self.path, "text_fields": getattr(self, "text_fields", ("text",))}

    def __setstate__(self, state):
        self.path, self._reader, self.text_fields = state["path"], None, state["text_fields"]

    def scan(self, check, report: DataReport, keep: list):
        n = len(self.reader)
        for i in range(n):
            where = f"{self.path}:record {i}"
            obj = _decode_json(self.reader[i], where, report)
            if obj is not None and check(obj, where, report):
                keep.append((i, 0, i))
        return n

    def get(self, loc):
        i = loc[0]
        return json.loads(self.reader[i].decode("utf-8")), f"{self.path}:record {i}"


class _TfdsSplit:
    """A split of a TFDS dataset read with `tfds.data_source` (no TensorFlow); bytes fields become str."""
    kind = "tfds"

    def __init__(self, name: str, split: str, data_dir: str | None):
        self.name, self.split, self.data_dir = name, split, data_dir
        self.path = f"tfds:{name}/{split}"
        self._ds = None

    @property
    def ds(self):
        if self._ds is None:
            import tensorflow_datasets as tfds  # noqa: PLC0415 - slow to import (seconds); needed only for TFDS corpora
            try:
                self._ds = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir)
            except Exception as e:  # tfds raises DatasetNotFoundError, ValueError, ...
                raise DataError(f"{self.path} (data_dir={self.data_dir}): cannot open TFDS dataset ({e})") from e
        return self._ds

    def __getstate__(self):
        return {"name": self.name, "split": self.split, "data_dir": self.data_dir,
                "text_fields": getattr(self, "text_fields", ("text",))}

    def __setstate__(self, state):
        self.__init__(state["name"], state["split"], state["data_dir"])
        self.text_fields = state["text_fields"]

    @staticmethod
    def _as_record(example: dict, where: str, report: DataReport | None):
        out = {}
        for k, v in example.items():
            if isinstance(v, (bytes, np.bytes_)):
                try:
                    v = bytes(v).decode("utf-8")
                except UnicodeDecodeError as e:
                    if report is not None:
                        report.add(E.NOT_UTF8, where, f"field {k!r}: invalid UTF-8 at byte {e.start}")
                    return None
            out[k] = v
        return out

    def scan(self, check, report: DataReport, keep: list):
        n = len(self.ds)
        for i in range(n):
            where = f"{self.path}:{i}"
            rec = self._as_record(self.ds[i], where, report)
            if rec is not None and check(rec, where, report):
                keep.append((i, 0, i))
        return n

    def get(self, loc):
        i = loc[0]
        where = f"{self.path}:{i}"
        return self._as_record(self.ds[i], where, None), where


class _ArrowFile(_ParquetFile):
    """One Arrow (IPC stream) file of a `datasets` save_to_disk directory; rows as in Parquet."""
    kind = "arrow"

    @property
    def table(self):
        if self._table is None:
            try:
                with pa.ipc.open_stream(io.BytesIO(paths.resolve(self.path).read_bytes())) as reader:
                    self._table = reader.read_all()
            except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses
                raise DataError(f"{self.path}: not a readable Arrow stream file ({e})") from e
        return self._table


def is_hf_disk(path: str) -> bool:
    """A directory written by `datasets`' save_to_disk (a Dataset or a DatasetDict)."""
    if any(c in path for c in "*?["):
        return False
    d = paths.resolve(path)
    return d.is_dir() and ((d / HF_DISK_STATE).exists() or (d / HF_DISK_DICT).exists())


def hf_disk_files(path: str, split: str) -> list[str]:
    """The Arrow files of a save_to_disk directory (a DatasetDict: those of `split`), in shard order."""
    d = paths.resolve(path)
    if (d / HF_DISK_DICT).exists():
        splits = json.loads((d / HF_DISK_DICT).read_text()).get("splits", [])
        if split not in splits:
            raise DataError(f"{path}: the saved DatasetDict has splits {splits}, not {split!r}; set split=")
        d = d / split
    try:
        state = json.loads((d / HF_DISK_STATE).read_text())
        names = [f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{d}: not a datasets save_to_disk directory ({HF_DISK_STATE} unreadable: {e})") from e
    return [str(d / n) for n in names]


def _open_files(cfg: SourceConfig) -> list:
    if cfg.format == "tfds":
        return [_TfdsSplit(cfg.path, cfg.split, cfg.data_dir)]
    if cfg.format == "hf_disk" or (cfg.format == "auto" and is_hf_disk(cfg.path)):
        return [_ArrowFile(p) for p in hf_disk_files(cfg.path, cfg.split)]
    files = []
    for path in expand_paths(cfg.path):
        fmt = detect_format(path) if cfg.format == "auto" else cfg.format
        if fmt in SOURCE_FORMATS:
            raise DataError(f"{path}: format {fmt!r} is read by corpus preparation only; run "
                            f"mellama-prepare-corpus and train with data.prepared_dir")
        files.append({"jsonl": _JsonlFile, "parquet": _ParquetFile, "array_record": _ArrayRecordFile}[fmt](path))
    return files


# ---------------------------------------------------------------------------------------------- sources
def heldout_mask(names: Sequence[str], locs: np.ndarray, fraction: float) -> np.ndarray:
    """Deterministic held-out membership of records by (file base name, line): stable across machines.

    A positive fraction of a small source can select nothing (3 long articles at 0.2, 120 instructions at
    0.01), and held-out evaluation then has no data: with at least two records, the record of the smallest
    hash is held out then (the one a larger fraction would pick first), so the defaults work on small data.
    """
    if fraction <= 0:
        return np.zeros(len(locs), bool)
    hashes = np.asarray([zlib.crc32(f"{os.path.basename(names[f])}:{line}".encode())
                         for f, line in zip(locs[:, 0].tolist(), locs[:, 3].tolist())], np.int64)
    mask = hashes < int(fraction * 2 ** 32)
    if not mask.any() and len(hashes) >= 2:
        mask[np.argmin(hashes)] = True
    return mask


class RecordSource:
    """The valid records of a list of sources, in file order. Elements: (record dict, "file:line")."""

    def __init__(self, files: list, locs: np.ndarray, report: DataReport):
        self.files = files
        self.locs = locs  # int64 [N, 4]: file index, start, end, line/row/record number
        self.report = report

    @classmethod
    def build(cls, configs: Sequence[SourceConfig], check_for: Callable[[SourceConfig], Callable],
              report: DataReport) -> "RecordSource":
        """Index the valid records of `configs`; `check_for(cfg)` gives the record check of each source."""
        files, locs = [], []
        for cfg in configs:
            check = check_for(cfg)
            for fobj in _open_files(cfg):
                fobj.text_fields = cfg.text_fields
                fobj.record_format = cfg.record_format
                keep: list = []
                n_records = fobj.scan(check, report, keep)
                if n_records == 0:
                    report.add(E.EMPTY_FILE, fobj.path, "the file holds no records")
                fi = len(files)
                files.append(fobj)
                locs.extend((fi, s, e, line) for s, e, line in keep)
        arr = np.asarray(locs, dtype=np.int64).reshape(-1, 4)
        return cls(files, arr, report)

    def subset(self, mask: np.ndarray) -> "RecordSource":
        return RecordSource(self.files, self.locs[mask], self.report)

    def split_heldout(self, fraction: float) -> tuple["RecordSource", "RecordSource"]:
        mask = heldout_mask([f.path for f in self.files], self.locs, fraction)
        return self.subset(~mask), self.subset(mask)

    def __len__(self) -> int:
        return len(self.locs)

    def __getitem__(self, index: int):
        """(record, where, text_fields of the record's source)."""
        f, s, e, line = self.locs[index].tolist()
        fobj = self.files[f]
        record, where = fobj.get((s, e, line))
        return record, where, fobj.text_fields

    def _getitems(self, indices: Sequence[int]) -> list:
        # grain's batched-read protocol: one call (and one metrics record) per block of documents.
        return [self[int(i)] for i in indices]

    def signature(self) -> tuple:
        return tuple((f.path, os.path.getmtime(f.path) if os.path.exists(f.path) else 0) for f in self.files)

    def __repr__(self) -> str:
        return f"RecordSource({len(self)} records in {len(self.files)} file(s))"


class PreparedSource:
    """Token documents of a corpus prepared by `prepare.prepare_corpus` (a TFDS ArrayRecord dataset).

    Elements: ({"tokens": int32 array}, where). Reads through `tfds.data_source` (no TensorFlow), from local
    disk or gs:// alike: TFDS lists the dataset through etils.epath and array_record's reader fetches each
    document by byte range (group_size 1: one chunk per document). `where` does not name the directory, so
    a corpus and its copy elsewhere give the same elements.
    """

    def __init__(self, data_dir: str, component: str, split: str):
        self.data_dir, self.component, self.split = data_dir, component, split
        self.name = f"mellama_corpus/{component}"
        self._ds = None
        _ = self.ds  # open now so a missing dataset is reported at construction

    @property
    def ds(self):
        if self._ds is None:
            import tensorflow_datasets as tfds  # noqa: PLC0415 - slow to import (seconds); needed only for TFDS corpora
            try:
                self._ds = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir)
            except Exception as e:  # DatasetNotFoundError, ValueError for an unknown split, ...
                raise DataError(f"{self.data_dir}: no prepared split {self.name}/{self.split} "
                                f"(run mellama-prepare-corpus with this data config first): {e}") from e
        return self._ds

    def __getstate__(self):
        return {"data_dir": self.data_dir, "component": self.component, "split": self.split}

    def __setstate__(self, state):
        self.data_dir, self.component, self.split = state["data_dir"], state["component"], state["split"]
        self.name, self._ds = f"mellama_corpus/{self.component}", None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        return self.ds[index], f"tfds:{self.name}/{self.split}:{index}"

    def _getitems(self, indices: Sequence[int]) -> list:
        indices = [int(i) for i in indices]
        examples = self.ds.__getitems__(indices)  # ArrayRecord batched read
        return [(ex, f"tfds:{self.name}/{self.split}:{i}") for ex, i in zip(examples, indices)]

    def __repr__(self) -> str:
        return f"PreparedSource({self.name}/{self.split}, {len(self)} documents)"
