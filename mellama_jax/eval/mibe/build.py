"""Building MIBE test records from each dataset's original distribution (mellama-build-mibe).

Several MIBE sets cannot be redistributed; users hold the originals. Each builder reads one original format
and writes records the way Me-LLaMA's `src/preprocess_instruct.py` built its released test sets
(`build_classification_instruction` / `build_multicalss_instruction` / `build_absumm_instruction`):
`{"id": "<Dataset><index>", "query": template.format(...), "answer", "choices", "gold"}` (summaries: no
choices/gold), with the templates of eval/mibe/prompts.py. The output is read back by eval/records.py like
the released sets. A raw record that does not fit its format is a BuildError naming `file:line` (or the
record's key) and the field.

| task       | original                                        | fields read                                       |
|------------|-------------------------------------------------|---------------------------------------------------|
| pubmedqa   | PubMedQA `ori_pqal.json` {pmid: {...}}          | QUESTION, CONTEXTS (joined by newlines), final_decision |
| medqa      | MedQA JSONL                                     | question, options ({letter: text} or [{key, value}]), answer_idx |
| medmcqa    | MedMCQA JSONL                                   | question, opa..opd, cop (1-4 as distributed, 0-3 in the HF copy) |
| ddi2013    | DDI corpus XML (a file or a directory of them)  | sentence text, entity charOffset, pair e1/e2/ddi/type |
| hoc        | TSV with header, or JSONL                       | text, labels (hallmarks separated by ";")         |
| mednli     | MedNLI JSONL                                    | sentence1, sentence2, gold_label                  |
| mtsample   | MTSamples `mtsamples.csv`                       | transcription, medical_specialty (one of 40)      |
| pubmed_sum | JSONL                                           | src, tgt                                          |
| mimic_cxr  | JSONL                                           | findings, impression (lists of sentences, joined by spaces) |
"""
from __future__ import annotations

import csv
import glob
import json
import os
from typing import Any, Callable, Iterator

from lxml import etree

from mellama_jax.eval.mibe import prompts as T
from mellama_jax.eval.tasks.classification import HALLMARKS
from mellama_jax.eval.tasks.nli import MEDNLI
from mellama_jax.eval.tasks.qa import MEDMCQA, MEDQA, PUBMEDQA
from mellama_jax.eval.tasks.re import DDI2013


class BuildError(ValueError):
    """A raw record does not fit its original format; the message starts with where it is."""


def _jsonl(path: str) -> Iterator[tuple[str, dict]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BuildError(f"{where}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise BuildError(f"{where}: expected a JSON object")
            yield where, obj


def _field(obj: dict, name: str, where: str, kind=str) -> Any:
    if name not in obj:
        raise BuildError(f"{where}: missing field {name!r}")
    if not isinstance(obj[name], kind):
        raise BuildError(f"{where}: field {name!r} must be {getattr(kind, '__name__', kind)}, got {obj[name]!r}")
    return obj[name]


def _label(value: str, choices, field: str, where: str) -> int:
    if value not in choices:
        raise BuildError(f"{where}: field {field!r} is {value!r}; expected one of {list(choices)}")
    return list(choices).index(value)


def _question(text: str) -> str:
    """MedQA/MedMCQA questions end with "?" unless they end with "?" or "." already (preprocess_instruct.py)."""
    return text if text.endswith("?") or text.endswith(".") else text + "?"


def _choice_record(dataset: str, index: int, query: str, answer: str, choices) -> dict:
    return {"id": f"{dataset}{index}", "query": query, "answer": answer, "choices": list(choices),
            "gold": list(choices).index(answer)}


# ---------------------------------------------------------------- QA
def pubmedqa(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise BuildError(f"{path}: expected ori_pqal.json's object {{pmid: record}}")
    out = []
    for pmid, rec in data.items():
        where = f"{path}:{pmid}"
        contexts = _field(rec, "CONTEXTS", where, list)
        answer = _field(rec, "final_decision", where)
        _label(answer, PUBMEDQA.default_choices, "final_decision", where)
        query = T.PUBMEDQA.format(context="\n".join(contexts), text=_field(rec, "QUESTION", where))
        out.append(_choice_record("PubmedQA", len(out), query, answer, PUBMEDQA.default_choices))
    return out


def _options(rec: dict, where: str) -> str:
    options = _field(rec, "options", where, (dict, list))
    if isinstance(options, dict):
        pairs = list(options.items())
    else:
        pairs = [(_field(o, "key", where), _field(o, "value", where)) for o in options]
    return "\n".join(f"{k}. {v}" for k, v in pairs)


def medqa(path: str) -> list[dict]:
    out = []
    for where, rec in _jsonl(path):
        answer = _field(rec, "answer_idx", where)
        _label(answer, MEDQA.default_choices, "answer_idx", where)
        query = T.MEDQA.format(text=_question(_field(rec, "question", where)), options=_options(rec, where))
        out.append(_choice_record("MedQA", len(out), query, answer, MEDQA.default_choices))
    return out


def medmcqa(path: str, cop_base: int | None = None) -> list[dict]:
    """cop_base: 1 for the original release (cop 1-4), 0 for the Hugging Face copy (0-3, what
    preprocess_instruct.py indexes with). None: read from the data when it shows (a 0 or a 4), else an error."""
    rows = list(_jsonl(path))
    cops = {_field(rec, "cop", where, int) for where, rec in rows}
    if cop_base is None:
        if 0 in cops and 4 in cops:
            raise BuildError(f"{path}: field 'cop' holds both 0 and 4; expected 1-4 (original) or 0-3 (HF copy)")
        if 0 in cops or 4 in cops:
            cop_base = 0 if 0 in cops else 1
        else:
            raise BuildError(f"{path}: field 'cop' only holds values 1-3, so it cannot tell 1-based (original) "
                             "from 0-based (HF copy); pass --cop_base")
    out = []
    for where, rec in rows:
        index = rec["cop"] - cop_base
        if not 0 <= index < 4:
            raise BuildError(f"{where}: field 'cop'={rec['cop']} is out of range for cop_base={cop_base}")
        options = "\n".join(f"{letter}. {_field(rec, key, where)}" for letter, key in
                            zip("ABCD", ("opa", "opb", "opc", "opd")))
        query = T.MEDMCQA.format(text=_question(_field(rec, "question", where)), options=options)
        out.append(_choice_record("MedMCQA", len(out), query, MEDMCQA.default_choices[index],
                                  MEDMCQA.default_choices))
    return out


# ---------------------------------------------------------------- DDI (XML)
def _span(offset: str, where: str) -> tuple[int, int]:
    """charOffset "s-e" (inclusive) or discontinuous "s1-e1;s2-e2" -> [first start, last end + 1)."""
    try:
        parts = [tuple(int(x) for x in p.split("-")) for p in offset.split(";")]
        return parts[0][0], parts[-1][1] + 1
    except (ValueError, IndexError) as e:
        raise BuildError(f"{where}: bad charOffset {offset!r}") from e


def ddi_sentence(text: str, spans: list[tuple[int, int]]) -> str:
    """The sentence with the pair's two drug mentions replaced by @DRUG$ (the released input form)."""
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + "@DRUG$" + text[end:]
    return text


def ddi2013(path: str) -> list[dict]:
    files = sorted(glob.glob(os.path.join(path, "**", "*.xml"), recursive=True)) if os.path.isdir(path) else [path]
    if not files:
        raise BuildError(f"{path}: no .xml files")
    out = []
    for file in files:
        try:
            root = etree.parse(file).getroot()
        except etree.XMLSyntaxError as e:
            raise BuildError(f"{file}: not valid XML ({e})") from e
        for sentence in root.iter("sentence"):
            text = sentence.get("text", "")
            spans = {e.get("id"): _span(e.get("charOffset", ""), f"{file}:{e.get('id')}")
                     for e in sentence.iter("entity")}
            for pair in sentence.iter("pair"):
                where = f"{file}:{pair.get('id')}"
                if pair.get("e1") not in spans or pair.get("e2") not in spans:
                    raise BuildError(f"{where}: pair refers to an entity not in its sentence")
                label = "DDI-false" if pair.get("ddi") == "false" else f"DDI-{pair.get('type')}"
                _label(label, DDI2013.default_choices, "type", where)
                query = T.DDI2013.format(text=ddi_sentence(text, [spans[pair.get("e1")], spans[pair.get("e2")]]))
                out.append(_choice_record("DDI2013", len(out), query, label, DDI2013.default_choices))
    return out


# ---------------------------------------------------------------- HoC, NLI, summaries
def _table_rows(path: str) -> Iterator[tuple[str, dict]]:
    if path.endswith(".jsonl"):
        yield from _jsonl(path)
        return
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.DictReader(f, delimiter="\t"), start=2):
            yield f"{path}:{lineno}", row


def hoc(path: str) -> list[dict]:
    out = []
    for where, rec in _table_rows(path):
        labels = _field(rec, "labels", where)
        hot = [0] * len(HALLMARKS)
        for label in labels.strip("\n").split(";"):
            hot[_label(label, HALLMARKS, "labels", where)] = 1
        out.append({"id": f"HoC{len(out)}", "query": T.HOC.format(text=_field(rec, "text", where)),
                    "answer": labels, "choices": list(HALLMARKS), "gold": hot})
    return out


def mtsample(path: str) -> list[dict]:
    """MTSamples `mtsamples.csv` (Kaggle): transcription -> medical_specialty (its leading space dropped)."""
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, rec in enumerate(csv.DictReader(f), start=2):
            where = f"{path}:{lineno}"
            answer = _field(rec, "medical_specialty", where).strip()
            _label(answer, T.MTSAMPLE_CHOICES, "medical_specialty", where)
            out.append(_choice_record("MTSample", len(out), T.MTSAMPLE.format(text=_field(rec, "transcription", where)),
                                      answer, T.MTSAMPLE_CHOICES))
    return out


def mednli(path: str) -> list[dict]:
    out = []
    for where, rec in _jsonl(path):
        answer = _field(rec, "gold_label", where)
        _label(answer, MEDNLI.default_choices, "gold_label", where)
        text = "[PRE] " + _field(rec, "sentence1", where) + " [HYP] " + _field(rec, "sentence2", where)
        out.append(_choice_record("MedNLI", len(out), T.MEDNLI.format(text=text), answer, MEDNLI.default_choices))
    return out


def pubmed_sum(path: str) -> list[dict]:
    return [{"id": f"PubmedSumm{i}", "query": T.PUBMED_SUM.format(text=_field(rec, "src", where)),
             "answer": _field(rec, "tgt", where)} for i, (where, rec) in enumerate(_jsonl(path))]


def _sentences(rec: dict, name: str, where: str) -> str:
    value = _field(rec, name, where, (list, str))
    return " ".join(value) if isinstance(value, list) else value


def mimic_cxr(path: str) -> list[dict]:
    return [{"id": f"MIMIC_SUM{i}", "query": T.MIMIC_CXR.format(text=_sentences(rec, "findings", where)),
             "answer": _sentences(rec, "impression", where)} for i, (where, rec) in enumerate(_jsonl(path))]


BUILDERS: dict[str, Callable[..., list[dict]]] = {
    "pubmedqa": pubmedqa, "medqa": medqa, "medmcqa": medmcqa, "ddi2013": ddi2013, "hoc": hoc,
    "mednli": mednli, "mtsample": mtsample, "pubmed_sum": pubmed_sum, "mimic_cxr": mimic_cxr,
}


def write_records(records: list[dict], out_dir: str, task: str) -> str:
    """OUT/<task>.jsonl, written to a temporary file and renamed (never a half-written file)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{task}.jsonl")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)
    return path
