"""What a run's data config points at, checked before the run (the training command's --dry_run).

Without reading a document: every prepared corpus a component reads from is finished (its report, and on
object storage its COMMIT marker) and holds that component; every raw source path or glob matches a file;
instruction sources match files. Local paths and gs:// alike. Each problem names the flag that fixes it.
"""
from __future__ import annotations

from typing import Any

from mellama_jax.data.config import DataConfig
from mellama_jax.data.errors import DataError
from mellama_jax.data.loader import read_corpus_report
from mellama_jax.data.sources import expand_paths


def check_inputs(mixture: Any, kind: str) -> list[str]:
    """Lines describing the data a run of `kind` ("mixture" / "sft") reads from the data group `mixture`;
    DataError naming the flag to set when something is missing."""
    cfg = DataConfig.from_config(mixture)
    if kind == "sft":
        return _instruct(cfg)
    if not cfg.components:
        raise DataError(f"{cfg.path}.components is empty: nothing to pretrain on (a config file lists the "
                        f"components; --{cfg.path}.prepared_dir=DIR reads them from a prepared corpus)")
    lines = []
    for i, comp in enumerate(cfg.components):
        where = f"{cfg.path}.components[{i}]"
        prepared = comp.prepared_dir or cfg.prepared_dir
        if prepared:
            info = read_corpus_report(prepared)
            stats = info.get("components", {}).get(comp.name)
            if stats is None:
                raise DataError(f"{prepared}: no prepared component {comp.name!r} (prepared: "
                                f"{sorted(info.get('components', {}))}); set --{where}.prepared_dir to the corpus "
                                f"that holds it")
            train, heldout = stats.get("train", {}), stats.get("heldout", {})
            lines.append(f"data {comp.name} (weight {comp.weight:g}): prepared corpus {prepared}, "
                         f"{train.get('documents', 0):,} documents / {train.get('tokens', 0):,} tokens, held out "
                         f"{heldout.get('documents', 0):,} documents")
        elif comp.sources:
            files = _files(comp.sources + comp.heldout_sources, f"{where}.sources")
            lines.append(f"data {comp.name} (weight {comp.weight:g}): {len(files)} source file(s)")
        else:
            raise DataError(f"{where} ({comp.name!r}) has no data: set --{cfg.path}.prepared_dir=DIR (a corpus "
                            f"written by mellama-prepare-corpus, local or gs://) or {where}.sources")
    return lines


def _instruct(cfg: DataConfig) -> list[str]:
    ic = cfg.instruct
    if ic is None or not ic.sources:
        raise DataError(f"{cfg.path}.instruct.sources is empty: set --{cfg.path}.instruct.sources=PATH_OR_GLOB "
                        f"(JSONL / parquet instruction files, local or gs://; several comma-separated)")
    files = _files(ic.sources, f"{cfg.path}.instruct.sources")
    return [f"data instructions: {len(files)} file(s) from {', '.join(s.path for s in ic.sources)}, template "
            f"{ic.template!r}, {ic.heldout_fraction:g} held out"]


def _files(sources, where: str) -> list[str]:
    try:
        return [f for s in sources for f in expand_paths(s.path)]
    except DataError as e:
        raise DataError(f"{where}: {e}") from e
