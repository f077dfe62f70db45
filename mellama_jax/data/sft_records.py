"""Instruction records in the shapes they are published in → `Conversation` (system, (prompt, response) turns).

Shapes (`data.instruct.format`, or a source's `record_format`; "auto" detects each record by its fields):
* messages: OpenAI / Hugging Face chat, {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
            — an optional leading system message, then user/assistant alternating, ending with an assistant
            message. A message's content may also be a list of {"type": "text", "text": str} parts. Tool
            turns (role "tool"/"function"/"ipython", or an assistant message with "tool_calls") are refused:
            the prompt templates have no slot for them.
* sharegpt: {"conversations": [{"from": "human"|"gpt"|..., "value": str}, ...]} with an optional leading
            "system" turn — the Me-LLaMA release's shape ("me_llama" is the same parser).
* alpaca:   {"instruction", "input" (optional), "output"} (Stanford Alpaca).
* dolly:    {"instruction", "context", "response", "category"} (databricks-dolly-15k; context is shown as
            the input, category is not shown).
* mibe:     {"query", "answer", ...} (the MIBE instruction/evaluation records; the answer is the response).

A record of the wrong shape is a `ShapeError` naming the field (`messages[3].role`); the SFT reader reports
it as `file:line:field` (data/errors.py: raised in strict mode, else skipped and counted). Parquet and Arrow
files give every row every column of the file's schema, absent ones as None, so None counts as absent.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from mellama_jax.data import errors as E
from mellama_jax.data.errors import DataReport

SHAPES = ("messages", "sharegpt", "me_llama", "alpaca", "dolly", "mibe")
FORMATS = ("auto",) + SHAPES
HUMAN_ROLES = ("human", "user")
AGENT_ROLES = ("agent", "gpt", "assistant", "bot", "model", "chatgpt")
TOOL_ROLES = ("tool", "function", "ipython", "function_call", "observation", "tool_call", "tool_response")


@dataclasses.dataclass(frozen=True)
class Conversation:
    turns: tuple[tuple[str, str], ...]  # (prompt, response) pairs
    input: str | None = None  # Alpaca "input" / Dolly "context", shown with the first prompt
    system: str | None = None


class ShapeError(ValueError):
    """A record that does not have the expected shape; `field` is the path of the offending field."""

    def __init__(self, field: str, detail: str, kind: str = E.MISSING_FIELD):
        super().__init__(f"{field}: {detail}")
        self.field, self.detail, self.kind = field, detail, kind


def _present(record: dict, field: str) -> bool:
    return record.get(field) is not None


def detect_shape(record: dict) -> str | None:
    if _present(record, "messages"):
        return "messages"
    if _present(record, "conversations"):
        return "sharegpt"
    if _present(record, "instruction"):
        return "dolly" if _present(record, "response") and not _present(record, "output") else "alpaca"
    if _present(record, "query"):
        return "mibe"
    return None


def _text(record: dict, field: str, *, where: str | None = None, required: bool = True,
          non_empty: bool = False) -> str | None:
    value = record.get(field)
    name = where or field
    if value is None:
        if required:
            raise ShapeError(name, "missing; expected a string")
        return None
    if not isinstance(value, str):
        raise ShapeError(name, f"expected a string, got {type(value).__name__}")
    if non_empty and not value.strip():
        raise ShapeError(name, "is empty", E.EMPTY_TEXT)
    return value


def _content(message: dict, where: str) -> str:
    """A message's content: a string, or a list of text parts (joined) as in multimodal chat datasets."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ShapeError(f"{where}.content[{j}]", "expected a {'type': 'text', 'text': str} part "
                                                          "(other content types are not supported)")
            parts.append(part["text"])
        return "".join(parts)
    raise ShapeError(f"{where}.content", f"expected a string, got {type(content).__name__}")


def _pairs(turns: list[tuple[str, str, str]], field: str) -> tuple[tuple[str, str], ...]:
    """(role kind "user"/"assistant", text, where) turns alternating from a user turn → (prompt, response) pairs."""
    if not turns:
        raise ShapeError(field, "has no user/assistant turns")
    pairs = []
    for i in range(0, len(turns), 2):
        kind, prompt, where = turns[i]
        if kind != "user":
            raise ShapeError(where, "expected a user turn here (turns alternate user, assistant, user, ...)")
        if i + 1 == len(turns):
            raise ShapeError(where, "the conversation ends with a user turn that has no answer")
        kind, response, where = turns[i + 1]
        if kind != "assistant":
            raise ShapeError(where, "expected an assistant turn here (turns alternate user, assistant, ...)")
        pairs.append((prompt, response))
    return tuple(pairs)


def _messages(record: dict) -> Conversation:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ShapeError("messages", "expected a non-empty list of {role, content} messages")
    system, turns = None, []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ShapeError(where, f"expected an object {{role, content}}, got {type(m).__name__}", E.BAD_RECORD)
        role = m.get("role")
        if role in TOOL_ROLES or m.get("tool_calls") or m.get("function_call"):
            raise ShapeError(f"{where}.role" if role in TOOL_ROLES else f"{where}.tool_calls",
                             "tool turns are not supported in instruction data (no template renders them); "
                             "drop such conversations or flatten the tool output into the text", E.BAD_RECORD)
        if role == "system":
            if i:
                raise ShapeError(f"{where}.role", "a system message is only accepted first")
            system = _content(m, where)
            continue
        if role not in ("user", "assistant"):
            raise ShapeError(f"{where}.role", f"{role!r}: expected 'system', 'user' or 'assistant'")
        turns.append((role, _content(m, where), f"{where}.role"))
    return Conversation(_pairs(turns, "messages"), system=system or None)


def _sharegpt(record: dict) -> Conversation:
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ShapeError("conversations", "expected a non-empty list of {from, value} turns")
    system, turns = None, []
    for i, t in enumerate(conversations):
        where = f"conversations[{i}]"
        if not isinstance(t, dict):
            raise ShapeError(where, f"expected an object {{from, value}}, got {type(t).__name__}", E.BAD_RECORD)
        role = t.get("from")
        value = _text(t, "value", where=f"{where}.value")
        if role in TOOL_ROLES:
            raise ShapeError(f"{where}.from", "tool turns are not supported in instruction data", E.BAD_RECORD)
        if role == "system":
            if i:
                raise ShapeError(f"{where}.from", "a system turn is only accepted first")
            system = value
            continue
        kind = "user" if role in HUMAN_ROLES else "assistant" if role in AGENT_ROLES else None
        if kind is None:
            raise ShapeError(f"{where}.from", f"{role!r}: expected one of {HUMAN_ROLES + AGENT_ROLES} or 'system'")
        turns.append((kind, value, f"{where}.from"))
    return Conversation(_pairs(turns, "conversations"), system=system or None)


def _alpaca(record: dict) -> Conversation:
    instruction = _text(record, "instruction", non_empty=True)
    output = _text(record, "output")
    inp = _text(record, "input", required=False)
    return Conversation(((instruction, output),), input=inp or None)


def _dolly(record: dict) -> Conversation:
    instruction = _text(record, "instruction", non_empty=True)
    response = _text(record, "response")
    context = _text(record, "context", required=False)
    _text(record, "category", required=False)  # not shown, but a non-string is a sign of a wrong shape
    return Conversation(((instruction, response),), input=context or None)


def _mibe(record: dict) -> Conversation:
    query = _text(record, "query", non_empty=True)
    answer = record.get("answer")
    if isinstance(answer, list) and answer and all(isinstance(a, str) for a in answer):
        answer = answer[0]
    if not isinstance(answer, str):
        raise ShapeError("answer", f"expected a string (or a list of strings), got {type(answer).__name__}")
    return Conversation(((query, answer),))


_PARSERS = {"messages": _messages, "sharegpt": _sharegpt, "me_llama": _sharegpt, "alpaca": _alpaca,
            "dolly": _dolly, "mibe": _mibe}


def to_conversation(record: Any, fmt: str = "auto") -> Conversation:
    """The record as a Conversation, or a ShapeError naming the field."""
    if not isinstance(record, dict):
        raise ShapeError("record", f"expected a JSON object, got {type(record).__name__}", E.BAD_RECORD)
    shape = detect_shape(record) if fmt == "auto" else fmt
    if shape is None:
        raise ShapeError("record", f"no 'messages', 'conversations', 'instruction' or 'query' field (shapes "
                                   f"{list(SHAPES)}); fields present: {sorted(record)[:8]}")
    if shape not in _PARSERS:
        raise ValueError(f"unknown instruction record format {shape!r}; expected one of {FORMATS}")
    return _PARSERS[shape](record)


def parse_record(record: Any, fmt: str = "auto") -> tuple[Conversation | None, str | None]:
    """(conversation, None) or (None, "field: what was expected")."""
    try:
        return to_conversation(record, fmt), None
    except ShapeError as e:
        return None, str(e)


def instruct_check(fmt: str = "auto"):
    """A RecordSource check: the record parses into a conversation with a non-empty response somewhere.
    Problems are reported at `file:line:field`."""

    def check(record: Any, where: str, report: DataReport) -> bool:
        try:
            conv = to_conversation(record, fmt)
        except ShapeError as e:
            report.add(e.kind, f"{where}:{e.field}", e.detail)
            return False
        if not any(r.strip() for _, r in conv.turns):
            report.add(E.EMPTY_TEXT, f"{where}:response", "every response is empty: nothing to learn from")
            return False
        return True

    return check
