"""MIBE builders for the originals that come as note collections or research releases: i2b2 2010, emrQA, BioNLI.

Same contract as eval/mibe/build.py (records in the released form, a BuildError naming `file:line` and the
field for a raw record that does not fit). Which source defines each prompt and target:

* emrqa: emrQA's `data.json` (panushri25/emrQA): data → paragraphs {note_id, context (lines), qas
  [{question (paraphrases), answers [{text, answer_start [line, token], evidence, answer_entity_type}]}]}.
  Me-LLaMA's `EmrQA` template (preprocess_instruct.py:143); context = the note's lines joined by "\n",
  question = the first paraphrase, answer = the first non-empty answer `text`, both stripped as its
  fetch_data strips them.
* i2b2: a directory of 2010 i2b2/VA `*.txt` (one sentence per line, space-separated tokens) and `*.con`
  (`c="a cough" 10:4 10:5||t="problem"`: line 1-based, token 0-based, end inclusive). OURS (Me-LLaMA's I2B2
  set is local and unpublished): one record per non-blank line; answer = the tokens joined by spaces with
  each concept in `<span class="type">…</span>`, the form vital_measure.py NER.html2bio reads.
* bionli: BioNLI's CSV (StonyBrookNLP/BioNLI: supp_set, conclusion, label_cat). OURS (BioNLI_test is
  gated): MedNLI's template with two labels; text = "[PRE] supp_set [HYP] conclusion" as MedNLI's
  fetch_data builds it; label_cat "pos" = entailment, any other (a perturbation) = contradiction, as
  BioNLI's src/data_preparation.py maps them.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import re

from mellama_jax.eval.mibe import prompts as T
from mellama_jax.eval.mibe.build import BuildError, _choice_record, _field
from mellama_jax.eval.tasks.nli import BIONLI

I2B2_TYPES = ("problem", "treatment", "test")
# c="concept text" L:T L:T||t="type"  (the text itself may hold quotes; the offsets anchor the match)
_CONCEPT = re.compile(r'^c="(?P<text>.*)" (?P<l1>\d+):(?P<t1>\d+) (?P<l2>\d+):(?P<t2>\d+)\|\|t="(?P<type>[^"]*)"\s*$')


# ---------------------------------------------------------------- emrQA
def _as_list(value, field: str, where: str) -> list:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise BuildError(f"{where}: field {field!r} must be a string or a list, got {value!r}")
    return value


def emrqa(path: str) -> list[dict]:
    """One record per question with a non-empty answer (emrQA's "empty" answers have no span to extract)."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise BuildError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, dict):
        raise BuildError(f"{path}: expected emrQA's object {{\"data\": [...]}}")
    out = []
    for i, entry in enumerate(_field(data, "data", path, list)):
        title = entry.get("title", i) if isinstance(entry, dict) else i
        for j, paragraph in enumerate(_field(entry, "paragraphs", f"{path}:data[{title}]", list)):
            where_p = f"{path}:data[{title}].paragraphs[{j}]"
            context = "\n".join(_as_list(_field(paragraph, "context", where_p, (list, str)), "context", where_p))
            for k, qa in enumerate(_field(paragraph, "qas", where_p, list)):
                where = f"{where_p}.qas[{k}]"
                questions = _as_list(_field(qa, "question", where, (list, str)), "question", where)
                answers = [_field(a, "text", where, str).strip() for a in _field(qa, "answers", where, list)]
                answers = [a for a in answers if a]
                if not questions or not answers:
                    continue
                query = T.EMRQA.format(text=context.strip(), question=questions[0].strip())
                out.append({"id": f"EmrQA{len(out)}", "query": query, "answer": answers[0]})
    return out


# ---------------------------------------------------------------- i2b2 2010 concepts
def _concepts(con_path: str) -> list[tuple[str, int, int, int, str, str]]:
    """(where, line, first token, last token, type, text) of every concept line of a .con file."""
    out = []
    with open(con_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{con_path}:{lineno}"
            m = _CONCEPT.match(line.strip())
            if m is None:
                raise BuildError(f'{where}: expected c="text" line:token line:token||t="type", got {line.strip()!r}')
            if m["type"] not in I2B2_TYPES:
                raise BuildError(f"{where}: field 't' is {m['type']!r}; expected one of {list(I2B2_TYPES)}")
            if m["l1"] != m["l2"]:
                raise BuildError(f"{where}: the concept spans lines {m['l1']}-{m['l2']}; 2010 concepts lie in one line")
            out.append((where, int(m["l1"]), int(m["t1"]), int(m["t2"]), m["type"], m["text"]))
    return out


def i2b2_marked_line(tokens: list[str], spans: list[tuple[int, int, str]]) -> str:
    """The tokens joined by spaces with each (first, last, type) span wrapped in <span class="type">."""
    words = list(tokens)
    for first, last, kind in spans:
        words[first] = f'<span class="{kind}">' + words[first]
        words[last] = words[last] + "</span>"
    return " ".join(words)


def i2b2(path: str) -> list[dict]:
    if not os.path.isdir(path):
        raise BuildError(f"{path}: expected a directory holding the 2010 *.txt notes and their *.con files")
    texts: dict[str, str] = {}
    for p in sorted(glob.glob(os.path.join(path, "**", "*.txt"), recursive=True)):
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in texts:  # .con files pair with notes by name: two notes of one name cannot be told apart
            raise BuildError(f"{p}: a second note named {stem}.txt (also {texts[stem]}); point --raw at one set")
        texts[stem] = p
    cons = sorted(glob.glob(os.path.join(path, "**", "*.con"), recursive=True))
    if not cons:
        raise BuildError(f"{path}: no .con concept files")
    out = []
    for con in cons:
        stem = os.path.splitext(os.path.basename(con))[0]
        if stem not in texts:
            raise BuildError(f"{con}: no {stem}.txt next to it (under {path})")
        with open(texts[stem], encoding="utf-8") as f:
            lines = [line.split() for line in f.read().split("\n")]
        by_line: dict[int, list[tuple[int, int, str]]] = {}
        for where, line, first, last, kind, text in _concepts(con):
            tokens = lines[line - 1] if 1 <= line <= len(lines) else []
            if not 0 <= first <= last < len(tokens):
                raise BuildError(f"{where}: tokens {first}-{last} are not in line {line} of {texts[stem]} "
                                 f"({len(tokens)} tokens)")
            found = " ".join(tokens[first:last + 1])
            if found.lower() != text.lower():  # .con files hold the text lower-cased
                raise BuildError(f"{where}: field 'c' is {text!r} but line {line} tokens {first}-{last} of "
                                 f"{texts[stem]} read {found!r}")
            taken = by_line.setdefault(line, [])
            if any(first <= b and a <= last for a, b, _ in taken):
                raise BuildError(f"{where}: the concept overlaps another one in line {line}")
            taken.append((first, last, kind))
        for n, tokens in enumerate(lines, start=1):
            if tokens:
                out.append({"id": f"I2B2{len(out)}", "query": T.I2B2.format(text=" ".join(tokens)),
                            "answer": i2b2_marked_line(tokens, sorted(by_line.get(n, [])))})
    return out


# ---------------------------------------------------------------- BioNLI
def bionli(path: str) -> list[dict]:
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            where = f"{path}:{reader.line_num}"  # the row's last line (a quoted premise may span lines)
            category = _field(row, "label_cat", where).strip()
            if not category:
                raise BuildError(f"{where}: field 'label_cat' is empty; expected 'pos' or a perturbation category")
            answer = "entailment" if category == "pos" else "contradiction"
            text = "[PRE] " + _field(row, "supp_set", where) + " [HYP] " + _field(row, "conclusion", where)
            out.append(_choice_record("BioNLI", len(out), T.BIONLI.format(text=text), answer, BIONLI.default_choices))
    return out


BUILDERS = {"emrqa": emrqa, "i2b2": i2b2, "bionli": bionli}
