"""MIMIC clinical notes: MIMIC-III NOTEEVENTS, MIMIC-IV-Note discharge / radiology (CSV), MIMIC-CXR (.txt).

CSV files are read as a stream with the `csv` module (quoted fields span lines; `""` is a quote), .csv.gz
decompressed on the fly. The schema is told by the header:

    MIMIC-III  ROW_ID,SUBJECT_ID,HADM_ID,CHARTDATE,CHARTTIME,STORETIME,CATEGORY,DESCRIPTION,CGID,ISERROR,TEXT
    MIMIC-IV   note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text

Cleaning: MIMIC-III rows with ISERROR = 1 ("a physician has identified this note as an error") are dropped
(counted as `iserror`); line endings become "\\n"; leading/trailing whitespace is stripped; de-identification
placeholders follow the source's `deid` rule (DEID_RULES). MIMIC-CXR reports (files/pNN/p<subject>/s<study>.txt,
one per study) have each line stripped and runs of blank lines collapsed to one.
Metadata: note_id (MIMIC-III ROW_ID), subject_id, hadm_id, category (MIMIC-III CATEGORY / MIMIC-IV
note_type), description, note_seq, chartdate, charttime; MIMIC-CXR: subject_id, study_id.
"""
from __future__ import annotations

import collections
import csv
import io
import os
import re

from mellama_jax.data import errors as E
from mellama_jax.data.errors import DamagedFile, DataError, DataReport
from mellama_jax.data.readers.common import damaged, open_binary, record_where

NOTE_METADATA = ("note_id", "subject_id", "hadm_id", "category", "description", "note_seq", "chartdate",
                 "charttime")
CXR_METADATA = ("subject_id", "study_id")
# MIMIC-III placeholder, e.g. [**Hospital1 18**], [**First Name8 (NamePattern2) **], [**2151-7-16**].
DEID_RULES = ("keep", "mask", "label")
_PLACEHOLDER = re.compile(r"\[\*\*(.*?)\*\*\]")
_PARENS = re.compile(r"\([^)]*\)")
_LABEL_WORD = re.compile(r"[A-Za-z][A-Za-z/]*")
_DATE_LIKE = re.compile(r"^[\d\s/\-:]+$")
# Column → metadata name, per schema; "text" and "iserror" are read, not kept as metadata.
_III = {"ROW_ID": "note_id", "SUBJECT_ID": "subject_id", "HADM_ID": "hadm_id", "CATEGORY": "category",
        "DESCRIPTION": "description", "CHARTDATE": "chartdate", "CHARTTIME": "charttime", "TEXT": "text",
        "ISERROR": "iserror"}
_IV = {"note_id": "note_id", "subject_id": "subject_id", "hadm_id": "hadm_id", "note_type": "category",
       "note_seq": "note_seq", "charttime": "charttime", "text": "text"}
# Notes run to tens of KB in one field (the csv module's default limit is 128 KiB).
_FIELD_LIMIT = 1 << 30


def deidentify(text: str, rule: str) -> str:
    """keep: verbatim; mask: each placeholder → "___" (MIMIC-IV's own convention, so both corpora read alike);
    label: → "[**<kind>**]", digits and parenthesised parts removed ("[**Hospital1 18**]" → "[**Hospital**]"),
    a placeholder holding only a date → "[**Date**]", only a number → "[**Number**]"."""
    if rule == "keep":
        return text
    if rule == "mask":
        return _PLACEHOLDER.sub("___", text)

    def label(m: re.Match) -> str:
        inner = m.group(1).strip()
        kind = " ".join(_LABEL_WORD.findall(_PARENS.sub(" ", inner)))
        if not kind:
            kind = "Date" if _DATE_LIKE.match(inner) and re.search(r"[/\-]", inner) else "Number"
        return f"[**{kind}**]"

    return _PLACEHOLDER.sub(label, text)


def _schema(header: list[str], path: str) -> dict:
    cols = set(header)
    if {"ROW_ID", "TEXT"} <= cols:
        return _III
    if {"note_id", "text"} <= cols:
        return _IV
    raise DataError(f"{path}:1: header {header[:12]} is neither MIMIC-III NOTEEVENTS (ROW_ID, ..., TEXT) nor "
                    f"MIMIC-IV-Note (note_id, ..., text)")


def _utf8(text: str, where: str, report: DataReport) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError as e:
        report.add(E.NOT_UTF8, where, f"invalid UTF-8 byte {text[e.start].encode('utf-8', 'surrogateescape')!r}")
        return False


def read_notes(path: str, options, report: DataReport, dropped: collections.Counter):
    """(row index, record, where) per note; `where` names the file, the row index (0-based, header not counted)
    and the note's ROW_ID / note_id. Problems are reported at the CSV line they start on."""
    rule = getattr(options, "deid", "keep")
    csv.field_size_limit(_FIELD_LIMIT)
    index = kept = 0
    with open_binary(path) as raw:
        f = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{path}:1: unreadable CSV header ({e})") from e
        schema = _schema(header, path)
        id_name = "ROW_ID" if schema is _III else "note_id"
        cols = [(i, schema[h]) for i, h in enumerate(header) if h in schema]
        prev = reader.line_num
        while True:
            line = prev + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                report.add(E.MALFORMED_CSV, f"{path}:{line}", f"bad CSV quoting ({e})")
                prev = reader.line_num
                continue
            except DamagedFile as e:
                damaged(report, path, e, kept)
                return
            prev = reader.line_num
            if not row:
                continue  # a blank line is no record
            n, index = index, index + 1
            if len(row) != len(header):
                report.add(E.MALFORMED_CSV, f"{path}:{line}", f"{len(row)} fields, the header has {len(header)}")
                continue
            rec = {name: (row[i] if row[i] != "" else None) for i, name in cols}
            if (rec.pop("iserror", None) or "").strip() == "1":
                dropped["iserror"] += 1
                continue
            text = rec.get("text") or ""
            if not _utf8(text, f"{path}:{line}", report):
                continue
            rec["text"] = deidentify(text.replace("\r\n", "\n").replace("\r", "\n").strip(), rule)
            kept += 1
            yield n, rec, record_where(path, n, id_name, rec.get("note_id"))


def clean_report(text: str) -> str:
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").split("\n")]
    out: list[str] = []
    for ln in lines:
        if ln or (out and out[-1]):
            out.append(ln)
    return "\n".join(out).strip()


def read_cxr(path: str, options, report: DataReport, dropped: collections.Counter):
    with open_binary(path) as f:
        data = f.read()
    where = f"{path}:1"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        report.add(E.NOT_UTF8, where, f"invalid UTF-8 at byte {e.start}")
        return
    subject = os.path.basename(os.path.dirname(path))
    study = os.path.basename(path).split(".")[0]
    meta = {"subject_id": subject[1:] if re.fullmatch(r"p\d+", subject) else None,
            "study_id": study[1:] if re.fullmatch(r"s\d+", study) else study}
    yield 1, {"text": deidentify(clean_report(text), getattr(options, "deid", "keep")), **meta}, where
