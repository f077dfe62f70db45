"""The source readers on real PubMed / PMC files (tests/assets/pubmed_pmc, see its README), and on the damage
real downloads show: a cut .xml.gz / .csv.gz, several E-utilities articles on one line, the pre-2017 MEDLINE
layout."""
import collections
import gzip
import re

import pytest

from mellama_jax.data import errors as E
from mellama_jax.data import readers
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.sources import SourceConfig

ASSETS = "tests/assets/pubmed_pmc"
# What removed citations must not leave behind: ",,", ", .", "data;)", "( ;", "()", "[]".
LEFTOVER = re.compile(r",\s*[,.;]|[;,]\s*[)\]]|[(\[]\s*[,;)\]]")


def _read(fmt, path, strict=True):
    report, dropped = DataReport(strict=strict), collections.Counter()
    return list(readers.read(fmt, path, SourceConfig(path, format=fmt), report, dropped)), report


@pytest.mark.parametrize("name, kept", [
    ("pone.0046493", "during the infection process and in vitro, under stress conditions. Additionally"),
    ("ehp-116-1694", "(Lema SC, Dickey JT, Schultz IR, Swanson P, unpublished data). This autoinduction"),
    ("1471-2180-11-174", "coefficient of variation (CV, defined as SD/MLT) (F"),
])
def test_pmc_citations_leave_no_punctuation_behind(name, kept):
    recs, _ = _read("pmc_jats", f"{ASSETS}/{name}.nxml.gz")
    (_, rec, where), = recs
    text = rec["text"]
    assert kept in text
    assert not [text[max(0, m.start() - 30):m.end() + 10] for m in LEFTOVER.finditer(text)]
    assert where == f"{ASSETS}/{name}.nxml.gz:record 0 (PMCID {rec['pmcid']})"


def _pubmed_article() -> str:
    xml = open(f"{ASSETS}/pubmed-29768149.xml").read()
    return xml[xml.index("<PubmedArticle>"):xml.index("</PubmedArticle>") + len("</PubmedArticle>")]


def test_eutilities_articles_on_one_line_have_their_own_provenance(tmp_path):
    """efetch output may put several articles on one line: each document names its record and PMID."""
    article = _pubmed_article()
    want, _ = _read("pubmed_xml", f"{ASSETS}/pubmed-29768149.xml")
    assert want[0][1]["text"].startswith("Inhaled Combined Budesonide-Formoterol as Needed in Mild Asthma.\n\n"
                                         "BACKGROUND: In patients with mild asthma")
    copies = [article.replace("29768149</PMID>", f"{pmid}</PMID>") for pmid in ("29768149", "29768150", "29768151")]
    path = tmp_path / "efetch.xml"
    path.write_text('<?xml version="1.0" ?><PubmedArticleSet>' + "".join(c.replace("\n", " ").replace("\t", "")
                                                                         for c in copies) + "</PubmedArticleSet>")
    recs, _ = _read("pubmed_xml", str(path))
    assert [where for _, _, where in recs] == [f"{path}:record {i} (PMID {p})"
                                               for i, p in enumerate(("29768149", "29768150", "29768151"))]
    assert len({i for i, _, _ in recs}) == 3  # the held-out hash sees three records, not one line


def test_medline_citation_set_layout_and_unknown_layout_named(tmp_path):
    """MEDLINE baselines up to 2016: <MedlineCitationSet><MedlineCitation>, no <PubmedArticle> wrapper."""
    article = _pubmed_article()
    citation = article[article.index("<MedlineCitation "):article.index("</MedlineCitation>") + len("</MedlineCitation>")]
    old = tmp_path / "medline16n0001.xml.gz"
    old.write_bytes(gzip.compress(f'<?xml version="1.0"?>\n<MedlineCitationSet>\n{citation}\n</MedlineCitationSet>\n'
                                  .encode()))
    want, _ = _read("pubmed_xml", f"{ASSETS}/pubmed-29768149.xml")
    got, _ = _read("pubmed_xml", str(old))
    assert [r for _, r, _ in got] == [r for _, r, _ in want] and got[0][1]["pmid"] == "29768149"
    other = tmp_path / "other.xml"
    other.write_text("<eSummaryResult><DocSum><Id>29768149</Id></DocSum></eSummaryResult>")
    with pytest.raises(DataError, match=f"{other}: the root element is <eSummaryResult>; expected <PubmedArticleSet> "
                                        "holding <PubmedArticle> records or <MedlineCitationSet> holding"):
        _read("pubmed_xml", str(other))


def _cut(data: bytes) -> bytes:
    packed = gzip.compress(data)
    return packed[:len(packed) * 3 // 4]  # an interrupted download: the stream's end is missing


def test_truncated_xml_gz_and_csv_gz_one_error_naming_the_file(tmp_path):
    xml = open(f"{ASSETS}/pubmed-29768149.xml", "rb").read()
    article = _pubmed_article().encode()
    body = xml.replace(article, article * 200)  # several MiB: whole 1 MiB chunks come before the cut
    cut_xml = tmp_path / "pubmed25n0002.xml.gz"
    cut_xml.write_bytes(_cut(body))
    rows = "".join(f'{i},1,2,2100-01-01,,,Nursing/other,Report,,,"note {i} {"x" * 200}"\n' for i in range(400))
    csv = ("ROW_ID,SUBJECT_ID,HADM_ID,CHARTDATE,CHARTTIME,STORETIME,CATEGORY,DESCRIPTION,CGID,ISERROR,TEXT\n"
           + rows).encode()
    cut_csv = tmp_path / "NOTEEVENTS.csv.gz"
    cut_csv.write_bytes(_cut(csv))
    for fmt, path in (("pubmed_xml", cut_xml), ("mimic_notes_csv", cut_csv)):
        with pytest.raises(DataError, match=rf"^{path}: damaged_file: the compressed file is cut short") as e:
            _read(fmt, str(path))
        assert "\n" not in str(e.value)
        recs, report = _read(fmt, str(path), strict=False)  # lenient: counted once, the records before it kept
        assert report.counts == {E.DAMAGED_FILE: 1} and 0 < len(recs) < (200 if fmt == "pubmed_xml" else 400)
        assert report.examples[E.DAMAGED_FILE][0].where == str(path)


@pytest.fixture(scope="module")
def llama_tok():
    from mellama_jax.data.tokenizer import Tokenizer
    return Tokenizer.load("tests/assets/llama2-tokenizer/tokenizer.model")


def _cut_source_config(tmp_path):
    xml = open(f"{ASSETS}/pubmed-29768149.xml", "rb").read()
    article = _pubmed_article().encode()
    cut = tmp_path / "src" / "pubmed25n0003.xml.gz"
    cut.parent.mkdir()
    cut.write_bytes(_cut(xml.replace(article, article * 200)))
    return str(cut), dict(components=[dict(name="biomedical", weight=1.0, sources=[
        dict(path=f"{ASSETS}/pubmed-29768149.xml", format="pubmed_xml"), dict(path=str(cut), format="pubmed_xml")])])


RUNNERS = {"local": dict(workers=1),
           "beam": dict(runner="beam", beam_options=["--runner=DirectRunner"])}


@pytest.mark.parametrize("runner", ["local", pytest.param("beam", marks=pytest.mark.beam)])
def test_prepare_with_a_cut_download_one_error_and_nothing_complete(llama_tok, tmp_path, runner):
    from mellama_jax.data.prepare import prepare_corpus
    if runner == "beam":
        pytest.importorskip("apache_beam")
    cut, cfg = _cut_source_config(tmp_path)
    out = tmp_path / "corpus"
    with pytest.raises(DataError) as e:
        prepare_corpus(dict(cfg, strict=True), llama_tok, str(out), show_progress=False, **RUNNERS[runner])
    assert str(e.value).startswith(f"{cut}: damaged_file: the compressed file is cut short") and "\n" not in str(e.value)
    assert not out.exists()  # nothing written that could look complete
    # lenient: the cut file is one bad-input entry, the documents before the cut are kept
    report = prepare_corpus(cfg, llama_tok, str(out), show_progress=False, **RUNNERS[runner])
    assert report["bad_input"]["counts"] == {E.DAMAGED_FILE: 1}
    assert 1 < report["components"]["biomedical"]["train"]["documents"] < 201


def test_beam_worker_traceback_becomes_the_workers_one_line_error():
    """Beam runners in other processes hand back a worker's DataError as a RuntimeError holding its traceback."""
    from mellama_jax.data.prepare import _data_error_of
    text = ('Traceback (most recent call last):\n  File "apache_beam/runners/common.py", line 1512, in process\n'
            'mellama_jax.data.errors.DamagedFile: /d/pubmed25n0003.xml.gz: damaged_file: cut short '
            "[while running 'TokenizeBiomedicalTrain']\n\nDuring handling ...")
    assert str(_data_error_of(RuntimeError(text))) == "/d/pubmed25n0003.xml.gz: damaged_file: cut short"
    assert _data_error_of(RuntimeError("worker lost")) is None
