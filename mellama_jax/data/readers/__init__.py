"""Streaming readers of the corpus's own source formats, for corpus preparation (prepare.py).

    pubmed_xml          PubMed annual baseline / update files (pubmed25n0001.xml.gz): one document per citation
    pmc_jats            PubMed Central articles in JATS XML (.nxml / .xml[.gz]): one document per article
    mimic_notes_csv     MIMIC-III NOTEEVENTS.csv[.gz], MIMIC-IV-Note discharge / radiology .csv[.gz]
    mimic_cxr_reports   MIMIC-CXR free-text reports, one .txt per study (files/pXX/p<subject>/s<study>.txt)

Every reader yields `(index, record, where)`: `index` is the record's 0-based position in the file (used for
the held-out hash), `record` is `{"text": cleaned text, <metadata fields>}`, `where` names the file, the
record index and the source's own id ("NOTEEVENTS.csv.gz:record 17 (ROW_ID 174)"): a line does not name a
record (E-utilities put several articles on one line). Problems are reported at their `file:line`. The
metadata (PMID, note id, subject / admission ids, category, dates) never enters the text; prepare.py keeps it
in the corpus report. Malformed input is added to the `DataReport` with `file:line` (raised when strict), a compressed file cut
short as one `damaged_file` problem naming it;
documents removed by a documented cleaning rule (e.g. MIMIC-III `ISERROR` rows) are counted in `dropped`.
The cleaning rules are described in docs/corpus_sources.md.
"""
from __future__ import annotations

import collections
from typing import Iterator

from mellama_jax.data.errors import DataReport
from mellama_jax.data.readers import jats, mimic, pubmed

READERS = {
    "pubmed_xml": pubmed.read,
    "pmc_jats": jats.read,
    "mimic_notes_csv": mimic.read_notes,
    "mimic_cxr_reports": mimic.read_cxr,
}
# Metadata fields each reader attaches to its records (the corpus report summarises them).
METADATA = {
    "pubmed_xml": pubmed.METADATA,
    "pmc_jats": jats.METADATA,
    "mimic_notes_csv": mimic.NOTE_METADATA,
    "mimic_cxr_reports": mimic.CXR_METADATA,
}
# The metadata field that identifies a document to a person reading the report.
DOC_ID = {"pubmed_xml": "pmid", "pmc_jats": "pmcid", "mimic_notes_csv": "note_id", "mimic_cxr_reports": "study_id"}


def read(fmt: str, path: str, options, report: DataReport,
         dropped: collections.Counter) -> Iterator[tuple[int, dict, str]]:  # (index, record, where)
    """Records of one file of format `fmt` (a key of READERS); `options` is the SourceConfig."""
    return READERS[fmt](path, options, report, dropped)
