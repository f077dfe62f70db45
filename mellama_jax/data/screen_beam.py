"""Screening as an Apache Beam pipeline, with no step that holds every document key or signature.

    Units ─Scan─▶ documents ─GroupByKey(exact key)─▶ first of each group ─GroupByKey(band key)─▶ near pairs
                     └─ contaminated (test-set n-gram index: a side input copied to every worker)

Each worker scans its units (screen.scan_unit: exact key, MinHash signature, test items hit). Exact groups
and LSH band buckets are GroupByKey keys, so they are spread over the workers; only what is removed comes back
to the driver: exact duplicates with the document they repeat, verified near pairs (edges), contaminated
documents. The driver joins the edges into components (memory: the near-duplicate pairs, not the corpus) and
assembles the same decisions and report as the local runner (screen.decide; semantics in
docs/corpus_sources.md). Beam counters (namespace `mellama_corpus`) let a user follow a long run in the
runner's UI: documents_read, contaminated, exact_duplicates, near_pairs.
"""
from __future__ import annotations

import json
import pickle
from typing import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from etils import epath

from mellama_jax.data.config import DataConfig
from mellama_jax.data.decontam import TestIndex
from mellama_jax.data.dedup import band_keys, bands, near_components, near_pairs
from mellama_jax.data.screen import Decisions, Doc, assemble, scan_unit
from mellama_jax.data.shards_beam import NAMESPACE, counters
from mellama_jax.data.units import Unit


def _info(d: Doc) -> tuple:
    """What the report needs of a document: no key, no signature, no hits."""
    return tuple(d._replace(key=None, sig=None, hits=()))


def _dump(x) -> str:
    return pickle.dumps(x).hex()  # one text line per element: WriteToText works on every runner and filesystem


def _read(prefix: str) -> list:
    out = []
    for path in sorted(epath.Path(prefix).parent.glob(epath.Path(prefix).name + "*")):
        out.extend(pickle.loads(bytes.fromhex(line)) for line in path.read_text().splitlines() if line)
    return out


def screen(cfg: DataConfig, units: Sequence[Unit], index: TestIndex | None, beam_options: Sequence[str],
           work_dir: str) -> Decisions:
    dedup, decontam, strict = cfg.dedup, cfg.decontaminate, cfg.strict
    drop = decontam is not None and decontam.mode == "drop"
    read, contaminated = Metrics.counter(NAMESPACE, "documents_read"), Metrics.counter(NAMESPACE, "contaminated")
    exact_found, pairs_found = Metrics.counter(NAMESPACE, "exact_duplicates"), Metrics.counter(NAMESPACE, "near_pairs")

    def scan(item, test_index):
        ui, unit = item
        for ordinal, where, path, did, key, sig, hits in scan_unit(unit, strict, dedup, test_index):
            read.inc()
            if hits:
                contaminated.inc()
            yield Doc((ui, ordinal), unit.component, where, path, did, key, sig, hits)

    def exact_groups(item):
        _, members = item
        members = sorted(members)
        for d in members[1:]:
            exact_found.inc()
            yield beam.pvalue.TaggedOutput("removed", (_info(d), _info(members[0])))
        yield members[0]

    def bucket_pairs(item):
        _, members = item
        by_id = {d.id: d for d in members}
        found = []
        near_pairs(list(by_id), {i: d.sig for i, d in by_id.items()}, dedup.threshold,
                   lambda a, b: found.append((_info(by_id[a]), _info(by_id[b]))))
        yield from found

    prefix = str(epath.Path(work_dir) / "screen")
    with beam.Pipeline(options=PipelineOptions(list(beam_options))) as p:
        test_index = p | "TestIndex" >> beam.Create([index])
        docs = (p | "Units" >> beam.Create(list(enumerate(units)))
                | "Scan" >> beam.FlatMap(scan, beam.pvalue.AsSingleton(test_index)))
        _ = (docs | "Seen" >> beam.combiners.Count.Globally()
             | "WriteSeen" >> beam.Map(lambda n: epath.Path(f"{prefix}-seen.json").write_text(json.dumps(n))))
        _ = (docs | "Contaminated" >> beam.Filter(lambda d: bool(d.hits))
             | "ContaminatedInfo" >> beam.Map(lambda d: _dump(d._replace(key=None, sig=None)))
             | "WriteContaminated" >> beam.io.WriteToText(f"{prefix}-contaminated"))
        if dedup is not None:
            kept = docs | "Clean" >> beam.Filter(lambda d: not (drop and d.hits))
            if dedup.exact:
                split = (kept | "ByExactKey" >> beam.Map(lambda d: (d.key, d)) | "ExactGroups" >> beam.GroupByKey()
                         | "FirstOfGroup" >> beam.FlatMap(exact_groups).with_outputs("removed", main="first"))
                kept = split.first
                _ = (split.removed | "ExactDump" >> beam.Map(_dump)
                     | "WriteExact" >> beam.io.WriteToText(f"{prefix}-exact"))
            if dedup.near:
                b, r = bands(dedup)
                _ = (kept | "ByBand" >> beam.FlatMap(lambda d: [(k, d) for k in band_keys(d.sig, b, r)])
                     | "BandBuckets" >> beam.GroupByKey() | "NearPairs" >> beam.FlatMap(bucket_pairs)
                     | "OnePerPair" >> beam.Distinct() | "CountPairs" >> beam.Map(lambda e: (pairs_found.inc(), e)[1])
                     | "PairDump" >> beam.Map(_dump) | "WritePairs" >> beam.io.WriteToText(f"{prefix}-near"))
    seen = json.loads(epath.Path(f"{prefix}-seen.json").read_text())
    docs_hit = [Doc(*d) for d in _read(f"{prefix}-contaminated")]
    info, found = {}, {}
    for d, first in _read(f"{prefix}-exact") if dedup is not None and dedup.exact else []:
        d, first = Doc(*d), Doc(*first)
        info[d.id], info[first.id] = d, first
        found[d.id] = ("exact", first.id)
    edges = []
    for a, c in _read(f"{prefix}-near") if dedup is not None and dedup.near else []:
        a, c = Doc(*a), Doc(*c)
        info[a.id], info[c.id] = a, c
        edges.append((a.id, c.id))
    found.update(near_components(edges))
    decisions = assemble(seen, docs_hit, found, info, dedup, decontam, index)
    decisions.counters = counters(p.result)
    return decisions
