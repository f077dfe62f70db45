"""The Beam runner's tokenizing pass: the workers write the corpus shards themselves, to any out_dir.

Every document gets a shard from its key: crc32("<where>#<ordinal>") modulo its split's shard count, which the
plan fixes (one shard per input unit that feeds the split), so a document lands in the same shard whichever
worker reads it and however bundles are cut. A GroupByKey per (component, split, shard) brings one shard's
documents to one worker, which sorts them canonically (unit, record), writes an ArrayRecord file on its own
disk (array_record writes local files only) and copies it to its final, deterministic name under the work
directory (paths.py: local or gs://). A retried bundle writes the same bytes under the same name — it
overwrites, never adds. Every shard is written, an empty one too (TFDS numbers shards 0..N-1), and its counts
go to a small JSON next to the per-unit stats; the driver checks that every shard exists and is counted, then
writes TFDS's metadata (tfds_builder.write_info) — it never handles a document.
"""
from __future__ import annotations

import json
import os
import tempfile
import zlib
from typing import Callable, Sequence

from array_record.python import array_record_module

from mellama_jax import paths
from mellama_jax.data.corpus_output import CORPUS_DIR
from mellama_jax.data.errors import DataError
from mellama_jax.data.tfds_builder import VERSION, features, shard_name

SHARD_STATS = "_shards"  # under the stats directory: one JSON per written shard
NAMESPACE = "mellama_corpus"  # of the Beam counters both pipelines keep (docs/corpus_sources.md lists them)


def counters(result) -> dict[str, int]:
    """The `NAMESPACE` counters of a finished pipeline (committed values where the runner has them)."""
    from apache_beam.metrics.metric import MetricsFilter  # noqa: PLC0415 - optional dependency

    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    return {m.key.metric.name: m.committed if m.committed is not None else m.attempted for m in found}


def shard_count(split_rules: Sequence[str], split: str) -> int:
    """Shards of a split: one per unit that can feed it (a hash-split source feeds the held-out split little)."""
    if split == "train":
        return max(1, sum(r in ("train", "hash") for r in split_rules))
    return max(1, sum(r == "heldout" for r in split_rules) + any(r == "hash" for r in split_rules))


def shard_of(key: str, shards: int) -> int:
    return zlib.crc32(key.encode()) % shards


def shard_path(work_root: str, component: str, split: str, index: int, count: int) -> str:
    return paths.join(work_root, CORPUS_DIR, component, VERSION, shard_name(split, index, count))


def _stats_path(stats_dir: str, component: str, split: str, index: int) -> str:
    return paths.join(stats_dir, SHARD_STATS, f"{component}-{split}-{index:05d}.json")


def write_shards(jobs: dict[tuple[str, str], tuple[int, list, Callable]], beam_options: Sequence[str],
                 work_root: str, stats_dir: str) -> dict[str, int]:
    """Run one pipeline for every (component, split) in `jobs`: (shard count, tasks, tokenize) where
    tokenize(task) -> the unit's examples [(key "<where>#<ordinal>", {"tokens", "source"})]. Returns the
    pipeline's counters."""
    import apache_beam as beam  # noqa: PLC0415 - optional dependency: pip install mellama_jax[beam]
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    counts = {key: n for key, (n, _, _) in jobs.items()}
    tokenizers = {key: run for key, (_, _, run) in jobs.items()}
    items = [(key, ui, task) for key, (_, tasks, _) in jobs.items() for ui, task in enumerate(tasks)]
    encoder: dict = {}

    def tokenize(item):
        (component, split), ui, task = item
        if "features" not in encoder:  # built once per worker process, not pickled with the pipeline
            encoder["features"] = features()
        feats = encoder["features"]
        for key, example in tokenizers[(component, split)](task):
            ordinal = int(key.rsplit("#", 1)[1])
            yield ((component, split, shard_of(key, counts[(component, split)])),
                   (ui, ordinal, len(example["tokens"]), feats.serialize_example(example)))

    def write(item):
        (component, split, index), docs = item
        docs = sorted(d for d in docs if d is not None)
        target = shard_path(work_root, component, split, index, counts[(component, split)])
        with tempfile.TemporaryDirectory(prefix="mellama-shard-") as tmp:
            local = os.path.join(tmp, "shard.array_record")
            # group_size 1: one chunk per document, as TFDS writes them, so readers fetch one by byte range
            writer = array_record_module.ArrayRecordWriter(local, "group_size:1")
            for *_, data in docs:
                writer.write(data)
            writer.close()
            size = os.path.getsize(local)
            paths.resolve(target).parent.mkdir(parents=True, exist_ok=True)
            paths.resolve(local).copy(paths.resolve(target), overwrite=True)
        stats = {"documents": len(docs), "tokens": sum(d[2] for d in docs), "bytes": size}
        record = paths.resolve(_stats_path(stats_dir, component, split, index))
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(stats))

    seeds = [((c, s, i), None) for (c, s), n in counts.items() for i in range(n)]
    with beam.Pipeline(options=PipelineOptions(list(beam_options))) as p:
        docs = p | "Units" >> beam.Create(items) | "Tokenize" >> beam.FlatMap(tokenize)
        every = p | "EveryShard" >> beam.Create(seeds)
        _ = ((docs, every) | "WithEmpty" >> beam.Flatten() | "ByShard" >> beam.GroupByKey()
             | "WriteShard" >> beam.Map(write))
    return counters(p.result)


def written_shards(work_root: str, stats_dir: str, component: str, split: str, count: int) -> list[tuple[int, int]]:
    """The (documents, bytes) of each shard of a split, checking that every shard was written and counted."""
    out = []
    for index in range(count):
        stats = paths.resolve(_stats_path(stats_dir, component, split, index))
        if not stats.exists() or not paths.resolve(shard_path(work_root, component, split, index, count)).exists():
            raise DataError(f"component {component!r} {split} shard {index} of {count} was not written by the "
                            f"Beam workers; nothing was published")
        s = json.loads(stats.read_text())
        out.append((s["documents"], s["bytes"]))
    return out
