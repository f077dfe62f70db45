"""PubMed Central articles in JATS XML (the OA bulk `.nxml` files; one or more <article> per file).

Document text, blocks separated by a blank line: the article-title; the abstract (its section titles and
paragraphs; graphical / teaser abstracts left out); the body, section by section (section title, then its
paragraphs, nested sections in order). Left out: back matter (ref-list, acknowledgements, footnotes,
appendices), section labels/numbers, bibliographic cross-references ("[12]"), display formulas and TeX
(inline MathML keeps its text), supplementary
material, and, unless the source's `include` lists them, tables ("tables": caption, then one line per row
with cells separated by " | ") and figure captions ("captions"). Whitespace inside a paragraph is squashed.
Metadata: pmcid, pmid, doi, journal, year. Provenance: file, record index, PMCID.
"""
from __future__ import annotations

import collections
import re

from mellama_jax.data.errors import DataReport
from mellama_jax.data.readers.common import inner_text, local, xml_documents
from mellama_jax.data.readers.common import squash as _squash

METADATA = ("pmcid", "pmid", "doi", "journal", "year")
INCLUDE = ("tables", "captions")  # optional parts (SourceConfig.include)
# Never text: display formulas, TeX (inline MathML gives its text: "(<mml:mi>n</mml:mi> = 3)" → "(n = 3)"),
# media, labels ("2.1"), metadata blocks.
_SKIP = {"disp-formula", "tex-math", "supplementary-material", "label", "sec-meta", "graphic", "media",
         "inline-graphic", "ref-list", "fn-group", "object-id"}


# A bibliographic cross-reference is replaced by CITE while a block's text is gathered, so that what the
# citations leave behind can be cleaned knowing where they were. Real files cite in many ways:
#   "[<xref>1</xref>, <xref>2</xref>]", PLOS "<xref>[2]</xref>, <xref>[3]</xref>, and ..." (would leave
#   "process,,, and"), author-year "(unpublished data; <xref>Liu et al. 2000</xref>)" (would leave "data;)").
CITE = "\x1e"
_SEP = r"[\s,;\u2013\u2014-]"
# a run of citations separated only by punctuation / "and" → one
_CITE_RUN = re.compile(CITE + r"(?:" + _SEP + r"*(?:\band\b|&)?" + _SEP + r"*" + CITE + r")+")
# brackets holding only a citation (and separators): "[CITE]", "(CITE)" → CITE
_CITE_BRACKETS = re.compile(r"\s*[\[(]" + _SEP + r"*" + CITE + _SEP + r"*[\])]")
# what other removed inline parts leave: "[]", "[, ]", "()"
_EMPTY_BRACKETS = re.compile(r"\s*[\[(]" + _SEP + r"*[\])]")
# a citation closing a parenthetical after a separator: "(unpublished data; CITE)" → "(unpublished data)"
_CITE_BEFORE_CLOSE = re.compile(r"[\s,;]*" + CITE + r"\s*(?=[\])])")
_CITE_AFTER_OPEN = re.compile(r"(?<=[\[(])\s*" + CITE + r"[\s,;]*")


def squash(text: str) -> str:
    if CITE in text:
        text = _CITE_RUN.sub(CITE, text)
        text = _CITE_RUN.sub(CITE, _CITE_BRACKETS.sub(CITE, text))
        text = _CITE_BEFORE_CLOSE.sub("", text)
        text = _CITE_AFTER_OPEN.sub("", text)
        text = re.sub(r"\s*" + CITE, "", text)  # in running text: "process CITE, and" → "process, and"
    return _squash(_EMPTY_BRACKETS.sub("", text))


def _skip_inline(child) -> bool | str:
    tag = local(child)
    if tag == "xref" and child.get("ref-type") == "bibr":
        return CITE
    return tag in _SKIP or tag in ("table-wrap", "table-wrap-group", "fig", "fig-group")


def _table(tw) -> list[str]:
    lines = []
    caption = tw.find(".//{*}caption")
    if caption is not None:
        lines.append(squash(inner_text(caption, _skip_inline)))
    for tr in tw.iter("{*}tr"):
        cells = [squash(inner_text(c, _skip_inline)) for c in tr if local(c) in ("td", "th")]
        if any(cells):
            lines.append(" | ".join(cells))
    return ["\n".join(x for x in lines if x)] if lines else []


def _optional(el, include) -> list[str]:
    tag = local(el)
    if tag in ("table-wrap", "table-wrap-group") and "tables" in include:
        return _table(el)
    if tag in ("fig", "fig-group") and "captions" in include:
        return [squash(inner_text(c, _skip_inline)) for c in el.iter("{*}caption")]
    return []


def blocks(el, include, out: list[str]) -> list[str]:
    """Titles and paragraphs under `el` in document order (see module doc for what is left out)."""
    for child in el:
        tag = local(child)
        if not tag or tag in _SKIP:
            continue
        if tag == "title":
            out.append(squash(inner_text(child, _skip_inline)))
        elif tag == "p":
            out.append(squash(inner_text(child, _skip_inline)))
            for nested in child.iter("{*}table-wrap", "{*}fig"):  # floats anchored inside a paragraph
                out.extend(_optional(nested, include))
        elif tag in ("table-wrap", "table-wrap-group", "fig", "fig-group"):
            out.extend(_optional(child, include))
        else:  # sec, list, boxed-text, statement, ...: containers of the above
            blocks(child, include, out)
    return out


def article_text(article, include=()) -> tuple[str, dict]:
    meta_el = article.find("{*}front/{*}article-meta")
    ids = {}
    if meta_el is not None:
        for aid in meta_el.findall("{*}article-id"):
            ids.setdefault(aid.get("pub-id-type"), (aid.text or "").strip())
    journal = article.find("{*}front/{*}journal-meta")
    year = meta_el.findtext("{*}pub-date/{*}year") if meta_el is not None else None
    title = None
    if journal is not None:
        title = journal.findtext("{*}journal-title-group/{*}journal-title") or journal.findtext("{*}journal-id")
    meta = {"pmcid": ids.get("pmc") or ids.get("pmcid"), "pmid": ids.get("pmid"), "doi": ids.get("doi"),
            "journal": title, "year": year}
    out: list[str] = []
    if meta_el is not None:
        title = meta_el.find("{*}title-group/{*}article-title")
        if title is not None:
            out.append(squash(inner_text(title, _skip_inline)))
        for ab in meta_el.findall("{*}abstract"):
            if ab.get("abstract-type") in (None, "summary", "structured"):
                blocks(ab, include, out)
    body = article.find("{*}body")
    if body is not None:
        blocks(body, include, out)
    return "\n\n".join(b for b in out if b), meta


def _top_level(article) -> bool:
    """An <article> nested in another element (e.g. a sub-article's host) is part of its parent."""
    parent = article.getparent()
    return parent is None or local(parent) in ("pmc-articleset", "")


def read(path: str, options, report: DataReport, dropped: collections.Counter):
    include = tuple(getattr(options, "include", ()) or ())
    return xml_documents(path, "{*}article", lambda a: article_text(a, include), report, dropped, "no_text",
                         accept=_top_level, id_field=("pmcid", "PMCID"), layouts={"article": "article",
                                                                                  "pmc-articleset": "article"})
