"""Corpus preparation: raw sources → token documents in ArrayRecord shards, laid out as a TFDS dataset.

    prepare_corpus(data_cfg, tokenizer, out_dir, workers=16)               # local worker processes
    prepare_corpus(data_cfg, tokenizer, out_dir, runner="beam",            # Apache Beam ([beam] extra)
                   beam_options=["--runner=DataflowRunner", ...])

Work is cut into units — byte ranges of plain JSONL files (aligned to lines), whole compressed JSONL,
Parquet and ArrayRecord files — that workers read, validate (same checks and report as the loader),
assign to the held-out split (same file:line hash as the loader), and tokenize. Each component becomes
the TFDS dataset `mellama_corpus/<component>` (tfds_builder.py) with splits train / heldout.

Output is complete only when `corpus_report.json` exists (written last, atomically): per component and
split the document and token counts, the tokenizer's sha256 (the loader refuses a mismatch), and the
bad-input report. A failed run leaves no report, so the loader will not read a half-written corpus.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
import zlib
from typing import Any, Iterator, Sequence

import numpy as np

from mellama_jax import paths
from mellama_jax.data import errors as E
from mellama_jax.data.config import DataConfig
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.sources import (_decode_json, _read_bytes, detect_format, expand_paths, text_check,
                                      text_of)
from mellama_jax.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CORPUS_REPORT = "corpus_report.json"
UNIT_BYTES = 64 << 20  # plain JSONL files are cut into ~64 MiB units


@dataclasses.dataclass(frozen=True)
class Unit:
    """A piece of one source file for one worker task."""
    component: str
    path: str
    fmt: str
    text_fields: tuple[str, ...]
    split_rule: str  # "train" / "heldout": whole file in that split; "hash": by heldout_fraction
    heldout_fraction: float
    start: int = 0  # byte range for plain JSONL, aligned to line starts
    end: int = -1
    first_line: int = 1  # line number of the first line at `start`


def _held_out(path: str, line: int, fraction: float) -> bool:
    # Must agree with sources.heldout_mask (the loader's split of raw sources).
    return zlib.crc32(f"{os.path.basename(path)}:{line}".encode()) < int(fraction * 2 ** 32)


def plan_units(cfg: DataConfig, unit_bytes: int = UNIT_BYTES) -> list[Unit]:
    units = []
    for comp in cfg.components:
        groups = [(s, "hash" if comp.heldout_fraction > 0 else "train") for s in comp.sources]
        groups += [(s, "heldout") for s in comp.heldout_sources]
        for src, rule in groups:
            if src.format == "tfds":
                raise DataError(f"component {comp.name!r}: tfds sources are read directly by the loader; "
                                f"prepare_corpus handles jsonl/parquet/array_record files")
            for path in expand_paths(src.path):
                fmt = detect_format(path) if src.format == "auto" else src.format
                base = dict(component=comp.name, path=path, fmt=fmt, text_fields=src.text_fields,
                            split_rule=rule, heldout_fraction=comp.heldout_fraction)
                plain = fmt == "jsonl" and not path.lower().endswith((".gz", ".zst", ".zstd"))
                size = os.path.getsize(path)
                if plain and size > unit_bytes:
                    for start, end, first_line in _line_aligned_ranges(path, size, unit_bytes):
                        units.append(Unit(**base, start=start, end=end, first_line=first_line))
                else:
                    units.append(Unit(**base))
    return units


def _line_aligned_ranges(path: str, size: int, unit_bytes: int) -> list[tuple[int, int, int]]:
    """(start, end, first line number) ranges of about unit_bytes, each starting at a line start.

    One sequential pass over the file (memory-mapped) counts the lines before each range, so workers
    report exact file:line numbers without rereading what precedes their range.
    """
    import mmap
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


# ------------------------------------------------------------------------------------------------ workers
def _records(unit: Unit, report: DataReport) -> Iterator[tuple[int, Any, str]]:
    """(line/row number, raw JSON bytes or a parsed record, where) of the unit's records."""
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
                where = f"{unit.path}:{line}"
                yield line, raw, where
            line += 1
            pos = stop + 1
    elif unit.fmt == "parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(unit.path)
        for i, row in enumerate(table.to_pylist()):
            yield i, row, f"{unit.path}:row {i}"
    elif unit.fmt == "array_record":
        from array_record.python.array_record_data_source import ArrayRecordDataSource
        ds = ArrayRecordDataSource([unit.path])
        for i in range(len(ds)):
            yield i, ds[i], f"{unit.path}:record {i}"
    else:
        raise DataError(f"{unit.path}: unsupported format {unit.fmt!r} for corpus preparation")


def process_unit(unit: Unit, tokenizer: Tokenizer, split: str, strict: bool) -> dict:
    """Tokenize the unit's documents that belong to `split`. Returns examples, counts and the report."""
    report = DataReport(strict=strict)
    check = text_check(unit.text_fields)
    examples: list[tuple[str, np.ndarray]] = []
    tokens = 0
    records = 0
    for line, raw, where in _records(unit, report):
        records += 1
        if unit.split_rule == "hash":
            in_split = "heldout" if _held_out(unit.path, line, unit.heldout_fraction) else "train"
        else:
            in_split = unit.split_rule
        if in_split != split:
            continue  # the record (good or bad) is handled by the pass over its own split
        obj = _decode_json(raw, where, report) if isinstance(raw, (bytes, bytearray)) else raw
        if obj is None or not check(obj, where, report):
            continue
        ids = np.asarray(tokenizer.encode(text_of(obj, unit.text_fields), bos=False), np.int32)
        tokens += len(ids)
        examples.append((f"{unit.path}:{line}", {"tokens": ids}))
    # An empty file is reported once: by the pass over the split its records would have gone to.
    home_split = unit.split_rule if unit.split_rule != "hash" else "train"
    if records == 0 and unit.start == 0 and split == home_split:
        report.add(E.EMPTY_FILE, unit.path, "the file holds no records")
    return {"examples": examples, "tokens": tokens, "documents": len(examples), "report": report.to_dict()}


_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _run_unit(args) -> dict:
    unit, split, strict = args
    return process_unit(unit, _WORKER_TOKENIZER, split, strict)


# ------------------------------------------------------------------------------------------------ plans
class ComponentPlan:
    """Feeds one component's units to the TFDS builder, locally or with Beam, and tallies counts."""

    def __init__(self, name: str, units: Sequence[Unit], tokenizer: Tokenizer, strict: bool, pool,
                 runner: str, stats_dir: str, progress):
        self.name, self.units, self.tokenizer, self.strict = name, list(units), tokenizer, strict
        self.pool, self.runner, self.stats_dir, self.progress = pool, runner, stats_dir, progress
        self.counts = {s: {"documents": 0, "tokens": 0} for s in ("train", "heldout")}
        # A held-out split exists only when the config asks for one (TFDS cannot write an empty split).
        wants_heldout = any(u.split_rule in ("hash", "heldout") for u in self.units)
        self.splits = ("train", "heldout") if wants_heldout else ("train",)
        self.report = DataReport(strict=strict)

    def _tally(self, split: str, result: dict) -> None:
        self.counts[split]["documents"] += result["documents"]
        self.counts[split]["tokens"] += result["tokens"]
        self.report.merge(DataReport.from_dict(result["report"]))
        self.progress(self.name, split, result)

    def generate(self, split: str):
        if self.runner == "beam":
            return self._beam(split)
        return self._local(split)

    def _local(self, split: str):
        tasks = [(u, split, self.strict) for u in self.units]
        if self.pool is None:
            _init_worker(self.tokenizer)
            results = map(_run_unit, tasks)
        else:
            results = self.pool.imap_unordered(_run_unit, tasks)
        for result in results:
            self._tally(split, result)
            yield from result["examples"]

    def _beam(self, split: str):
        import apache_beam as beam  # optional dependency: pip install mellama_jax[beam]
        tokenizer, strict, stats_dir, name = self.tokenizer, self.strict, self.stats_dir, self.name

        def run(unit: Unit):
            result = process_unit(unit, tokenizer, split, strict)
            # Per-unit counts go to small JSON files next to the output; the driver sums them afterwards
            # (works on any filesystem etils.epath supports, e.g. gs:// on Dataflow).
            from etils import epath
            key = f"{name}-{split}-{zlib.crc32(f'{unit.path}:{unit.start}'.encode()):08x}.json"
            epath.Path(stats_dir, key).write_text(json.dumps(
                {k: result[k] for k in ("documents", "tokens", "report")}))
            return result["examples"]

        return (beam.Create(self.units) | f"Tokenize{name.capitalize()}{split.capitalize()}" >> beam.FlatMap(run))

    def collect_beam_stats(self) -> None:
        from etils import epath
        for path in sorted(epath.Path(self.stats_dir).glob(f"{self.name}-*.json")):
            split = path.name.split("-")[1]
            result = json.loads(path.read_text())
            self.counts[split]["documents"] += result["documents"]
            self.counts[split]["tokens"] += result["tokens"]
            self.report.merge(DataReport.from_dict(result["report"]))


# ------------------------------------------------------------------------------------------------ driver
def prepare_corpus(data_cfg: Any, tokenizer: Tokenizer, out_dir: str, *, workers: int = 0, runner: str = "local",
                   beam_options: Sequence[str] = (), overwrite: bool = False, unit_bytes: int = UNIT_BYTES,
                   show_progress: bool = True) -> dict:
    """Tokenize every component of `data_cfg` into `out_dir`; returns the corpus report (also saved)."""
    if paths.is_remote(out_dir):
        raise DataError(f"out_dir={out_dir}: {paths.ARRAY_RECORD_LOCAL_ONLY}; prepare to local disk and copy or "
                        f"mount it (sources may stay on gs://)")
    try:
        out_dir = paths.as_str(out_dir, what="out_dir")
    except paths.PathSchemeError as e:
        raise DataError(str(e)) from e
    import tensorflow_datasets as tfds
    from tqdm.auto import tqdm

    from mellama_jax.data.tfds_builder import MellamaCorpus

    report = DataReport(strict=bool(dict(data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else
                                         (dataclasses.asdict(data_cfg) if isinstance(data_cfg, DataConfig)
                                          else data_cfg)).get("strict", False)))
    cfg = DataConfig.from_config(data_cfg, report)
    if runner not in ("local", "beam"):
        raise DataError(f"runner={runner!r}: expected 'local' or 'beam'")
    if runner == "beam" and importlib.util.find_spec("apache_beam") is None:
        raise DataError("runner='beam' needs Apache Beam: pip install -e '.[beam]'")
    report_path = os.path.join(out_dir, CORPUS_REPORT)
    if os.path.exists(report_path) or os.path.isdir(os.path.join(out_dir, "mellama_corpus")):
        if not overwrite:
            raise DataError(f"{out_dir}: already holds a prepared corpus; pass overwrite=True (--overwrite)")
        if os.path.exists(report_path):
            os.remove(report_path)  # first: the directory stops looking complete
        shutil.rmtree(os.path.join(out_dir, "mellama_corpus"), ignore_errors=True)
    os.makedirs(out_dir, exist_ok=True)
    units = plan_units(cfg, unit_bytes)
    workers = workers or (os.cpu_count() or 1)
    stats_dir = os.path.join(out_dir, "_unit_stats")
    os.makedirs(stats_dir, exist_ok=True)

    bar = tqdm(total=2 * len(units), desc="tokenizing", unit="unit", disable=not show_progress)
    tokens_by_component: dict[str, int] = {c.name: 0 for c in cfg.components}

    def progress(name: str, split: str, result: dict) -> None:
        tokens_by_component[name] += result["tokens"]
        bar.update(1)
        bar.set_postfix({k: f"{v / 1e6:.2f}M" for k, v in tokens_by_component.items()}, refresh=False)

    tfds.disable_progress_bar()  # our bar shows units and tokens per domain; TFDS's per-split bars are noise
    download_config = None
    if runner == "beam":
        try:
            from apache_beam.options.pipeline_options import PipelineOptions
        except ImportError as e:
            raise DataError("runner='beam' needs Apache Beam: pip install -e '.[beam]'") from e
        download_config = tfds.download.DownloadConfig(beam_options=PipelineOptions(list(beam_options)))
    started = time.time()
    components = {}
    pool = None
    if runner == "local" and workers > 1:
        # spawn, not fork: the caller may hold JAX or grain threads. One pool serves every component.
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(tokenizer,))
    try:
        for comp in cfg.components:
            plan = ComponentPlan(comp.name, [u for u in units if u.component == comp.name], tokenizer, cfg.strict,
                                 pool, runner, stats_dir, progress)
            builder = MellamaCorpus(plan=plan, data_dir=out_dir, file_format="array_record",
                                    config=tfds.core.BuilderConfig(name=comp.name, version=tfds.core.Version("1.0.0")))
            try:
                builder.download_and_prepare(download_config=download_config)
            except AssertionError as e:  # TFDS's writer asserts on a split without examples
                if "No examples were yielded" in str(e):
                    raise DataError(f"component {comp.name!r}: a split has no documents ({e}); check its sources "
                                    f"and heldout_fraction / heldout_sources") from e
                raise
            if runner == "beam":
                plan.collect_beam_stats()
            report.merge(plan.report)
            components[comp.name] = plan.counts
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    shutil.rmtree(stats_dir, ignore_errors=True)
    total = sum(c[s]["tokens"] for c in components.values() for s in c)
    train_total = max(1, sum(c["train"]["tokens"] for c in components.values()))
    result = {
        "tokenizer_sha256": tokenizer.sha256,
        "vocab_size": tokenizer.vocab_size,
        "components": components,
        "corpus_token_shares": {n: c["train"]["tokens"] / train_total for n, c in components.items()},
        "total_tokens": total,
        "bad_input": report.to_dict(),
        "skipped_components": list(cfg.skipped),
        "runner": runner,
        "seconds": round(time.time() - started, 2),
    }
    tmp = report_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, report_path)
    for name, counts in components.items():
        log.info("prepared %s: train %d docs / %d tokens, heldout %d docs / %d tokens", name,
                 counts["train"]["documents"], counts["train"]["tokens"], counts["heldout"]["documents"],
                 counts["heldout"]["tokens"])
    if report.total:
        log.warning("corpus preparation: %s", report.summary())
    return result
