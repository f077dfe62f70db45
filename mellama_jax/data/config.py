"""Typed, frozen data configuration, built from the ml_collections ConfigDict of configs/data/*.py.

    components: list of {name, weight, sources: [SourceConfig...], heldout_fraction | heldout_sources}
    weight_unit: "tokens" (Me-LLaMA's 15:1:4 is a token ratio) or "documents"
    stages: [{start_step, weights: {component: weight}}, ...] — the mixture from a given training step on
            (components' own weights hold before the first stage; a component a stage does not name gets 0)
    share_margin: warn when a stage's achieved token share of a component drifts further than this from its weight
    prepared_dir: a directory written by mellama-prepare-corpus (local or gs://); when set, components are read
              from it (a component's own prepared_dir wins)
    strict: raise on the first bad record / weight / overlong document instead of skipping and reporting
    overlong: what to do with a document longer than the row: "split" into row-sized chunks, "truncate",
              "error", or "auto" (error when strict, else split for pretraining and truncate for SFT)
    instruct: {sources, template, format, max_prompt_tokens, system, heldout_fraction} for SFT
    dedup: {exact, near, threshold, num_perm, shingle, seed} (dedup.py), applied by corpus preparation
    decontaminate: {tasks: {name: test file} | [test files], n, mode, fields, template_share} (decontam.py),
              applied by corpus preparation

Every group is typed by config_groups.typed, so every error names the field as a flag would set it (e.g.
`config.data.mixture.components[1].weight`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from mellama_jax.config_groups import IN_GROUP, PARSE, as_mapping, typed
from mellama_jax.data import errors as E
from mellama_jax.data.decontam import DecontamConfig
from mellama_jax.data.dedup import DedupConfig
from mellama_jax.data.errors import DataError, DataFieldError, DataReport
from mellama_jax.data.sft_records import FORMATS as INSTRUCT_FORMATS
from mellama_jax.data.sources import SourceConfig
from mellama_jax.data.templates import get_template

OVERLONG_POLICIES = ("auto", "split", "truncate", "error")
# Where the training config keeps the data group; errors name fields from here (`--config.data.mixture.…`).
CONFIG_PATH = "config.data.mixture"


def sources(value: Any, where: str) -> tuple[SourceConfig, ...]:
    """A `sources` value: a path or glob (several comma-separated, as a flag gives them), a {path, format,
    ...} group, or a list of either."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, Mapping) or hasattr(value, "to_dict"):
        value = [value]
    return tuple(SourceConfig.from_any(v, f"{where}[{i}]") for i, v in enumerate(value))


def _sources_field():
    return dataclasses.field(default=(), metadata={PARSE: sources})


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
    name: str
    weight: float
    sources: tuple[SourceConfig, ...] = _sources_field()
    heldout_fraction: float = 0.0
    heldout_sources: tuple[SourceConfig, ...] = _sources_field()
    # This component from its own prepared corpus (else the mixture's prepared_dir, else its sources).
    prepared_dir: str | None = None

    def __post_init__(self):
        if not self.name.isidentifier():
            raise DataFieldError("component", "name", self.name, "expected an identifier-like string (it names a dataset "
                                                        "split)")
        if not math.isfinite(self.weight):
            raise DataFieldError("component", "weight", self.weight, "expected a finite number")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise DataFieldError("component", "heldout_fraction", self.heldout_fraction, "expected 0 <= fraction < 1")

    @classmethod
    def from_any(cls, value: Any, where: str) -> "ComponentConfig":
        return typed(cls, value, where, error=DataError)


def _stage_weights(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    weights = value.to_dict() if hasattr(value, "to_dict") else value
    if not isinstance(weights, Mapping) or not weights:
        raise DataError(f"{where}={weights!r}: expected a mapping {{component name: weight}}")
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise DataError(f"{where}.{name}={w!r}: expected a finite number >= 0")
    if not sum(weights.values()) > 0:
        raise DataError(f"{where}: every weight is 0; nothing to train on in this stage")
    return tuple((str(n), float(w)) for n, w in weights.items())


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """The mixture weights from training step `start_step` on (until the next stage)."""
    start_step: int
    # (component, weight >= 0), in the order given; in a config group {component: weight}
    weights: tuple[tuple[str, float], ...] = dataclasses.field(metadata={PARSE: _stage_weights})

    def __post_init__(self):
        if self.start_step < 0:
            raise DataFieldError("stage", "start_step", self.start_step, "expected an integer >= 0")

    @classmethod
    def from_any(cls, value: Any, where: str) -> "StageConfig":
        return typed(cls, value, where, error=DataError)


@dataclasses.dataclass(frozen=True)
class InstructConfig:
    sources: tuple[SourceConfig, ...] = _sources_field()
    template: str = "me_llama"
    format: str = "auto"
    max_prompt_tokens: int = 0  # 0 = no limit; Me-LLaMA cut long inputs to 3,500 tokens
    system: str | None = None
    heldout_fraction: float = 0.0

    def __post_init__(self):
        try:
            get_template(self.template)
        except DataError as e:
            raise DataFieldError("instruct", "template", self.template, str(e)) from e
        if self.format not in INSTRUCT_FORMATS:
            raise DataFieldError("instruct", "format", self.format, f"expected one of {INSTRUCT_FORMATS}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise DataFieldError("instruct", "heldout_fraction", self.heldout_fraction, "expected 0 <= fraction < 1")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    components: tuple[ComponentConfig, ...] = dataclasses.field(default=(), metadata={IN_GROUP: False})
    weight_unit: str = "tokens"
    stages: tuple[StageConfig, ...] = ()
    share_margin: float = 0.05
    prepared_dir: str | None = None
    strict: bool = False
    overlong: str = "auto"
    shuffle: bool = True
    num_packing_bins: int = 0  # 0: max(2 x per-process batch, 256)
    read_threads: int = 0  # grain ReadOptions.num_threads per component (0: read in the calling thread)
    prefetch_buffer_size: int = 64
    worker_count: int = 0  # grain mp_prefetch worker processes (0: none)
    worker_buffer_size: int = 2
    block_size: int = 32  # documents per grain element before packing (amortises per-element overhead)
    # Consecutive documents of a block are packed as one unit of up to this many tokens (documents stay
    # separate segments); 0: seq_len // 6. 1 packs each document on its own. See data/packing.py.
    pack_unit_tokens: int = 0
    instruct: InstructConfig | None = None
    dedup: DedupConfig | None = None  # None: no deduplication
    decontaminate: DecontamConfig | None = None  # None: no decontamination
    # Components skipped for a non-positive weight (lenient mode); filled by from_config.
    skipped: tuple[str, ...] = dataclasses.field(default=(), metadata={IN_GROUP: False})
    # The config path of this group (for error messages that name a flag); filled by from_config.
    path: str = dataclasses.field(default=CONFIG_PATH, metadata={IN_GROUP: False})

    def __post_init__(self):
        if self.weight_unit not in ("tokens", "documents"):
            raise DataFieldError("data", "weight_unit", self.weight_unit, "expected 'tokens' or 'documents'")
        if self.overlong not in OVERLONG_POLICIES:
            raise DataFieldError("data", "overlong", self.overlong, f"expected one of {OVERLONG_POLICIES}")
        names = [c.name for c in self.components]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataFieldError("data", "components", None, f"duplicate component name(s) {dupes}")
        for field in ("num_packing_bins", "read_threads", "worker_count",
                      "pack_unit_tokens"):
            if getattr(self, field) < 0:
                raise DataFieldError("data", field, getattr(self, field), "must be >= 0")
        if self.block_size < 1:
            raise DataFieldError("data", "block_size", self.block_size, "must be >= 1")
        if not 0 < self.share_margin <= 1:
            raise DataFieldError("data", "share_margin", self.share_margin, "expected 0 < margin <= 1")
        steps = [s.start_step for s in self.stages]
        if steps != sorted(set(steps)):
            raise DataFieldError("data", "stages", None, f"start_step values {steps} must be strictly increasing")
        for i, stage in enumerate(self.stages):
            unknown = sorted({n for n, _ in stage.weights} - set(names) - set(self.skipped))
            if unknown:
                raise DataFieldError("data", f"stages[{i}].weights", None,
                                     f"unknown component(s) {unknown}; components: {names}")

    def overlong_policy(self, *, sft: bool) -> str:
        if self.overlong != "auto":
            return self.overlong
        if self.strict:
            return "error"
        return "truncate" if sft else "split"

    def component(self, name: str) -> ComponentConfig:
        for c in self.components:
            if c.name == name:
                return c
        raise DataError(f"data: no component named {name!r}; components: {[c.name for c in self.components]}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    @property
    def target_shares(self) -> dict[str, float]:
        total = sum(c.weight for c in self.components)
        return {c.name: c.weight / total for c in self.components}

    def schedule(self) -> tuple[tuple[int, dict[str, float]], ...]:
        """((start step, {component: weight}), ...): the components' own weights from step 0, then the stages."""
        out = [(0, {c.name: c.weight for c in self.components})]
        for stage in self.stages:
            weights = {n: 0.0 for n in self.names} | {n: w for n, w in stage.weights if n in self.names}
            if not sum(weights.values()) > 0:
                raise DataError(f"{self.path}.stages (start_step={stage.start_step}): only left-out components have "
                                f"weight; nothing to train on in this stage")
            if stage.start_step == 0:
                out = []
            out.append((stage.start_step, weights))
        return tuple(out)

    @classmethod
    def from_config(cls, config: Any, report: DataReport | None = None, where: str = CONFIG_PATH) -> "DataConfig":
        """From a ConfigDict/dict (or a DataConfig, returned as is) at config path `where`. Non-positive
        weights: see module doc."""
        if isinstance(config, DataConfig):
            return config
        d = as_mapping(config, where, DataError)
        given = d.pop("components", None) or ()
        strict = d.get("strict", False) is True
        report = report if report is not None else DataReport(strict=strict)
        stages = d.get("stages") or ()
        if isinstance(stages, Mapping) or hasattr(stages, "to_dict"):
            raise DataError(f"{where}.stages: expected a list of {{start_step, weights}} groups")
        d["stages"] = tuple(StageConfig.from_any(s, f"{where}.stages[{i}]") for i, s in enumerate(stages))
        staged = {n for s in d["stages"] for n, w in s.weights if w > 0}
        components, skipped = [], []
        for i, c in enumerate(given):
            comp = ComponentConfig.from_any(c, f"{where}.components[{i}]")
            if comp.weight == 0 and comp.name in staged:  # drawn only from a later stage on
                components.append(comp)
                continue
            if comp.weight <= 0:
                report.add(E.BAD_WEIGHT, f"{where}.components[{i}].weight",
                           f"component {comp.name!r} has weight {comp.weight:g}; weights must be > 0 "
                           f"(component left out of the mixture)")
                skipped.append(comp.name)
                continue
            components.append(comp)
        if given and not components:
            raise DataError(f"{where}.components: every component has a non-positive weight; nothing to train on")
        return typed(cls, d, where, error=DataError, components=tuple(components), skipped=tuple(skipped),
                     path=where)
