"""The loader API the training loop calls: per-process packed batches, exactly resumable.

    it = make_pretrain_iterator(data_cfg, tokenizer, seq_len=4096, global_batch_size=512, seed=0)
    batch = next(it)                    # dict of int32 numpy [global_batch/process_count, seq_len]
                                        # (process_index/process_count: this process's share; default all)
    it.get_state() / it.set_state(s)    # or grain.checkpoint.CheckpointSave(it) in an orbax Composite
    it.stats()                          # achieved token share per component, padding, overlong docs

Pipeline (grain), per component, over a source (prepared ArrayRecord via tfds.data_source, or indexed raw
records):
    record indices (RecordIndices: this process's disjoint share, process_index::process_count)
      → shuffle(seed, component name) → repeat() (reshuffled every epoch) → blocks of documents, each read
      from the source in one batched call → map(tokenize block) → to_iter_dataset(read threads)
      → BlockChunker (row length; a block's documents grouped into packing units of up to
      data.pack_unit_tokens) → FirstFitPackIterDataset → rows {tokens, segment_ids, positions, loss_mask}
then StagedMixIterDataset (rows of the components by the token weights of the current stage, mixture.py)
→ batch → mp_prefetch (optional worker processes) → AccountingIterDataset (token shares, in the train process).
"""
from __future__ import annotations

import functools
import json
import logging
import sys
import zlib
from typing import Any

import grain
import numpy as np

from mellama_jax import paths
from mellama_jax.data import instruct as I
from mellama_jax.data.config import ComponentConfig, DataConfig
from mellama_jax.data.corpus_output import CORPUS_REPORT
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.mixture import AccountingIterDataset, StagedMixIterDataset
from mellama_jax.data.packing import BlockChunker, pack, pad_batch
from mellama_jax.data.sources import PreparedSource, RecordSource, hf_disk_files, is_hf_disk, text_check, text_of
from mellama_jax.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# grain's first-fit packer emits all its bins once an element fits none of them, so only the last few
# bins it was filling leave partly empty; with more bins that is a smaller fraction of the rows. Measured
# (4096-token rows, 170-token documents, packing units of seq_len // 6): padding 1.06% at 64 bins, 0.91% at
# 128, 0.82% at 256 — the level of packing every document alone — at the same speed (the first-fit step is
# vectorised over bins); the cost is latency: the first batch (and a restore) packs 256 rows first.
MIN_PACKING_BINS = 256


# --------------------------------------------------------------------------------------------- transforms
class TokenizeBlock(grain.transforms.Map):
    """A block of (record, where, fields) → documents {tokens, doc_meta, where}; BOS/EOS as LLaMA-2."""

    def __init__(self, tokenizer: Tokenizer, domain: int, *, bos: bool = True, eos: bool = True):
        self.tokenizer, self.domain, self.bos, self.eos = tokenizer, domain, bos, eos

    def map(self, block):
        texts = [text_of(record, fields) for record, _, fields in block]
        ids = self.tokenizer.encode_batch(texts, bos=self.bos, eos=self.eos, as_numpy=True)
        meta = self.domain + 1
        return [{"tokens": t, "doc_meta": meta, "where": w} for t, (_, w, _) in zip(ids, block)]


class PreparedBlock(grain.transforms.Map):
    """A block of ({"tokens"}, where) from a prepared corpus → documents with BOS/EOS added."""

    def __init__(self, domain: int, bos_id: int, eos_id: int, *, bos: bool = True, eos: bool = True):
        self.domain = domain
        self.prefix = np.asarray([bos_id] if bos else [], np.int32)
        self.suffix = np.asarray([eos_id] if eos else [], np.int32)

    def map(self, block):
        meta = self.domain + 1
        return [{"tokens": np.concatenate([self.prefix, np.asarray(ex["tokens"], np.int32), self.suffix]),
                 "doc_meta": meta, "where": where} for ex, where in block]


class TokenizeConversations(grain.transforms.Map):
    """A block of instruction records → documents {tokens, loss_mask, doc_meta, where}."""

    def __init__(self, tokenizer: Tokenizer, template: str, fmt: str, max_prompt_tokens: int, system: str | None,
                 file_formats: dict[str, str] | None = None):
        self.tokenizer, self.template, self.fmt = tokenizer, template, fmt
        self.max_prompt_tokens, self.system = max_prompt_tokens, system
        self.file_formats = file_formats or {}  # a source's own record_format, by file path

    def map(self, block):
        out = []
        for record, where, _ in block:
            conv, reason = I.parse_record(record, self.file_formats.get(where.rpartition(":")[0], self.fmt))
            if conv is None:  # validated at index time; only a file changed under us gets here
                raise DataError(f"{where}: {reason}")
            if self.system and conv.system is None:
                conv = I.Conversation(conv.turns, conv.input, self.system)
            tokens, mask = I.tokenize_conversation(self.tokenizer, conv, self.template,
                                                   max_prompt_tokens=self.max_prompt_tokens)
            out.append({"tokens": tokens, "loss_mask": mask, "doc_meta": 1, "where": where})
        return out


# --------------------------------------------------------------------------------------------- sources
def _strict(data_cfg: Any) -> bool:
    if isinstance(data_cfg, DataConfig):
        return data_cfg.strict
    if hasattr(data_cfg, "to_dict"):
        data_cfg = data_cfg.to_dict()
    return bool(dict(data_cfg).get("strict", False))


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """The share to read; without both, the whole data (one process). The data package never asks JAX which
    process it is: training passes its shard (data/sharded.py) from train/, which knows the processes."""
    if process_index is None or process_count is None:
        process_index, process_count = process_index or 0, process_count or 1
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} must be in [0, process_count={process_count})")
    return process_index, process_count


def _file_signature(comp_sources) -> tuple:
    sig = []
    for s in comp_sources:
        if s.format == "tfds":
            continue
        files = hf_disk_files(s.path, s.split) if s.format == "hf_disk" or is_hf_disk(s.path) else paths.glob(s.path)
        for p in files:
            size, mtime = paths.info(p)
            sig.append((p, mtime, size))
    return tuple(sig)


@functools.lru_cache(maxsize=16)
def _indexed_component(comp: ComponentConfig, strict: bool, signature: tuple):
    """Index a raw component once per process (train + held-out), with its bad-input report."""
    del signature  # part of the cache key only: a changed file is indexed again
    report = DataReport(strict=strict)
    check_for = lambda cfg: text_check(cfg.text_fields)
    train = RecordSource.build(comp.sources, check_for, report)
    if comp.heldout_sources:
        heldout = RecordSource.build(comp.heldout_sources, check_for, report)
    else:
        train, heldout = train.split_heldout(comp.heldout_fraction)
    if report.total:
        log.warning("component %s: %s", comp.name, report.summary())
    return train, heldout, report


def read_corpus_report(prepared_dir: str) -> dict:
    """The prepared corpus' report; refuses a corpus that was not finished (local: no report; object storage:
    no COMMIT marker, which corpus preparation writes after the report)."""
    report = paths.resolve(prepared_dir, what="prepared_dir") / CORPUS_REPORT
    if not report.exists() or (paths.is_remote(prepared_dir) and not paths.is_committed(prepared_dir)):
        raise DataError(f"{prepared_dir}: no {CORPUS_REPORT}{' and COMMIT marker' if paths.is_remote(prepared_dir) else ''}; "
                        f"this is not a finished prepared corpus (mellama-prepare-corpus writes them last)")
    return json.loads(report.read_text())


def component_sources(cfg: DataConfig, comp: ComponentConfig, tokenizer: Tokenizer, split: str, report: DataReport):
    """(grain-compatible source, "prepared" | "raw": which block transform reads its elements)."""
    prepared_dir = comp.prepared_dir or cfg.prepared_dir
    if prepared_dir:
        info = read_corpus_report(prepared_dir)
        if info.get("tokenizer_sha256") != tokenizer.sha256:
            raise DataError(f"{prepared_dir}: corpus was tokenized with a different tokenizer (sha256 "
                            f"{str(info.get('tokenizer_sha256'))[:12]}…, this one {tokenizer.sha256[:12]}…)")
        if comp.name not in info.get("components", {}):
            raise DataError(f"{prepared_dir}: no prepared component {comp.name!r}; "
                            f"prepared: {sorted(info.get('components', {}))}")
        return PreparedSource(prepared_dir, comp.name, split), "prepared"
    signature = _file_signature(comp.sources + comp.heldout_sources)
    train, heldout, comp_report = _indexed_component(comp, cfg.strict, signature)
    report.merge(comp_report)
    return (train if split == "train" else heldout), "raw"


def _block_transform(kind: str, tokenizer: Tokenizer, domain: int):
    if kind == "prepared":
        return PreparedBlock(domain, tokenizer.bos_id, tokenizer.eos_id)
    return TokenizeBlock(tokenizer, domain)


class DocumentBlocks(grain.MapDataset):
    """Element i = the documents at positions [i*k, (i+1)*k) of `indices`, read with one batched call.

    `indices` is a grain MapDataset of *record indices* (RecordIndices → shuffle → repeat), and the
    records are read from `source` here, a block at a time (`source._getitems`: one batched ArrayRecord
    read for a prepared corpus, one call for raw records). Reading through grain's own source wrapper
    instead costs a metrics record and a byte-size walk of every document (about a tenth of tokenizing
    it); grain's per-element bookkeeping (stats, index mapping) is then paid once per block, and the
    tokenizer is called once per block. (grain's own MapDataset.batch reads items one by one.)

    `_getitems` is grain's batched-read hook, not public API (grain has no public batched read): that is why
    pyproject.toml pins grain's version; EpochShuffle and RecordIndices below implement the same hook.
    """

    def __init__(self, indices: grain.MapDataset, block_size: int, source):
        super().__init__(indices)
        self._k = block_size
        self._source = source
        self._batched = hasattr(source, "_getitems")
        n = len(indices)
        self._length = n if n >= sys.maxsize else -(-n // block_size)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        n = len(self.parents[0])
        start = index * self._k
        stop = start + self._k if n >= sys.maxsize else min(start + self._k, n)
        records = [int(i) for i in self.parents[0]._getitems(list(range(start, stop)))]
        if self._batched:
            return list(self._source._getitems(records))
        return [self._source[i] for i in records]

    def __str__(self) -> str:
        return f"DocumentBlocks(block_size={self._k}, source={type(self._source).__name__})"


class EpochShuffle(grain.MapDataset):
    """A different random order every epoch, from a cached numpy permutation per epoch.

    grain's `shuffle` computes each index with a Feistel network (`index_shuffle`): constant memory, but
    ~24 µs per document on small index spaces, a tenth of tokenizing it. Sources up to
    MAX_PERMUTATION documents (per process and component) use a permutation instead (4 bytes/document);
    larger ones keep grain's shuffle. Both are deterministic functions of (seed, epoch, index).
    """

    MAX_PERMUTATION = 1 << 25

    def __init__(self, parent: grain.MapDataset, seed: int):
        super().__init__(parent)
        self._seed = seed
        self._n = len(parent)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._n

    def _perm(self, epoch: int) -> np.ndarray:
        perm = self._cache.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self._seed, epoch]).permutation(self._n).astype(np.int64)
            self._cache = {epoch: perm, **{e: p for e, p in self._cache.items() if e == epoch - 1}}
        return perm

    def _map(self, index: int) -> int:
        epoch, i = divmod(int(index), self._n)
        return epoch * self._n + int(self._perm(epoch)[i])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self.parents[0][self._map(index)]

    def _getitems(self, indices):
        return self.parents[0]._getitems([self._map(i) for i in indices])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = {}  # rebuilt on demand in worker processes
        return state

    def __str__(self) -> str:
        return f"EpochShuffle(seed={self._seed})"


def _shuffle(ds: grain.MapDataset, seed: int) -> grain.MapDataset:
    if len(ds) <= EpochShuffle.MAX_PERMUTATION:
        return EpochShuffle(ds, seed)
    return ds.shuffle(seed=seed)


class RecordIndices(grain.MapDataset):
    """This process's disjoint share of a source's record indices: process_index + k * process_count.

    (grain's range()[i::n] gives the same elements but passes each index through two stats-wrapped
    stages; here a block's indices are one numpy expression.) Indices wrap around like a grain source.
    """

    def __init__(self, num_records: int, process_index: int, process_count: int):
        super().__init__()
        self._start, self._step = process_index, process_count
        self._length = len(range(process_index, num_records, process_count))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._start + (int(index) % self._length) * self._step

    def _getitems(self, indices):
        return (self._start + (np.asarray(indices, np.int64) % self._length) * self._step).tolist()

    def __str__(self) -> str:
        return f"RecordIndices({self._start}::{self._step}, {self._length} records)"


def _blocks(indices: grain.MapDataset, source, cfg: DataConfig) -> grain.MapDataset:
    return DocumentBlocks(indices, cfg.block_size, source)


# --------------------------------------------------------------------------------------------- iterators
def _local_batch(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise DataError(f"global_batch_size={global_batch_size} must be a positive multiple of the "
                        f"process count ({process_count})")
    return global_batch_size // process_count


def _read_options(cfg: DataConfig) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch_buffer_size)


def _padded(rows, batch_size: int) -> dict:
    return pad_batch(list(rows), batch_size)


def _finish(rows: grain.IterDataset, cfg: DataConfig, local_batch: int, names, report, schedule=(),
            min_tokens: int = 0, pad_last: bool = False) -> grain.DatasetIterator:
    """Batches of `local_batch` rows. pad_last: a finite pass (a held-out split) keeps its last rows, in a
    batch filled up with empty rows (segment id 0, no loss), rather than dropping them: a small held-out
    split then still gives a batch."""
    if pad_last:
        # a partial of a module-level function: picklable for grain's worker processes
        batched = rows.batch(local_batch, drop_remainder=False,
                             batch_fn=functools.partial(_padded, batch_size=local_batch))
    else:
        batched = rows.batch(local_batch, drop_remainder=True)
    if cfg.worker_count:
        batched = batched.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                                   per_worker_buffer_size=cfg.worker_buffer_size))
    return AccountingIterDataset(batched, names, report, schedule, cfg.share_margin, min_tokens).__iter__()


def make_pretrain_iterator(data_cfg: Any, tokenizer: Tokenizer, *, seq_len: int, global_batch_size: int,
                           seed: int = 0, process_index: int | None = None,
                           process_count: int | None = None) -> grain.DatasetIterator:
    """Infinite iterator of this process's packed pretraining batches (see module doc)."""
    report = DataReport(strict=_strict(data_cfg))
    cfg = DataConfig.from_config(data_cfg, report)
    if not cfg.components:
        raise DataError(f"{cfg.path}.components is empty: nothing to pretrain on")
    pi, pc = _process(process_index, process_count)
    local_batch = _local_batch(global_batch_size, pc)
    schedule = cfg.schedule()
    drawn = {n for _, weights in schedule for n, w in weights.items() if w > 0}
    bins = cfg.num_packing_bins or max(2 * local_batch, MIN_PACKING_BINS)
    parts = {}
    for domain, comp in enumerate(cfg.components):
        if comp.name not in drawn:
            continue
        source, kind = component_sources(cfg, comp, tokenizer, "train", report)
        if len(source) < pc:
            raise DataError(f"component {comp.name!r}: {len(source)} training document(s) cannot be shared "
                            f"by {pc} processes")
        # Seeds follow the component's name, not its place in the list: adding or removing a component
        # between runs leaves the others' document order (and their saved positions) valid.
        comp_seed = seed * 1000003 + zlib.crc32(comp.name.encode()) % 1000003
        ds = RecordIndices(len(source), pi, pc)
        if cfg.shuffle:
            ds = _shuffle(ds, comp_seed)
        ds = _blocks(ds.repeat(None), source, cfg).map(_block_transform(kind, tokenizer, domain))
        chunked = grain.experimental.FlatMapIterDataset(
            ds.to_iter_dataset(_read_options(cfg)),
            BlockChunker(seq_len, cfg.overlong_policy(sft=False), cfg.pack_unit_tokens))
        parts[comp.name] = pack(chunked, seq_len, num_bins=bins, seed=comp_seed)
    log.info("mixture %s in %s: %s", list(parts), cfg.weight_unit,
             "; ".join(f"from step {start}: {weights}" for start, weights in schedule))
    rows = StagedMixIterDataset(parts, schedule, local_batch, cfg.weight_unit)
    return _finish(rows, cfg, local_batch, cfg.names, report, schedule, min_tokens=4 * local_batch * seq_len)


def make_heldout_batches(data_cfg: Any, tokenizer: Tokenizer, component: str, *, seq_len: int, batch_size: int,
                         num_batches: int, process_index: int | None = None,
                         process_count: int | None = None) -> list[dict[str, np.ndarray]]:
    """Up to `num_batches` fixed batches of one component's held-out split (same every call).

    Documents are read in order (no shuffle, no mixing); the last batch is padded with empty rows
    (segment id 0) to keep shapes fixed. Batches hold the four contract keys.
    """
    report = DataReport(strict=_strict(data_cfg))
    cfg = DataConfig.from_config(data_cfg, report)
    comp = cfg.component(component)
    domain = cfg.names.index(component)
    pi, pc = _process(process_index, process_count)
    source, kind = component_sources(cfg, comp, tokenizer, "heldout", report)
    if len(source) == 0:
        where = f"{cfg.path}.components[{domain}]"
        fix = ("prepare the corpus again with a larger heldout_fraction or heldout_sources for it"
               if kind == "prepared" else f"set --{where}.heldout_fraction (now {comp.heldout_fraction:g}; any "
               f"positive value holds out at least one of two or more documents) or {where}.heldout_sources")
        raise DataError(f"component {component!r} has no held-out documents for held-out evaluation: {fix}, "
                        f"or turn held-out evaluation off with --config.eval.every_steps=0")
    ds = _blocks(RecordIndices(len(source), pi, pc), source, cfg).map(_block_transform(kind, tokenizer, domain))
    chunked = grain.experimental.FlatMapIterDataset(ds.to_iter_dataset(_read_options(cfg)),
                                                    BlockChunker(seq_len, "split", cfg.pack_unit_tokens))
    rows_it = iter(pack(chunked, seq_len, num_bins=max(batch_size, 8), seed=0, shuffle_bins=False))
    batches = []
    for _ in range(num_batches):
        rows = [r for _, r in zip(range(batch_size), rows_it)]
        if not rows:
            break
        batch = pad_batch(rows, batch_size)
        batch.pop("meta")
        batches.append(batch)
    return batches


@functools.lru_cache(maxsize=8)
def _indexed_instruct(sources: tuple, fmt: str, strict: bool, heldout_fraction: float, signature: tuple):
    del signature
    report = DataReport(strict=strict)
    src = RecordSource.build(sources, lambda c: I.instruct_check(fmt if c.record_format == "auto" else c.record_format),
                             report)
    train, heldout = src.split_heldout(heldout_fraction)
    if report.total:
        log.warning("instruction data: %s", report.summary())
    return train, heldout, report


def make_sft_iterator(data_cfg: Any, tokenizer: Tokenizer, *, seq_len: int, global_batch_size: int, seed: int = 0,
                      process_index: int | None = None, process_count: int | None = None, split: str = "train",
                      repeat: bool = True) -> grain.DatasetIterator:
    """Packed instruction-tuning batches; loss_mask is 1 only on response tokens (and their EOS)."""
    report = DataReport(strict=_strict(data_cfg))
    cfg = DataConfig.from_config(data_cfg, report)
    ic = cfg.instruct
    if ic is None or not ic.sources:
        raise DataError(f"{cfg.path}.instruct.sources is empty: no instruction data configured (set "
                        f"--{cfg.path}.instruct.sources=PATH_OR_GLOB)")
    pi, pc = _process(process_index, process_count)
    local_batch = _local_batch(global_batch_size, pc)
    train, heldout, sft_report = _indexed_instruct(ic.sources, ic.format, cfg.strict, ic.heldout_fraction,
                                                   _file_signature(ic.sources))
    report.merge(sft_report)
    source = train if split == "train" else heldout
    if len(source) < pc:
        raise DataError(f"instruction data ({split}): {len(source)} record(s) cannot be shared by {pc} processes")
    ds = RecordIndices(len(source), pi, pc)
    if cfg.shuffle and split == "train":
        ds = _shuffle(ds, seed)
    if repeat:
        ds = ds.repeat(None)
    file_formats = {f.path: f.record_format for f in source.files if f.record_format != "auto"}
    ds = _blocks(ds, source, cfg).map(TokenizeConversations(tokenizer, ic.template, ic.format, ic.max_prompt_tokens,
                                                            ic.system, file_formats))
    chunked = grain.experimental.FlatMapIterDataset(ds.to_iter_dataset(_read_options(cfg)),
                                                    BlockChunker(seq_len, cfg.overlong_policy(sft=True),
                                                                 cfg.pack_unit_tokens))
    bins = cfg.num_packing_bins or max(2 * local_batch, MIN_PACKING_BINS)
    rows = pack(chunked, seq_len, num_bins=bins, seed=seed)
    return _finish(rows, cfg, local_batch, ("instruct",), report, pad_last=not repeat)


def iterator_stats(it) -> dict[str, float]:
    """Achieved token shares etc. of an iterator made here (empty dict for other iterators)."""
    stats = getattr(it, "stats", None)
    return stats() if callable(stats) else {}
