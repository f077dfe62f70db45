"""Bad-input accounting shared by every reader of the data pipeline.

Readers never drop a record silently. Each problem (malformed JSON, non-UTF-8 bytes, a missing text
field, an empty file, a non-positive mixture weight, a document longer than the row) is either

* strict mode: raised at once as `DataError`, the message starting with `file:line` (or the config
  field) and saying what was expected, or
* lenient mode: counted by kind in a `DataReport`, kept with its location (the first
  `max_examples` per kind), logged, and skipped.

The report travels with the iterator (`iterator.report`) so the training loop can log it.
"""
from __future__ import annotations

import collections
import dataclasses
import logging

from mellama_jax.config_groups import FieldError

log = logging.getLogger(__name__)

# The kinds of problems the pipeline knows about (report keys, stable names for logs and tests).
MALFORMED_JSON = "malformed_json"
NOT_UTF8 = "not_utf8"
MISSING_FIELD = "missing_field"
EMPTY_TEXT = "empty_text"
EMPTY_FILE = "empty_file"
BAD_WEIGHT = "bad_weight"
MALFORMED_XML = "malformed_xml"  # not well-formed XML (the rest of that file is skipped)
MALFORMED_CSV = "malformed_csv"  # a CSV row with bad quoting or the wrong number of fields
BAD_RECORD = "bad_record"  # a record of the right encoding but the wrong shape (e.g. not an object)
DAMAGED_FILE = "damaged_file"  # a compressed file cut short or corrupt (an interrupted download); rest skipped


class DataError(ValueError):
    """Bad input data or data configuration; the message names the file:line or config field."""


class DamagedFile(DataError):
    """A compressed source that cannot be decompressed to its end; the message names the file."""


class DataFieldError(DataError, FieldError):
    """A data config field breaks its rule (config_groups.FieldError, and a DataError where built directly)."""


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str
    where: str  # "path:line", "path:row 12", "data.components[1].weight", ...
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.detail}"


class DataReport:
    """Counts and examples of skipped input, per kind. `strict=True` turns every `add` into a DataError."""

    def __init__(self, strict: bool = False, max_examples: int = 20):
        self.strict = strict
        self.max_examples = max_examples
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[Problem]] = collections.defaultdict(list)

    def add(self, kind: str, where: str, detail: str) -> None:
        problem = Problem(kind, where, detail)
        if self.strict:
            raise DataError(f"{problem} (strict mode; set data.strict=False to skip and report such input)")
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(problem)
            log.warning("skipped input: %s", problem)

    def merge(self, other: "DataReport") -> "DataReport":
        for kind, n in other.counts.items():
            self.counts[kind] += n
            room = self.max_examples - len(self.examples[kind])
            self.examples[kind].extend(other.examples.get(kind, [])[:max(room, 0)])
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts),
                "examples": {k: [str(p) for p in v] for k, v in self.examples.items() if v}}

    @classmethod
    def from_dict(cls, d: dict, strict: bool = False) -> "DataReport":
        report = cls(strict=False)
        report.counts.update(d.get("counts", {}))
        for kind, lines in d.get("examples", {}).items():
            for line in lines:
                where, _, rest = line.partition(f": {kind}: ")
                report.examples[kind].append(Problem(kind, where, rest))
        report.strict = strict
        return report

    def summary(self) -> str:
        if not self.total:
            return "no bad input"
        parts = [f"{n} {kind}" for kind, n in sorted(self.counts.items())]
        first = [str(p) for kind in sorted(self.examples) for p in self.examples[kind][:3]]
        return "skipped/adjusted input: " + ", ".join(parts) + "; e.g. " + " | ".join(first)
