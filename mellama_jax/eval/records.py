"""Reading MIBE evaluation records from local JSONL.

Every line is one JSON object in the Me-LLaMA / MIBE form `{"query", "answer", "choices", "gold"}`
(REFERENCE §2); an optional `"id"` is kept. What `answer`, `choices` and `gold` must hold depends on the
task family, so each task validates its own records (tasks/base.py); this module only reads lines,
checks the common fields, and says where a bad record is (`file:line`).

Nothing is fetched: the user supplies the files. For a task named `pubmedqa` the file is looked up as
`DATA_DIR/pubmedqa.jsonl` or `DATA_DIR/pubmedqa/test.jsonl`.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator

from mellama_jax import paths


class RecordError(ValueError):
    """A record is malformed; the message starts with `file:line`."""


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """One evaluation example exactly as read from the file (validated per task later)."""
    id: str
    query: str
    answer: Any  # str, or a list of acceptable strings (QA / diagnosis aliases)
    choices: tuple[str, ...]
    gold: Any  # int index into choices, a list of indices (multi-label), or None
    where: str  # "path:line", for error messages and the per-example report


def task_file_candidates(data_dir: str, task: str) -> list[str]:
    return [paths.join(data_dir, f"{task}.jsonl"), paths.join(data_dir, task, "test.jsonl")]


def find_task_file(data_dir: str, task: str, aliases: tuple[str, ...] = ()) -> str:
    """The JSONL file for `task` (or one of its aliases) in `data_dir`; a clear error when there is none."""
    tried = []
    for name in (task,) + tuple(aliases):
        for path in task_file_candidates(data_dir, name):
            tried.append(path)
            if paths.resolve(path).is_file():  # local or gs://
                return path
    raise FileNotFoundError(f"no data file for task {task!r}; looked for: {', '.join(tried)}")


def _as_str(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def parse_record(obj: Any, where: str, index: int) -> EvalRecord:
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected a JSON object with query/answer/choices/gold, "
                          f"got {type(obj).__name__}")
    if "query" not in obj:
        raise RecordError(f"{where}: missing field 'query'")
    query = _as_str(obj["query"], "query", where)
    answer = obj.get("answer", "")
    if isinstance(answer, list):
        answer = [_as_str(a, "answer[]", where) for a in answer]
    elif answer is None:
        answer = ""
    else:
        answer = _as_str(answer, "answer", where)
    choices = obj.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise RecordError(f"{where}: field 'choices' must be a list of strings, got {choices!r}")
    gold = obj.get("gold")
    if isinstance(gold, bool) or not (gold is None or isinstance(gold, (int, str))
                                      or (isinstance(gold, list) and all(isinstance(g, (int, str)) for g in gold))):
        raise RecordError(f"{where}: field 'gold' must be an integer index, a label string, or a list of them; "
                          f"got {gold!r}")
    rid = obj.get("id", index)
    return EvalRecord(id=str(rid), query=query, answer=answer, choices=tuple(choices), gold=gold, where=where)


def iter_records(path: str, limit: int | None = None) -> Iterator[EvalRecord]:
    """Records of one JSONL file, in file order; blank lines are skipped; `limit` keeps the first N."""
    count = 0
    with paths.resolve(path).open("r") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
            yield parse_record(obj, where, count)
            count += 1
