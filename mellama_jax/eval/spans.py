"""The HTML-like span format of the NER task, and its conversion to BIO tags over whitespace tokens.

The model (and the gold `answer`) mark entities inline: `Pt has <problem>chest pain</problem> .` or, in
Me-LLaMA's HTML form, `Pt has <span class="problem">chest pain</span> .`.
Both sides are turned into BIO tags over the whitespace tokens of the gold sentence, then seqeval scores
entity F1 (metrics.entity_f1).

* A token is inside an entity when the entity's characters overlap it (so `<problem>pain</problem>.`
  tags the token `pain.`); the first such token gets `B-type`, the rest `I-type`.
* When the prediction's text (tags removed) has the same whitespace tokens as the gold sentence, the
  character spans carry over exactly. Otherwise — the model rewrote the sentence or listed only the
  entities — each predicted entity is searched for, in order, as a run of tokens of the sentence
  (compared case-insensitively without surrounding punctuation); entities not found are dropped.
* `parse_spans(strict=True)` rejects unknown types, nested, unclosed or mismatched tags (SpanError);
  the loose parse skips what it cannot read.
"""
from __future__ import annotations

import dataclasses
import re
import string
from typing import Sequence

_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][A-Za-z_\-]*)\s*>")
# Me-LLaMA's HTML form of a span, `<span class="problem">chest pain</span>`, read as `<problem>…</problem>`.
_SPAN_CLASS = re.compile(r"""<\s*span\s+class\s*=\s*["']?([A-Za-z][A-Za-z_\-]*)["']?\s*>(.*?)<\s*/\s*span\s*>""",
                         re.DOTALL)
_EDGE_PUNCT = string.punctuation + "“”‘’"


class SpanError(ValueError):
    """The span markup is malformed (strict parsing)."""


@dataclasses.dataclass(frozen=True)
class Entity:
    type: str
    start: int  # character offsets into the tag-free text
    end: int
    text: str


def parse_spans(marked: str, types: Sequence[str], *, strict: bool) -> tuple[str, list[Entity]]:
    """(text without tags, entities) of span-marked text. Types compare case-insensitively."""
    known = {t.lower(): t for t in types}
    marked = _SPAN_CLASS.sub(lambda m: f"<{m[1]}>{m[2]}</{m[1]}>", marked)
    plain: list[str] = []
    length = 0
    entities: list[Entity] = []
    open_type: str | None = None
    open_start = 0
    pos = 0
    for m in _TAG.finditer(marked):
        chunk = marked[pos:m.start()]
        plain.append(chunk)
        length += len(chunk)
        pos = m.end()
        closing, name = m.group(1) == "/", m.group(2).lower()
        if name not in known:
            if strict:
                raise SpanError(f"unknown entity type <{m.group(2)}> (expected one of {list(types)})")
            continue
        if not closing:
            if open_type is not None:
                if strict:
                    raise SpanError(f"<{name}> opened inside <{open_type}>")
                continue
            open_type, open_start = known[name], length
        else:
            if open_type is None or open_type.lower() != name:
                if strict:
                    raise SpanError(f"</{name}> closes {'nothing' if open_type is None else f'<{open_type}>'}")
                if open_type is None:
                    continue
            entities.append(_entity(open_type, open_start, length, plain))
            open_type = None
    tail = marked[pos:]
    plain.append(tail)
    length += len(tail)
    if open_type is not None:
        if strict:
            raise SpanError(f"<{open_type}> is never closed")
        entities.append(_entity(open_type, open_start, length, plain))
    return "".join(plain), [e for e in entities if e.text.strip()]


def _entity(etype: str, start: int, end: int, plain: list[str]) -> Entity:
    text = "".join(plain)[start:end]
    # Trim whitespace inside the tags so `<test> ECG </test>` covers only "ECG".
    lead = len(text) - len(text.lstrip())
    trail = len(text) - len(text.rstrip())
    return Entity(etype, start + lead, end - trail, text.strip())


def whitespace_tokens(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]


def bio_from_offsets(tokens: Sequence[tuple[int, int, str]], entities: Sequence[Entity]) -> list[str]:
    tags = ["O"] * len(tokens)
    for ent in entities:
        first = True
        for i, (start, end, _) in enumerate(tokens):
            if start < ent.end and ent.start < end and tags[i] == "O":
                tags[i] = ("B-" if first else "I-") + ent.type
                first = False
    return tags


def _norm_token(token: str) -> str:
    return token.strip(_EDGE_PUNCT).lower()


def bio_by_search(sentence_tokens: Sequence[str], entities: Sequence[Entity]) -> list[str]:
    """Place each entity at the next run of sentence tokens equal to its tokens (left to right)."""
    words = [_norm_token(t) for t in sentence_tokens]
    tags = ["O"] * len(words)
    cursor = 0
    for ent in entities:
        target = [w for w in (_norm_token(t) for t in ent.text.split()) if w]
        if not target:
            continue
        hit = _find_run(words, target, tags, cursor)
        if hit is None:
            hit = _find_run(words, target, tags, 0)
        if hit is None:
            continue
        for j in range(hit, hit + len(target)):
            tags[j] = ("B-" if j == hit else "I-") + ent.type
        cursor = hit + len(target)
    return tags


def _find_run(words, target, tags, start) -> int | None:
    n = len(target)
    for i in range(start, len(words) - n + 1):
        if words[i:i + n] == target and all(t == "O" for t in tags[i:i + n]):
            return i
    return None


def gold_bio(marked: str, types: Sequence[str]) -> tuple[list[str], list[str]]:
    """(sentence tokens, BIO tags) of a gold span-marked sentence (strict: bad gold markup is an error)."""
    text, entities = parse_spans(marked, types, strict=True)
    tokens = whitespace_tokens(text)
    return [t for _, _, t in tokens], bio_from_offsets(tokens, entities)


def predicted_bio(output: str, sentence_tokens: Sequence[str], types: Sequence[str], *,
                  strict: bool) -> list[str] | None:
    """BIO tags of a model output over the gold sentence's tokens; None when strict parsing fails."""
    try:
        text, entities = parse_spans(output, types, strict=strict)
    except SpanError:
        return None
    tokens = whitespace_tokens(text)
    if [t for _, _, t in tokens] == list(sentence_tokens):
        return bio_from_offsets(tokens, entities)
    return bio_by_search(sentence_tokens, entities)
