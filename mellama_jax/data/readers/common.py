"""Helpers shared by the source readers: opening (.gz) files, XML text extraction, whitespace."""
from __future__ import annotations

import gzip
import re

from lxml import etree

CHUNK = 1 << 20
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:)\]])")


def open_binary(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def is_empty(path: str) -> bool:
    with open_binary(path) as f:
        return not f.read(1)


def squash(text: str) -> str:
    """Runs of whitespace (incl. XML line breaks inside a paragraph) → one space; punctuation re-attached."""
    return _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACE.sub(" ", text)).strip()


def local(el) -> str:
    """Element tag without namespace ('' for comments / processing instructions)."""
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def inner_text(el, skip=lambda child: False) -> str:
    """Text of `el` and its descendants, leaving out subtrees for which `skip(child)` is true (their tail kept)."""
    parts = [el.text or ""]
    for child in el:
        if isinstance(child.tag, str) and not skip(child):
            parts.append(inner_text(child, skip))
        parts.append(child.tail or "")
    return "".join(parts)


def iterparse(f, tag: str):
    """The `tag` elements of an open binary XML file, as they end. A pull parser fed 1 MiB at a time: no DTD
    loading, no network, no entity expansion (XXE-safe). On a syntax error every element that ended before
    it is yielded first, then lxml's XMLSyntaxError (with its line number) is raised."""
    parser = etree.XMLPullParser(events=("end",), tag=tag, load_dtd=False, no_network=True,
                                 resolve_entities=False, huge_tree=True)
    while True:
        chunk = f.read(CHUNK)
        error = None
        try:
            if chunk:
                parser.feed(chunk)
            else:
                parser.close()
        except etree.XMLSyntaxError as e:
            error = e
        for _, el in parser.read_events():
            yield None, el
        if error is not None:
            raise error
        if not chunk:
            return


def release(el) -> None:
    """Free a processed element and the siblings before it, so memory stays flat over a 3 GB file."""
    el.clear(keep_tail=True)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]
