"""Corpus preparation: raw sources → token documents in ArrayRecord shards, laid out as a TFDS dataset.

    prepare_corpus(data_cfg, tokenizer, out_dir, workers=16)               # local worker processes
    prepare_corpus(data_cfg, tokenizer, out_dir, runner="beam",            # Apache Beam ([beam] extra)
                   beam_options=["--runner=DataflowRunner", ...])

Sources are JSONL / Parquet / ArrayRecord files or the sources' own formats (PubMed XML, PMC JATS, MIMIC
notes CSV, MIMIC-CXR reports; data/readers). Work is cut into units (units.py). When the config asks for
`dedup` or `decontaminate`, a screening pass (screen.py) first reads every unit and decides which documents
to remove; then workers read each unit again, validate (same checks and report as the loader), assign
documents to the held-out split (same file:line hash as the loader), skip / trim the screened ones and
tokenize. Each component becomes the TFDS dataset `mellama_corpus/<component>` (tfds_builder.py).

Output is written into `<out_dir>/.partial/` and moved into place only when every component is done
(corpus_output.py; a gs:// out_dir is staged on local disk and uploaded component by component);
`corpus_report.json` and then a COMMIT marker (written last) make it complete. The report holds per component and split the document and token
counts, per source file the records read and dropped and the metadata its documents carry, the tokenizer's
sha256 (the loader refuses a mismatch), the bad-input report, and what dedup / decontamination removed. A
failed run leaves nothing behind; an `out_dir` holding anything but a prepared corpus is refused.
"""
from __future__ import annotations

import collections
import gzip
import importlib.util
import json
import logging
import multiprocessing as mp
import os
import re
import time
import zlib
from typing import Any, Sequence

import numpy as np
from etils import epath
from tqdm.auto import tqdm

from mellama_jax import paths
from mellama_jax.data import corpus_output, readers, shards_beam
from mellama_jax.data import errors as E
from mellama_jax.data.config import DataConfig
from mellama_jax.data.corpus_output import CORPUS_REPORT, DOCUMENTS_DIR
from mellama_jax.data.decontam import TestIndex, remove_spans
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.screen import Decisions, decide, scan_unit
from mellama_jax.data.tfds_builder import MellamaCorpus, write_info
from mellama_jax.data.tokenizer import Tokenizer
from mellama_jax.data.units import UNIT_BYTES, Unit, iter_documents, plan_units, report_key

log = logging.getLogger(__name__)


__all__ = ["prepare_corpus", "process_unit", "plan_units", "Unit", "UNIT_BYTES", "CORPUS_REPORT"]


# ------------------------------------------------------------------------------------------------ workers
def process_unit(unit: Unit, tokenizer: Tokenizer, split: str, strict: bool, remove: dict | None = None,
                 trim: set | None = None, index: TestIndex | None = None, manifest_dir: str | None = None) -> dict:
    """Tokenize the unit's documents that belong to `split`, leaving out `remove` (ordinal → reason) and
    cutting test-set spans from `trim` (ordinals). Returns examples, counts, per-file stats and the report.
    With `manifest_dir`, the metadata of the kept documents of a source format that has any (PMID, note id,
    subject / admission ids, category, dates) is written there as one gzipped JSONL file per unit and split."""
    report = DataReport(strict=strict)
    remove, trim = remove or {}, trim or set()
    tally: collections.Counter = collections.Counter()
    examples: list[tuple[str, dict]] = []
    tokens = 0
    removed: collections.Counter = collections.Counter()
    files: dict[str, dict] = {}
    fields = readers.METADATA.get(unit.fmt, ())
    manifest: list[str] = []
    for doc in iter_documents(unit, report, tally, split):
        if doc.ordinal in remove:
            removed[remove[doc.ordinal]] += 1
            continue
        text = doc.text
        if doc.ordinal in trim:
            text = remove_spans(text, index.find(text)[1])
            removed["trimmed"] += 1
            if not text.strip():
                removed["trimmed_to_empty"] += 1
                continue
        ids = np.asarray(tokenizer.encode(text, bos=False), np.int32)
        tokens += len(ids)
        # The key only orders the shards; the ordinal makes it unique when one line holds several records.
        examples.append((f"{doc.where}#{doc.ordinal}", {"tokens": ids, "source": doc.where}))
        if fields:
            manifest.append(json.dumps({"source": doc.where, **{f: doc.record.get(f) for f in fields}},
                                       ensure_ascii=False))
        st = files.setdefault(report_key(unit, doc.file), {"documents": 0, "metadata": collections.Counter(),
                                         "category": collections.Counter()})
        st["documents"] += 1
        for field in fields:
            if doc.record.get(field) is not None:
                st["metadata"][field] += 1
        if doc.record.get("category") is not None and unit.fmt == "mimic_notes_csv":
            st["category"][doc.record["category"]] += 1
    if manifest and manifest_dir is not None:
        name = f"{unit.component}-{split}-{zlib.crc32(f'{unit.path}:{unit.start}'.encode()):08x}.jsonl.gz"
        epath.Path(manifest_dir, name).write_bytes(gzip.compress(("\n".join(manifest) + "\n").encode()))
    # An empty file and the records readers drop are reported once: by the pass over the split the records
    # would have gone to.
    home_split = unit.split_rule if unit.split_rule != "hash" else "train"
    dropped = {k: v for k, v in tally.items() if k != "records"}
    if split == home_split:
        if tally["records"] == 0 and unit.start == 0 and not dropped:
            report.add(E.EMPTY_FILE, unit.path, "the file holds no records")
        if dropped:
            files.setdefault(report_key(unit, unit.path), {"documents": 0, "metadata": collections.Counter(),
                                         "category": collections.Counter()})["dropped"] = dropped
    return {"examples": examples, "tokens": tokens, "documents": len(examples), "removed": dict(removed),
            "files": {p: {k: dict(v) if isinstance(v, collections.Counter) else v for k, v in st.items()}
                      for p, st in files.items()},
            "report": report.to_dict()}


_WORKER: dict = {}


def _init_worker(tokenizer: Tokenizer, index: TestIndex | None = None) -> None:
    _WORKER.update(tokenizer=tokenizer, index=index)


def _run_unit(args) -> dict:
    unit, split, strict, remove, trim, manifest_dir = args
    return process_unit(unit, _WORKER["tokenizer"], split, strict, remove, trim, _WORKER["index"], manifest_dir)


def _scan(args) -> list:
    unit, strict, dedup = args
    return scan_unit(unit, strict, dedup, _WORKER["index"])


# ------------------------------------------------------------------------------------------------ plans
class ComponentPlan:
    """Feeds one component's units to the TFDS builder, locally or with Beam, and tallies counts."""

    def __init__(self, name: str, units: Sequence[tuple[int, Unit]], tokenizer: Tokenizer, strict: bool, pool,
                 runner: str, stats_dir: str, progress, decisions: Decisions, index: TestIndex | None,
                 manifest_dir: str):
        self.name, self.units, self.tokenizer, self.strict = name, list(units), tokenizer, strict
        self.pool, self.runner, self.stats_dir, self.progress = pool, runner, stats_dir, progress
        self.decisions, self.index, self.manifest_dir = decisions, index, manifest_dir
        self.counts = {s: {"documents": 0, "tokens": 0} for s in ("train", "heldout")}
        self.removed = {s: collections.Counter() for s in ("train", "heldout")}
        self.files: dict[str, dict] = {}
        # A held-out split exists only when the config asks for one (TFDS cannot write an empty split).
        wants_heldout = any(u.split_rule in ("hash", "heldout") for _, u in self.units)
        self.splits = ("train", "heldout") if wants_heldout else ("train",)
        self.report = DataReport(strict=strict)

    def _tally(self, split: str, result: dict, progress: bool = True) -> None:
        self.counts[split]["documents"] += result["documents"]
        self.counts[split]["tokens"] += result["tokens"]
        self.removed[split].update(result["removed"])
        for path, st in result["files"].items():
            mine = self.files.setdefault(path, {"documents": {}, "metadata": collections.Counter(),
                                                "category": collections.Counter(), "dropped": collections.Counter()})
            mine["documents"][split] = mine["documents"].get(split, 0) + st["documents"]
            for key in ("metadata", "category", "dropped"):
                mine[key].update(st.get(key, {}))
        self.report.merge(DataReport.from_dict(result["report"]))
        if progress:
            self.progress(self.name, split, result)

    def _task(self, i: int, unit: Unit, split: str):
        return (unit, split, self.strict, self.decisions.remove.get(i), self.decisions.trim.get(i), self.manifest_dir)

    def generate(self, split: str):
        tasks = [self._task(i, u, split) for i, u in self.units]
        if self.pool is None:
            _init_worker(self.tokenizer, self.index)
            results = map(_run_unit, tasks)
        else:
            results = self.pool.imap_unordered(_run_unit, tasks)
        for result in results:
            self._tally(split, result)
            yield from result["examples"]

    def shard_count(self, split: str) -> int:
        return shards_beam.shard_count([u.split_rule for _, u in self.units], split)

    def beam_tasks(self, split: str) -> list:
        return [self._task(i, u, split) for i, u in self.units]

    def beam_tokenizer(self, split: str):
        """The per-unit step the Beam workers run (shards_beam.py writes what it returns into the shards)."""
        import apache_beam as beam  # noqa: PLC0415 - optional dependency: pip install mellama_jax[beam]
        tokenizer, strict, stats_dir, name, index = self.tokenizer, self.strict, self.stats_dir, self.name, self.index

        # Beam counters (the runner's UI follows a long job): what was written and what was left out, and why
        metrics = {k: beam.metrics.Metrics.counter(shards_beam.NAMESPACE, k)
                   for k in ("documents_written", "tokens_written", "removed_duplicate", "removed_contaminated",
                             "trimmed", "bad_input")}

        def run(task):
            unit = task[0]
            result = process_unit(unit, tokenizer, split, strict, task[3], task[4], index, task[5])
            metrics["documents_written"].inc(result["documents"])
            metrics["tokens_written"].inc(result["tokens"])
            for reason in ("duplicate", "contaminated", "trimmed"):
                metrics["removed_" + reason if reason != "trimmed" else "trimmed"].inc(result["removed"].get(reason, 0))
            metrics["bad_input"].inc(sum(result["report"]["counts"].values()))
            # Per-unit counts go to small JSON files in the work directory (local or gs://, through etils.epath);
            # the driver sums them afterwards. A retried unit overwrites its own file.
            key = f"{name}-{split}-{zlib.crc32(f'{unit.path}:{unit.start}'.encode()):08x}.json"
            epath.Path(stats_dir, key).write_text(json.dumps({k: v for k, v in result.items() if k != "examples"}))
            return result["examples"]

        return run

    def collect_beam_stats(self) -> None:
        for path in sorted(epath.Path(self.stats_dir).glob(f"{self.name}-*.json")):
            self._tally(path.name.split("-")[1], json.loads(path.read_text()), progress=False)

    def source_report(self) -> dict:
        return {path: {"documents": st["documents"], "dropped": dict(st["dropped"]),
                       "metadata_fields": dict(st["metadata"]),
                       **({"category": dict(sorted(st["category"].items()))} if st["category"] else {})}
                for path, st in sorted(self.files.items())}


# ------------------------------------------------------------------------------------------------ screening
def _screen(cfg: DataConfig, units: list[Unit], index: TestIndex | None, pool, runner: str, beam_options,
            stats_dir: str, show_progress: bool) -> Decisions:
    if cfg.dedup is None and cfg.decontaminate is None:
        return Decisions()
    tasks = [(u, cfg.strict, cfg.dedup) for u in units]
    if runner == "beam":
        # optional dependency (the [beam] extra): exact and near dedup as GroupByKey stages on the workers
        from mellama_jax.data import screen_beam  # noqa: PLC0415
        return screen_beam.screen(cfg, units, index, beam_options, stats_dir)
    if pool is None:
        _init_worker(None, index)
        results = map(_scan, tasks)
    else:
        results = pool.imap(_scan, tasks)  # in order: decisions follow the canonical document order
    scans = list(tqdm(results, total=len(tasks), desc="screening", unit="unit", disable=not show_progress))
    return decide(units, scans, cfg.dedup, cfg.decontaminate, index)


# ------------------------------------------------------------------------------------------------ driver
def prepare_corpus(data_cfg: Any, tokenizer: Tokenizer, out_dir: str, *, workers: int = 0, runner: str = "local",
                   beam_options: Sequence[str] = (), overwrite: bool = False, unit_bytes: int = UNIT_BYTES,
                   show_progress: bool = True, staging_dir: str | None = None) -> dict:
    """Tokenize every component of `data_cfg` into `out_dir` (local or gs://); returns the corpus report (also
    saved). With a gs:// out_dir, shards are staged under `staging_dir` (default: the system's temporary
    directory) and uploaded component by component (corpus_output.py)."""
    try:
        out_dir = paths.as_str(out_dir, what="out_dir")
    except paths.PathSchemeError as e:
        raise DataError(str(e)) from e
    if runner not in ("local", "beam"):
        raise DataError(f"runner={runner!r}: expected 'local' or 'beam'")
    if runner == "beam" and importlib.util.find_spec("apache_beam") is None:
        raise DataError("runner='beam' needs Apache Beam: pip install -e '.[beam]'")
    if isinstance(data_cfg, DataConfig):
        strict = data_cfg.strict
    else:
        strict = bool(dict(data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else data_cfg).get("strict", False))
    report = DataReport(strict=strict)  # built before the config: it records the config's bad weights
    cfg = DataConfig.from_config(data_cfg, report)
    units = plan_units(cfg, unit_bytes)  # bad paths / formats fail here, before anything is written
    index = TestIndex(cfg.decontaminate) if cfg.decontaminate is not None else None
    output = corpus_output.claim(out_dir, overwrite, staging_dir)
    try:
        result = _prepare(cfg, units, index, tokenizer, output, report, workers, runner, beam_options,
                          show_progress)
        output.publish(result)
    except BaseException as e:
        output.abort()
        error = _data_error_of(e) if runner == "beam" else None
        if error is not None:
            raise error from None
        raise
    for name, counts in result["components"].items():
        log.info("prepared %s: train %d docs / %d tokens, heldout %d docs / %d tokens", name,
                 counts["train"]["documents"], counts["train"]["tokens"], counts["heldout"]["documents"],
                 counts["heldout"]["tokens"])
    if report.total:
        log.warning("corpus preparation: %s", report.summary())
    return result


_BEAM_DATA_ERROR = re.compile(r"mellama_jax\.data\.errors\.(?:DataError|DamagedFile): (.+)")
_BEAM_STEP = re.compile(r" \[while running '[^']*'\]")


def _data_error_of(e: BaseException) -> DataError | None:
    """The user's input problem behind a failed Beam pipeline, as one DataError: a runner re-raises a worker's
    DataError with its step appended ("[while running 'TokenizeBiomedicalTrain']"), or, from other processes,
    as a RuntimeError holding the worker's traceback text."""
    if isinstance(e, DataError):
        return DataError(_BEAM_STEP.sub("", str(e)).strip())
    found = _BEAM_DATA_ERROR.search(str(e))
    return DataError(_BEAM_STEP.sub("", found.group(1)).strip()) if found else None


def _no_documents(component: str) -> DataError:
    return DataError(f"component {component!r}: a split has no documents; check its sources and heldout_fraction / "
                     f"heldout_sources")


def _beam_shards(plans: list[ComponentPlan], beam_options: Sequence[str], work: str, stats_dir: str,
                 done) -> dict[str, int]:
    """One Beam pipeline tokenizes every component and split; its workers write the shards (shards_beam.py).
    Here: check every shard is written and counted, then write TFDS's metadata, per component."""
    jobs = {(plan.name, split): (plan.shard_count(split), plan.beam_tasks(split), plan.beam_tokenizer(split))
            for plan in plans for split in plan.splits}
    counters = shards_beam.write_shards(jobs, beam_options, work, stats_dir)
    paths.forget_listings(work)
    for plan in plans:
        plan.collect_beam_stats()
        shards = {split: shards_beam.written_shards(work, stats_dir, plan.name, split, plan.shard_count(split))
                  for split in plan.splits}
        for split, lst in shards.items():
            if sum(n for n, _ in lst) != plan.counts[split]["documents"]:
                raise DataError(f"component {plan.name!r} {split}: the shards hold {sum(n for n, _ in lst)} "
                                f"documents, the units counted {plan.counts[split]['documents']}")
            if not lst or not plan.counts[split]["documents"]:
                raise _no_documents(plan.name)
        write_info(work, plan.name, shards)
        done(plan)
    return counters


def _prepare(cfg: DataConfig, units: list[Unit], index: TestIndex | None, tokenizer: Tokenizer, output,
             report: DataReport, workers: int, runner: str, beam_options: Sequence[str], show_progress: bool) -> dict:
    import tensorflow_datasets as tfds  # noqa: PLC0415 - heavy: imported when a corpus is prepared, not with the module


    # No more processes than units: each spawned worker imports the readers and loads the tokenizer, which on a
    # small corpus costs more than the work (`--workers 64` on a few files started 64 processes).
    workers = min(workers or (os.cpu_count() or 1), max(1, len(units)))
    # Beam's workers write into the out_dir's own staging (local or gs://); the local runner stages on this disk.
    work = output.shared_staging if runner == "beam" else output.staging
    stats_dir = paths.join(work, "_unit_stats")
    manifest_dir = paths.join(work, DOCUMENTS_DIR)
    for d in (stats_dir, manifest_dir):
        paths.resolve(d).mkdir(parents=True, exist_ok=True)
    tokens_by_component: dict[str, int] = {c.name: 0 for c in cfg.components}
    tfds.disable_progress_bar()  # our bar shows units and tokens per domain; TFDS's per-split bars are noise
    started = time.time()
    components, sources, removed = {}, {}, {}
    pool = None
    if runner == "local" and workers > 1:
        # spawn, not fork: the caller may hold JAX or grain threads. One pool serves every component.
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(tokenizer, index))
    try:
        decisions = _screen(cfg, units, index, pool, runner, beam_options, stats_dir, show_progress)
        # one pass per split: components without a held-out split have one
        passes = {c.name: 2 if any(u.split_rule != "train" for u in units if u.component == c.name) else 1
                  for c in cfg.components}
        bar = tqdm(total=sum(passes[u.component] for u in units), desc="tokenizing", unit="unit",
                   disable=not show_progress)

        def progress(name: str, split: str, result: dict) -> None:
            tokens_by_component[name] += result["tokens"]
            bar.update(1)
            bar.set_postfix({k: f"{v / 1e6:.2f}M" for k, v in tokens_by_component.items()}, refresh=False)

        def done(plan: ComponentPlan) -> None:
            report.merge(plan.report)
            components[plan.name] = plan.counts
            sources[plan.name] = plan.source_report()
            removed[plan.name] = {s: dict(c) for s, c in plan.removed.items() if c}
            output.component_done(plan.name)

        try:
            plans = [ComponentPlan(comp.name, [(i, u) for i, u in enumerate(units) if u.component == comp.name],
                                   tokenizer, cfg.strict, pool, runner, stats_dir, progress, decisions, index,
                                   manifest_dir) for comp in cfg.components]
            counters = {}
            if runner == "beam":
                counters = {**decisions.counters, **_beam_shards(plans, beam_options, work, stats_dir, done)}
            for plan in plans if runner == "local" else ():
                builder = MellamaCorpus(plan=plan, data_dir=work, file_format="array_record",
                                        config=tfds.core.BuilderConfig(name=plan.name,
                                                                       version=tfds.core.Version("1.0.0")))
                try:
                    builder.download_and_prepare()
                except AssertionError as e:  # TFDS's writer asserts on a split without examples
                    if "No examples were yielded" in str(e):
                        raise _no_documents(plan.name) from e
                    raise
                done(plan)
        finally:
            bar.close()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    total = sum(c[s]["tokens"] for c in components.values() for s in c)
    train_total = max(1, sum(c["train"]["tokens"] for c in components.values()))
    return {
        "tokenizer_sha256": tokenizer.sha256,
        "vocab_size": tokenizer.vocab_size,
        "components": components,
        "corpus_token_shares": {n: c["train"]["tokens"] / train_total for n, c in components.items()},
        "total_tokens": total,
        "sources": sources,
        # documents/<component>-<split>-<unit>.jsonl.gz: {"source": "path:line", <metadata>} per document of a
        # source format with metadata; "source" is also a feature of every shard example.
        "documents_metadata": DOCUMENTS_DIR if paths.glob(paths.join(manifest_dir, "*")) else None,
        "removed": removed,
        **decisions.report,
        "bad_input": report.to_dict(),
        # Beam runner: the pipelines' counters (documents read / written, removed and why, tokens), as the
        # runner's UI showed them during the run
        **({"beam_counters": dict(sorted(counters.items()))} if runner == "beam" else {}),
        "skipped_components": list(cfg.skipped),
        "runner": runner,
        "seconds": round(time.time() - started, 2),
    }
