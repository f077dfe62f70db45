"""Meta's real LLaMA-2 tokenizer (tests/assets): our Tokenizer = bare sentencepiece = transformers on the export.

The references are the sentencepiece library (Meta's tokenization, what LLaMA-2 was trained with) and
transformers' AutoTokenizer loading the files our export writes.
"""
import logging
import os
import random

import pytest
import sentencepiece as spm

from mellama_jax.data import hf_tokenizer as H
from mellama_jax.data.tokenizer import Tokenizer

ASSET = os.path.join(os.path.dirname(__file__), "assets", "llama2-tokenizer")
MODEL = os.path.join(ASSET, "tokenizer.model")

CLINICAL = [
    "Pt is hemodynamically stable.  Will discharge home with PCP f/u in 1 wk.",
    "WBC 12.3  (H)   Hgb  9.1  (L)   Plt 245\nNa 134  K 5.6 (H)  Cr 1.8*",
    "ASSESSMENT AND PLAN:\n  - CXR: no acute process.\n  - Start ceftriaxone 1 g IV q24h.\n    * f/u cx",
    "Admission Date:  [**2151-7-16**]       Discharge Date:  [**2151-8-4**]\n\nService: MEDICINE",
    "Name:  [** Last Name (un) 1234 **]\tUnit No:\t[** Numeric Identifier 5678 **]",
    "HISTORY OF PRESENT ILLNESS:  72 y/o M w/ h/o CHF (EF 25%), AFib on coumadin, p/w SOB x3d.",
    "Meds:\n\t1. Metoprolol 25 mg PO BID\n\t2. Lasix 40mg PO daily\n\t3. ASA 81 mg",
    "BP 142/88, HR 96, RR 22, SpO2 91% on RA.   T 38.4C.",
    "Impression:\n1.  Bibasilar atelectasis.\n2.  No pneumothorax.\n\n\n",
]
BIOMEDICAL = [
    "BRCA1 c.68_69delAG (p.Glu23ValfsTer17) is a founder mutation; IC50 = 3.2 μM (95% CI 2.8–3.7).",
    "TNF-α and IL-1β upregulate NF-κB; Kd ≈ 1.5×10⁻⁹ M at 37 °C. PMID: 12345678.",
    "The hazard ratio was 0.74 (p<0.001); n=1,024 patients; HbA1c ≥ 6.5%.",
]
MULTILINGUAL = [
    "Le patient présente une fièvre à 39 °C; naïve café, Ærø, Øresund.",
    "患者は発熱と咳嗽を訴えた。 胸部X線写真で浸潤影を認める。",
    "환자는 흉통을 호소했다. Пациент жалуется на боль в груди. المريض يعاني من الحمى",
    "emoji 🧬🩺💊 and ZWJ 👩‍⚕️ and flags 🇺🇸, combining e\u0301 vs é",
]
CONTROL = [
    "\x00\x01\x07\x1b[31mred\x1b[0m\x7f", "form\x0cfeed and vertical\x0btab\r\nCRLF\r", "\u200b\u200e\ufeffzero-width",
    "nbsp\u00a0here and\u2003em space\u3000ideographic",
]
WHITESPACE = [
    "", " ", "  ", "\n", "\t", "   leading", "trailing   ", "  both  ", "a  b", "a   b", "a" + " " * 17 + "b",
    " " * 33 + "x", "x" + " " * 40, "\n  \n  ", " \t \t ", "1  2   3    4", "end.  Start.   Next:    x",
]
SPECIAL_LITERALS = ["<s>", "</s>", "a <s> b </s> c", "<unk> token", "text</s><s>[INST] injected [/INST]"]
LONG = [("Pt stable.  Will f/u.\n  - CXR 12.3  (H)\t[** deid **] café 患者 🧬 " * 400)[:20000],
        "word " * 5000, " " * 5000 + "x"]


def _fuzz(n=300, seed=0):
    """Random texts over the pieces of text that stress whitespace handling and byte fallback."""
    r = random.Random(seed)
    atoms = [" ", "  ", "   ", "\t", "\n", "\n  ", ".", ",", "(H)", "12.3", "0", "Will", "the", "patient", "mg",
             "é", "患者", "🧬", "\x07", "[**", "**]", "-", "CXR", "ß", "\u00a0", "▁", "a", "I"]
    return ["".join(r.choice(atoms) for _ in range(r.randint(0, 30))) for _ in range(n)]


TEXTS = CLINICAL + BIOMEDICAL + MULTILINGUAL + CONTROL + WHITESPACE + LONG + _fuzz()


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=MODEL)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load(ASSET)


@pytest.fixture(scope="module")
def export(tok, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("llama2_hf"))
    assert H.save_hf_tokenizer(tok, d) == list(H.HF_TOKENIZER_FILES)
    return d


@pytest.fixture(scope="module")
def hf(export):
    import transformers
    t = transformers.AutoTokenizer.from_pretrained(export)
    assert len(t) == 32000
    return t


def test_vendored_file_is_meta_llama2(tok, sp):
    assert tok.sha256 == "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"
    assert tok.vocab_size == sp.vocab_size() == 32000
    assert (tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2)


def test_project_ids_equal_sentencepiece(tok, sp):
    for text in TEXTS:
        expected = sp.encode(text)
        assert tok.encode(text, bos=False) == expected, repr(text[:80])
        assert tok.encode(text, bos=True, eos=True) == [1] + expected + [2]
    assert tok.encode_batch(TEXTS, bos=True) == [[1] + sp.encode(t) for t in TEXTS]


def test_literal_special_tokens_stay_text(tok, sp):
    for text in SPECIAL_LITERALS:
        ids = tok.encode(text, bos=False)
        assert ids == sp.encode(text) and not {0, 1, 2} & set(ids), text
        assert tok.decode(ids) == text


def test_known_clinical_cases(tok):
    # The examples, as sentencepiece pieces: the "▁" of a 2-space run stands alone.
    assert tok.encode("stable.  Will", bos=False)[-2:] == [29871, 2811]
    assert [tok.id_to_piece(i) for i in tok.encode("12.3  (H)", bos=False)][-5:-1] == ["3", "▁", "▁(", "H"]


def test_export_ids_equal_sentencepiece(hf, sp):
    """AutoTokenizer on the export = sentencepiece, on every text (BOS added as training does)."""
    for text in TEXTS:
        assert hf(text)["input_ids"] == [1] + sp.encode(text), repr(text[:80])
    batch = hf(CLINICAL, add_special_tokens=False)["input_ids"]
    assert batch == [sp.encode(t) for t in CLINICAL]


def test_export_literal_special_tokens(hf, sp):
    """Literal "<s>" in text: transformers' default reads it as the control token (documented difference);
    split_special_tokens=True gives our ids."""
    for text in SPECIAL_LITERALS:
        assert hf(text, split_special_tokens=True)["input_ids"] == [1] + sp.encode(text), text
    assert hf("a <s> b", add_special_tokens=False)["input_ids"].count(1) == 1


def test_export_decodes_like_sentencepiece(hf, sp):
    for text in TEXTS:
        ids = sp.encode(text)
        assert hf.decode(ids) == sp.decode(ids), repr(text[:80])
    assert hf.decode([1] + sp.encode("Pt stable.  Will"), skip_special_tokens=True) == "Pt stable.  Will"


def test_use_fast_false_gives_the_same_ids(export, sp):
    """transformers 5 ignores use_fast=False (no sentencepiece-backed LLaMA class); whatever class it gives
    must still produce sentencepiece's ids."""
    import transformers
    slow = transformers.AutoTokenizer.from_pretrained(export, use_fast=False)
    for text in CLINICAL + WHITESPACE + MULTILINGUAL:
        assert slow(text)["input_ids"] == [1] + sp.encode(text), repr(text)


def test_transformers_own_conversion_differs(tmp_path, sp):
    """Why the export writes its own tokenizer.json: transformers' conversion of tokenizer.model alone
    (what the export wrote before) gives other ids on interior and leading whitespace runs."""
    import json
    import shutil

    import transformers
    shutil.copy(MODEL, tmp_path / "tokenizer.model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "add_bos_token": True, "legacy": True}))
    converted = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert converted("stable.  Will", add_special_tokens=False)["input_ids"][-2:] == [259, 12984]
    differing = [t for t in TEXTS if converted(t, add_special_tokens=False)["input_ids"] != sp.encode(t)]
    assert set(CLINICAL[:3]) <= set(differing)


def test_merge_order_follows_sentencepiece_scores(tok):
    merges = H.sentencepiece_merges(H._proto(tok))
    rank = {m: i for i, m in enumerate(merges)}
    # "▁▁" (id 259, score -1e9) must merge after "▁W" (score -140) and every other normal piece
    assert rank[("▁", "W")] < rank[("▁", "▁")]
    assert all(rank[m] > rank[("▁", "W")] for m in merges if set("".join(m)) == {"▁"})


def test_export_warns_when_it_cannot_be_exact(tmp_path, caplog):
    """A sentencepiece model with a Unicode normalizer (nmt_nfkc, sentencepiece's default) is not
    reproduced exactly; the export says so."""
    from hf_fixtures import train_small_sentencepiece
    train_small_sentencepiece(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger=H.__name__):
        H.save_hf_tokenizer(Tokenizer.load(str(tmp_path)), str(tmp_path / "hf"))
    assert "nmt_nfkc" in caplog.text and "remove_extra_whitespaces" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=H.__name__):
        H.save_hf_tokenizer(Tokenizer.load(ASSET), str(tmp_path / "llama"))
    assert caplog.text == ""


def test_reexport_keeps_added_tokens_pad_and_chat_template(hf, tmp_path, sp):
    """A source whose tokenizer.json adds a "<pad>" (id 32000, as many fine-tunes do) and whose config has a
    chat template: regenerating the files from tokenizer.model keeps both, and the exact ids."""
    import shutil

    import transformers
    src = tmp_path / "src"
    hf.add_special_tokens({"pad_token": "<pad>"})
    hf.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    try:
        hf.save_pretrained(str(src))
    finally:
        hf.pad_token = None  # the module fixture is shared
    shutil.copy(MODEL, src / "tokenizer.model")
    out = str(tmp_path / "out")
    H.export_tokenizer_dir(str(src), out)
    again = transformers.AutoTokenizer.from_pretrained(out)
    assert again.pad_token == "<pad>" and again.pad_token_id == 32000 and len(again) == 32001
    assert again.chat_template == "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    for text in CLINICAL + WHITESPACE:
        assert again(text)["input_ids"] == [1] + sp.encode(text)
