"""One way to turn a config group into typed values: `typed(cls, group, "config.a")`.

Configs are ml_collections ConfigDicts: config files start from a locked schema (the one place each default
is written; `config_dict.placeholder(T)` for an optional field) and `--config.a.b=v` flags change them. Code
reads frozen dataclasses. `typed` builds the dataclass `cls` from the group at config path `path`:

* keys the dataclass lacks are refused, naming `path.key` and the fields it has;
* values are checked against the field annotations (int, float, bool, str, `X | None`, `tuple[...]` from a
  list or a comma-separated string), nested dataclass fields are built from their sub-group the same way,
  and a field whose metadata holds `PARSE: fn` is built by `fn(value, "path.field")`;
* a field's own rule, raised from `__post_init__` as `FieldError(self, "field", value, "problem")`, comes
  out as `path.field=value: problem`.

So every error names the value as the user types it back (`config.train.micro_batches=3: ...` is
`--config.train.micro_batches=3`; list items read `config.data.mixture.components[1].weight`, which
ml_collections' flags accept too). The error class is ConfigError unless the caller names another (the data
package raises DataError).
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Callable, Mapping

# Field metadata key: `dataclasses.field(metadata={PARSE: fn})` builds that field as fn(group value, its path).
PARSE = "parse"
# Field metadata key: `{IN_GROUP: False}` marks a field that is not read from the group (filled by code).
IN_GROUP = "in_group"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or inconsistent (the message names the field)."""


class FieldError(ConfigError):
    """One field's value breaks its rule: `FieldError(owner, "field", value, "problem")`, raised from a typed
    group's __post_init__ (owner: `self` or a short name; value None: no single value to show). Reads
    `owner.field=value: problem`; `typed` puts the field's config path in place of `owner`."""

    def __init__(self, owner: Any, field: str, value: Any, problem: str):
        self.field, self.value, self.problem = field, value, problem
        name = owner if isinstance(owner, str) else type(owner).__name__
        super().__init__(self.at(name))

    def at(self, path: str) -> str:
        """The message with the field named `path.field`."""
        shown = "" if self.value is None else f"={self.value!r}"
        return f"{path}.{self.field}{shown}: {self.problem}"


def as_mapping(value: Any, path: str, error: type[Exception] = ConfigError) -> dict:
    """A plain dict of a ConfigDict / mapping group, or `error` naming `path`."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise error(f"{path}: expected a group of fields, got {type(value).__name__} {value!r}")
    return dict(value)


def plain(value: Any) -> Any:
    """A config value as plain dicts and lists all the way down: ConfigDict.to_dict() leaves ConfigDicts
    that sit inside lists (a mixture's components with placeholder fields) as they are."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if hasattr(value, "get") and hasattr(value, "set") and hasattr(value, "has_cycle"):  # a FieldReference
        value = value.get()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def group_fields(cls) -> dict[str, dataclasses.Field]:
    """The fields of dataclass `cls` that are read from its config group."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init and f.metadata.get(IN_GROUP, True)}


def typed(cls, group: Any, path: str, /, *, error: type[Exception] = ConfigError, **filled: Any):
    """The frozen dataclass `cls` built from a config group (ConfigDict, mapping, None = all defaults, or a
    `cls` instance, returned as is). Errors are `error` instances naming `path.<field>` (see module doc).
    filled: values of the fields that are not read from the group (metadata IN_GROUP False), set by code."""
    if isinstance(group, cls):
        return group
    values = {} if group is None else as_mapping(group, path, error)
    fields = group_fields(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise error(f"{', '.join(f'{path}.{k}' for k in unknown)}: no such config field; {path} has "
                    f"{', '.join(sorted(fields))}")
    hints = _hints(cls)
    kwargs = {}
    for name, value in values.items():
        where = f"{path}.{name}"
        parse = fields[name].metadata.get(PARSE)
        try:
            kwargs[name] = parse(value, where) if parse else _check(value, hints.get(name, Any), where, error)
        except FieldError as e:  # a parser's own field rule
            raise error(e.at(where)) from e
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{', '.join(f'{path}.{n}' for n in missing)}: required, not set")
    try:
        return cls(**kwargs, **filled)
    except FieldError as e:
        raise error(e.at(path)) from e


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check(value: Any, hint: Any, where: str, error: type[Exception]) -> Any:
    """`value` as the annotation `hint` asks (int/float/bool/str/None/tuple/nested dataclass), else `error`."""
    if hint is Any or value is None and _allows_none(hint):
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        problems = []
        for option in options:
            try:
                return _check(value, option, where, error)
            except error as e:
                problems.append(str(e))
        raise error(problems[0] if len(problems) == 1 else f"{where}={value!r}: " + "; ".join(problems))
    if dataclasses.is_dataclass(hint):
        return typed(hint, value, where, error=error)
    if origin is tuple:
        return _tuple(value, typing.get_args(hint), where, error)
    expected = _SCALARS.get(hint)
    if expected is not None:
        ok, convert = expected
        if not ok(value):
            raise error(f"{where}={value!r}: expected {_NAMES[hint]}")
        return convert(value)
    return value  # another type (a mapping, a custom class): the dataclass checks it


def _allows_none(hint: Any) -> bool:
    return hint is None or type(None) in typing.get_args(hint)


def _tuple(value: Any, args: tuple, where: str, error: type[Exception]) -> tuple:
    if isinstance(value, str) and args and args[0] is str:
        value = [v.strip() for v in value.split(",") if v.strip()]  # "q_proj,v_proj": as typed in a flag
    if not isinstance(value, (list, tuple)):
        raise error(f"{where}={value!r}: expected a list")
    item = args[0] if args and (len(args) == 1 or args[-1] is Ellipsis) else Any
    return tuple(_check(v, item, f"{where}[{i}]", error) for i, v in enumerate(value))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_SCALARS: dict[Any, tuple[Callable[[Any], bool], Callable[[Any], Any]]] = {
    int: (_is_int, int),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), float),
    bool: (lambda v: isinstance(v, bool), bool),
    str: (lambda v: isinstance(v, str), str),
}
_NAMES = {int: "an integer", float: "a number", bool: "True or False", str: "a string"}
