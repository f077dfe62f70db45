"""PubMed baseline / update XML (NLM PubMed DTD: PubmedArticleSet/PubmedArticle/MedlineCitation).

Document text: the ArticleTitle, a blank line, then each Abstract/AbstractText on its own line, prefixed
with its `Label` attribute when the abstract is structured ("METHODS: ..."). Inline markup (<i>, <sup>,
<sub>, MathML) contributes its text. CopyrightInformation and OtherAbstract are not text. Citations without
an abstract are dropped (counted as `no_abstract`): a bare title is not an abstract corpus document.
Metadata: pmid, journal (ISO abbreviation), year, language.
"""
from __future__ import annotations

import collections

from lxml import etree

from mellama_jax.data import errors as E
from mellama_jax.data.errors import DataReport
from mellama_jax.data.readers.common import is_empty, iterparse, open_binary, release, squash

METADATA = ("pmid", "journal", "year", "language")


def _text(el) -> str:
    return squash("".join(el.itertext())) if el is not None else ""


def citation_text(article) -> tuple[str, dict]:
    """(text, metadata) of one PubmedArticle element; text is '' when the citation has no abstract."""
    cit = article.find("MedlineCitation")
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


def read(path: str, options, report: DataReport, dropped: collections.Counter):
    if is_empty(path):
        return
    with open_binary(path) as f:
        yield from _read(f, path, report, dropped)


def _read(f, path: str, report: DataReport, dropped: collections.Counter):
    try:
        for _, article in iterparse(f, "PubmedArticle"):
            line = article.sourceline or 0
            text, meta = citation_text(article)
            release(article)
            if not text:
                dropped["no_abstract"] += 1
                continue
            yield line, {"text": text, **meta}, f"{path}:{line}"
    except etree.XMLSyntaxError as e:
        # libxml2 cannot resume after a syntax error: the citations before it are kept, the rest of the file
        # is reported as one problem at the line libxml2 names.
        report.add(E.MALFORMED_XML, f"{path}:{e.lineno}", f"not well-formed XML ({e.msg}); rest of the file skipped")
