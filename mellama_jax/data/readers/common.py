"""Helpers shared by the source readers: opening (.gz) files, XML text extraction, whitespace, the XML record loop."""
from __future__ import annotations

import contextlib
import gzip
import re

from lxml import etree

from mellama_jax import paths
from mellama_jax.data import errors as E

CHUNK = 1 << 20
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:)\]])")


@contextlib.contextmanager
def open_binary(path: str):
    """A binary file object of a local or object-storage path (gs://: streamed by the path layer), gunzipped
    when the name ends in .gz."""
    with paths.open_file(path, "rb") as raw:
        if path.lower().endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield f
        else:
            yield raw


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


def xml_documents(path: str, tag: str, to_text, report, dropped, empty_reason: str, accept=lambda el: True):
    """(line, {"text", **metadata}, "path:line") for each `tag` element of an XML (.gz) file.

    `to_text(el)` gives (text, metadata); elements with no text are counted in `dropped[empty_reason]`;
    `accept(el)` False skips an element. Each element is released once read, so memory stays flat.
    libxml2 cannot resume after a syntax error: the documents before it are kept, the rest of the file is
    reported as one problem at the line libxml2 names."""
    if is_empty(path):
        return
    with open_binary(path) as f:
        try:
            for _, el in iterparse(f, tag):
                if not accept(el):
                    continue
                line = el.sourceline or 0
                text, meta = to_text(el)
                release(el)
                if not text:
                    dropped[empty_reason] += 1
                    continue
                yield line, {"text": text, **meta}, f"{path}:{line}"
        except etree.XMLSyntaxError as e:
            report.add(E.MALFORMED_XML, f"{path}:{e.lineno}", f"not well-formed XML ({e.msg}); rest of the file skipped")
