"""Parsing a config group (a ConfigDict or a mapping) into a frozen dataclass's fields, with one error style.

Shared by every typed data config (data/config.py, dedup.py, decontam.py): each error names the config
path of the group (`data.dedup`, `data.components[1]`) and lists the fields it knows.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from mellama_jax.data.errors import DataError


def as_dict(value: Any, where: str) -> dict:
    """A plain dict of a ConfigDict / mapping, or a DataError naming `where`."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise DataError(f"{where}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def check_fields(d: Mapping, cls, where: str) -> None:
    """Refuse keys that are not fields of dataclass `cls`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise DataError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")


def group(value: Any, cls, where: str) -> dict:
    """`as_dict` + `check_fields`: the group's fields, ready for `cls(**d)` after any conversions."""
    d = as_dict(value, where)
    check_fields(d, cls, where)
    return d
