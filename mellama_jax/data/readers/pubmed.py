"""PubMed baseline / update XML (NLM PubMed DTD: PubmedArticleSet/PubmedArticle/MedlineCitation), and the
older MEDLINE layout (baselines up to 2016, NLM MEDLINE DTD: MedlineCitationSet/MedlineCitation, no
PubmedArticle wrapper). A file of another layout is refused naming its root element.

Document text: the ArticleTitle, a blank line, then each Abstract/AbstractText on its own line, prefixed
with its `Label` attribute when the abstract is structured ("METHODS: ..."). Inline markup (<i>, <sup>,
<sub>, MathML) contributes its text. CopyrightInformation and OtherAbstract are not text. Citations without
an abstract are dropped (counted as `no_abstract`): a bare title is not an abstract corpus document.
Metadata: pmid, journal (ISO abbreviation), year, language. Provenance: file, record index, PMID.
"""
from __future__ import annotations

import collections

from mellama_jax.data.errors import DataReport
from mellama_jax.data.readers.common import local, squash, xml_documents

METADATA = ("pmid", "journal", "year", "language")
# root element → record element, per layout (the current PubMed DTD; MEDLINE baselines up to 2016)
LAYOUTS = {"PubmedArticleSet": "PubmedArticle", "MedlineCitationSet": "MedlineCitation"}


def _text(el) -> str:
    return squash("".join(el.itertext())) if el is not None else ""


def citation_text(article) -> tuple[str, dict]:
    """(text, metadata) of one PubmedArticle (or bare MedlineCitation) element; text is '' when the citation
    has no abstract."""
    cit = article if local(article) == "MedlineCitation" else article.find("MedlineCitation")
    art = cit.find("Article") if cit is not None else None
    if art is None:
        return "", {}
    issue = art.find("Journal/JournalIssue/PubDate")
    year = issue.findtext("Year") if issue is not None else None
    if not year and issue is not None and issue.findtext("MedlineDate"):
        year = issue.findtext("MedlineDate")[:4]
    meta = {"pmid": (cit.findtext("PMID") or "").strip() or None,
            "journal": art.findtext("Journal/ISOAbbreviation") or art.findtext("Journal/Title"),
            "year": year, "language": art.findtext("Language")}
    sections = []
    for ab in art.findall("Abstract/AbstractText"):
        body = _text(ab)
        if body:
            label = (ab.get("Label") or "").strip()
            sections.append(f"{label}: {body}" if label else body)
    if not sections:
        return "", meta
    title = _text(art.find("ArticleTitle"))
    return (f"{title}\n\n" if title else "") + "\n".join(sections), meta


def _record(el) -> bool:
    """A PubmedArticle, or a MedlineCitation directly under MedlineCitationSet (the one inside a PubmedArticle
    is read with its article)."""
    if local(el) == "PubmedArticle":
        return True
    parent = el.getparent()
    return parent is not None and local(parent) == "MedlineCitationSet"


def read(path: str, options, report: DataReport, dropped: collections.Counter):
    return xml_documents(path, tuple(LAYOUTS.values()), citation_text, report, dropped, "no_abstract",
                         accept=_record, id_field=("pmid", "PMID"), layouts=LAYOUTS)
