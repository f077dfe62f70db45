"""Helpers shared by the source readers: opening (.gz) files, XML text extraction, whitespace, the XML record loop."""
from __future__ import annotations

import contextlib
import gzip
import re
import zlib

from lxml import etree

from mellama_jax import paths
from mellama_jax.data import errors as E
from mellama_jax.data.errors import DamagedFile, DataError

CHUNK = 1 << 20
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:)\]])")


_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


class _Gunzip(gzip.GzipFile):
    """gzip.GzipFile whose read errors name the file: a cut download otherwise ends in a bare
    "EOFError: Compressed file ended before the end-of-stream marker was reached" deep in a worker."""

    def __init__(self, path: str, fileobj):
        super().__init__(fileobj=fileobj, mode="rb")
        self._path = path

    def _checked(self, read, *args):
        try:
            return read(*args)
        except _GZIP_ERRORS as e:
            raise DamagedFile(f"{self._path}: {E.DAMAGED_FILE}: the compressed file is cut short or corrupt ({e}); "
                              f"download it again") from e

    def read(self, size=-1):
        return self._checked(super().read, size)

    def read1(self, size=-1):
        return self._checked(super().read1, size)

    def peek(self, n):
        return self._checked(super().peek, n)

    def readline(self, size=-1):
        return self._checked(super().readline, size)


@contextlib.contextmanager
def open_binary(path: str):
    """A binary file object of a local or object-storage path (gs://: streamed by the path layer), gunzipped
    when the name ends in .gz (a cut or corrupt file raises DamagedFile naming it)."""
    with paths.open_file(path, "rb") as raw:
        if path.lower().endswith(".gz"):
            with _Gunzip(path, raw) as f:
                yield f
        else:
            yield raw


def damaged(report, path: str, error: DamagedFile, kept: int) -> None:
    """Report a damaged compressed file once: raised in strict mode; otherwise counted like a malformed record,
    the `kept` documents read before the damage kept and the rest of the file skipped."""
    detail = str(error).split(f"{E.DAMAGED_FILE}: ", 1)[-1]
    report.add(E.DAMAGED_FILE, path, f"{detail}; {kept} record(s) before it kept, the rest of the file skipped")


def record_where(path: str, index: int, id_name: str | None = None, id_value=None) -> str:
    """A record's provenance: file, record index in the file (0-based) and the source's own id, e.g.
    "pubmed25n0001.xml.gz:record 3 (PMID 31452104)". Not the line: PubMed E-utilities files hold several
    articles on one line, and a line number does not name a record."""
    where = f"{path}:record {index}"
    return f"{where} ({id_name} {id_value})" if id_value not in (None, "") else where


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
    """Text of `el` and its descendants, leaving out subtrees for which `skip(child)` is true (their tail kept).
    `skip` may return a string to stand in for the subtree (e.g. a marker where a citation was)."""
    parts = [el.text or ""]
    for child in el:
        if isinstance(child.tag, str):
            left_out = skip(child)
            if not left_out:
                parts.append(inner_text(child, skip))
            elif isinstance(left_out, str):
                parts.append(left_out)
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


def xml_documents(path: str, tag, to_text, report, dropped, empty_reason: str, accept=lambda el: True,
                  id_field: tuple[str, str] | None = None, layouts=None):
    """(record index, {"text", **metadata}, where) for each `tag` element (a tag or a tuple of tags) of an
    XML (.gz) file; `where` names the file, the record index and the id in metadata field `id_field[0]`
    (shown as `id_field[1]`).

    `to_text(el)` gives (text, metadata); elements with no text are counted in `dropped[empty_reason]`;
    `accept(el)` False skips an element. Each element is released once read, so memory stays flat.
    libxml2 cannot resume after a syntax error: the documents before it are kept, the rest of the file is
    reported as one problem at the line libxml2 names. A file in which no record is found although it holds
    XML is checked against `layouts` ({root element: record element}): an unknown root is an error naming the
    layout found and the ones expected."""
    if is_empty(path):
        return
    index = 0
    with open_binary(path) as f:
        try:
            for _, el in iterparse(f, tag):
                if not accept(el):
                    continue
                text, meta = to_text(el)
                release(el)
                i, index = index, index + 1
                if not text:
                    dropped[empty_reason] += 1
                    continue
                where = record_where(path, i, *(id_field[1], meta.get(id_field[0])) if id_field else ())
                yield i, {"text": text, **meta}, where
        except etree.XMLSyntaxError as e:
            report.add(E.MALFORMED_XML, f"{path}:{e.lineno}", f"not well-formed XML ({e.msg}); rest of the file skipped")
            return
        except DamagedFile as e:
            damaged(report, path, e, index)
            return
    if index == 0 and layouts:
        root = root_element(path)
        if root is not None and root not in layouts:
            expected = " or ".join(f"<{r}> holding <{t}> records" for r, t in layouts.items())
            raise DataError(f"{path}: the root element is <{root}>; expected {expected}")


def root_element(path: str) -> str | None:
    """Local name of the file's root element (None when there is none before the file ends)."""
    parser = etree.XMLPullParser(events=("start",), load_dtd=False, no_network=True, resolve_entities=False)
    with open_binary(path) as f:
        while chunk := f.read(1 << 16):
            try:
                parser.feed(chunk)
            except etree.XMLSyntaxError:
                return None
            for _, el in parser.read_events():
                return local(el)
    return None
