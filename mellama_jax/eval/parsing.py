"""Turning a generated answer into a prediction.

Two matching modes, chosen per run and named in the report:

* ``mibe`` — Me-LLaMA's own rules, task by task (eval/mibe/rules.py, docs/evaluation.md): for most tasks the
  first choice, in list order, found anywhere in the output as a substring — lower-cased or not depending
  on the task. Known quirk, kept on purpose for comparability: with PubMedQA's choices (yes, no, maybe) an
  output "I do not know" matches "no" (inside "not"), and "yes" wins over "no" whenever both occur.
* ``strict`` — the answer has to lead the output: after an optional "Answer:" / "The answer is" prefix,
  the first line must equal a choice or start with it followed by a non-word character; for lettered
  multiple-choice tasks (MedQA, MedMCQA) a leading option letter ("B", "(B)", "B.", "B: text") selects
  choice B. Anything else is "no prediction".

"No prediction parsed" is its own outcome, returned as `None`; metrics count it as wrong (see
metrics.NO_PREDICTION for how macro-F1 treats it).
"""
from __future__ import annotations

import re
import string
from typing import Sequence

from mellama_jax.eval.mibe import rules

MATCHING_MODES = ("mibe", "strict")

# "Answer:", "Final answer -", "The answer is", "The correct answer is:" ... at the start of the output.
_ANSWER_PREFIX = re.compile(
    r"^\s*(?:(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|:|-)?\s*:?\s*|output\s*:\s*|label\s*:\s*)",
    re.IGNORECASE)
# A leading option letter: "B", "(B)", "B)", "B.", "B:", "[B]", "Option B" followed by end or a delimiter.
_OPTION_LETTER = re.compile(r"^\s*(?:option\s+)?[(\[]?([A-Z])[)\].:]?(?=\s|$|[.,;:)])", re.IGNORECASE)
# List markers of a ranked list: "1.", "1)", "(1)", "-", "*", "•".
_LIST_MARKER = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[-*•])\s*")
_TRAILING_PUNCT = " \t" + string.punctuation
_PUNCT = frozenset(string.punctuation)


def check_matching(mode: str) -> str:
    if mode not in MATCHING_MODES:
        raise ValueError(f"matching={mode!r}; expected one of {MATCHING_MODES}")
    return mode


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def strip_answer_prefix(text: str) -> str:
    return _ANSWER_PREFIX.sub("", text, count=1).strip()


def _leads_with(text: str, choice: str) -> bool:
    """`text` equals `choice` or starts with it followed by a non-word character (case-insensitive)."""
    t, c = text.lower(), choice.lower().strip()
    if not c or not t.startswith(c):
        return False
    rest = t[len(c):]
    return not rest or not (rest[0].isalnum() or rest[0] == "_")


def match_choice_strict(output: str, choices: Sequence[str], *, lettered: bool = False) -> int | None:
    """The choice the output leads with, or None. Longer choices win over their prefixes ("no" vs "none")."""
    line = strip_answer_prefix(first_line(output))
    candidate = line.rstrip(_TRAILING_PUNCT)
    order = sorted(range(len(choices)), key=lambda i: -len(choices[i]))
    for i in order:
        if candidate.lower() == choices[i].lower().strip():
            return i
    for i in order:
        if _leads_with(line, choices[i]):
            return i
    if lettered:
        m = _OPTION_LETTER.match(line)
        if m:
            idx = ord(m.group(1).upper()) - ord("A")
            if 0 <= idx < len(choices):
                return idx
    return None


def match_choice(output: str, choices: Sequence[str], mode: str, *, lettered: bool = False,
                 lower_case: bool = True) -> int | None:
    """strict: match_choice_strict; mibe: the reference's first-found rule (lower_case = its LOWER_CASE)."""
    if check_matching(mode) == "mibe":
        return rules.first_choice_found(output, choices, lower_case)
    return match_choice_strict(output, choices, lettered=lettered)


# ---------------------------------------------------------------- multi-label (HoC)
NONE_WORDS = ("none", "no label", "no labels", "none of the above", "n/a")


def match_labels(output: str, choices: Sequence[str], mode: str) -> tuple[int, ...] | None:
    """Indices of every label in the output (sorted), () for an explicit "none", None when nothing parsed.

    mibe: every choice occurring (case-sensitive, as the reference's HoC rule) in the output; None if none.
    strict: the first line split on , ; | (and " and "); every piece must equal a choice, or the output
    is unparsed.
    """
    check_matching(mode)
    text = output.strip()
    if mode == "mibe":
        found = tuple(i for i, v in enumerate(rules.hoc_vector(text, choices)) if v)
        return found or None
    line = strip_answer_prefix(first_line(text))
    pieces = [p.strip().strip(_TRAILING_PUNCT).lower() for p in re.split(r"[,;|]", line)]
    pieces = [p for p in pieces if p]
    if len(pieces) == 1 and pieces[0] in NONE_WORDS:
        return ()
    lookup = {c.lower().strip(): i for i, c in enumerate(choices)}
    found = set()
    for piece in pieces:
        # "x and y" lists two labels unless "and" belongs to a label ("genomic instability and mutation").
        parts = [piece] if piece in lookup else [q.strip() for q in re.split(r"\band\b", piece) if q.strip()]
        if not parts or any(q not in lookup for q in parts):
            return None
        found.update(lookup[q] for q in parts)
    return tuple(sorted(found)) if found else None


# ---------------------------------------------------------------- ranked lists (diagnosis)
def ranked_items(output: str, mode: str) -> list[str]:
    """The ranked candidates in an answer, best first.

    Lines carrying list markers ("1.", "2)", "-", "*") are the items. Without any marker, strict reads
    the first line as a comma/semicolon-separated list; mibe additionally keeps a single unmarked answer.
    """
    check_matching(mode)
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    marked = [_LIST_MARKER.sub("", ln).strip() for ln in lines if _LIST_MARKER.match(ln)]
    items = marked
    if not items and lines:
        head = strip_answer_prefix(lines[0])
        items = [p.strip() for p in re.split(r"[;,]", head)]
    items = [it.rstrip(_TRAILING_PUNCT).strip() for it in items]
    items = [strip_answer_prefix(it) for it in items if it]
    return [it for it in items if it]


# ---------------------------------------------------------------- free text
def free_text_answer(output: str, mode: str) -> str:
    """The answer span of a free-text output: strict keeps the first line without an "Answer:" prefix."""
    if check_matching(mode) == "strict":
        return strip_answer_prefix(first_line(output))
    return output.strip()


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop ASCII punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())
