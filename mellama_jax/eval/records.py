"""Reading MIBE evaluation records in the form Me-LLaMA released them, from the files a user has.

A record is one object with the fields of Me-LLaMA's released test sets (Hugging Face datasets
`clinicalnlplab/<task>_test`, written by its `src/preprocess_instruct.py`): `id`, `query` (the full
prompt), `answer`, `choices`, `gold` and, in some sets, `text`. What `answer`, `choices` and `gold` must
hold depends on the task (each task declares its gold format: tasks/base.py); this module reads records,
checks the common fields, and says where a bad record is — `path:line` for JSONL, `path:row N` (0-based,
as `datasets` indexes) for parquet and arrow files.

Three on-disk forms are read, all offline, with pyarrow:

* JSONL, one record per line;
* a hub snapshot: `data/test-*.parquet` (what `huggingface-cli download --repo-type dataset` leaves);
* a `datasets.save_to_disk` directory: a Dataset (`state.json` + `data-*.arrow`) or a DatasetDict
  (`dataset_dict.json` + one such directory per split; the `test` split is read).

For a task the data directory is searched under the task's name, its aliases and the name of its
released dataset (`HoC_test`): `<name>.jsonl`, `<name>/test.jsonl`, `<name>.parquet`, or `<name>/` holding
a snapshot or a save_to_disk directory.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from mellama_jax import paths


class RecordError(ValueError):
    """A record is malformed; the message starts with where it is (`file:line` or `file:row N`)."""


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """One evaluation example exactly as read from the file (validated per task later)."""
    id: str
    query: str
    answer: Any  # str, or a list of acceptable strings (QA / diagnosis aliases)
    choices: tuple[str, ...]
    gold: Any  # as stored: an int index, a 0/1 list (HoC), or None; the task checks its format
    where: str  # "path:line" / "path:row N", for error messages and the per-example report
    text: str | None = None  # the released sets' raw input text, when present (not used for scoring)


SPLIT = "test"  # the split evaluated; few-shot examples come from "train" (eval/protocols.py)


def task_file_candidates(data_dir: str, name: str, split: str = SPLIT) -> list[str]:
    return [paths.join(data_dir, f"{name}.jsonl"), paths.join(data_dir, name, f"{split}.jsonl"),
            paths.join(data_dir, f"{name}.parquet"), paths.join(data_dir, name)]


def find_task_file(data_dir: str, task: str, aliases: tuple[str, ...] = (), split: str = SPLIT) -> str:
    """The records of `task` (or one of its aliases) in `data_dir`: a file or a dataset directory."""
    tried = []
    for name in (task,) + tuple(aliases):
        for path in task_file_candidates(data_dir, name, split):
            tried.append(path)
            where = paths.resolve(path)  # local or gs://
            if where.is_file() or (where.is_dir() and _directory_files(path, split)):
                return path
    raise FileNotFoundError(f"no {split} data for task {task!r}; looked for: {', '.join(tried)} "
                            f"(a directory must hold data/{split}-*.parquet or a datasets.save_to_disk dataset)")


def _directory_files(path: str, split: str = SPLIT) -> list[tuple[str, str]]:
    """(kind, file) pairs of a dataset directory in read order; [] when it holds no known layout."""
    snapshot = paths.glob(paths.join(path, "data", f"{split}-*.parquet"))
    if snapshot:
        return [("parquet", f) for f in sorted(snapshot)]
    dataset_dict = paths.resolve(paths.join(path, "dataset_dict.json"))
    if dataset_dict.is_file():
        splits = json.loads(dataset_dict.read_text()).get("splits", [])
        if split not in splits:
            raise FileNotFoundError(f"{path}: the saved DatasetDict has splits {splits}, no {split!r} split")
        return _directory_files(paths.join(path, split), split)
    state = paths.resolve(paths.join(path, "state.json"))
    if state.is_file():
        files = [d["filename"] for d in json.loads(state.read_text()).get("_data_files", [])]
        return [("arrow", paths.join(path, name)) for name in files]
    return []


def _as_str(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def parse_record(obj: Any, where: str, index: int) -> EvalRecord:
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected an object with query/answer/choices/gold, "
                          f"got {type(obj).__name__}")
    if obj.get("query") is None:
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
    text = obj.get("text")
    if text is not None:
        text = _as_str(text, "text", where)
    rid = obj.get("id")
    return EvalRecord(id=str(index if rid is None else rid), query=query, answer=answer, choices=tuple(choices),
                      gold=gold, where=where, text=text)


def _jsonl_rows(path: str) -> Iterator[tuple[str, Any]]:
    with paths.resolve(path).open("r") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e


def _table_rows(path: str, table_batches) -> Iterator[tuple[str, Any]]:
    row = 0
    for batch in table_batches:
        for obj in batch.to_pylist():
            yield f"{path}:row {row}", obj
            row += 1


def _file_rows(kind: str, path: str) -> Iterator[tuple[str, Any]]:
    if kind == "jsonl":
        yield from _jsonl_rows(path)
    elif kind == "parquet":
        with paths.resolve(path).open("rb") as f:
            yield from _table_rows(path, pq.ParquetFile(f).iter_batches())
    else:  # datasets writes its arrow files in the IPC *stream* format
        with paths.resolve(path).open("rb") as f:
            yield from _table_rows(path, pa.ipc.open_stream(f))


def iter_records(path: str, limit: int | None = None, split: str = SPLIT) -> Iterator[EvalRecord]:
    """Records of a JSONL/parquet file or a dataset directory (its `split`), in order; `limit` keeps the first N."""
    if paths.resolve(path).is_dir():
        files = _directory_files(path, split)
    else:
        files = [("parquet" if path.endswith(".parquet") else "jsonl", path)]
    count = 0
    for kind, file in files:
        for where, obj in _file_rows(kind, file):
            if limit is not None and count >= limit:
                return
            yield parse_record(obj, where, count)
            count += 1
