"""Me-LLaMA's NER scoring (`--matching mibe` for i2b2): HTML spans → BIO, token alignment, seqeval.

Reference: BIDS-Xu-Lab/Me-LLaMA `src/tasks/vital_measure.py` (VM:<line>), `NER.html2bio` (VM:299-337),
`align_tokens` (VM:25-47) and `cal_f1/precision/recall` (VM:353-393).

* The output and the gold are parsed with BeautifulSoup's "html.parser" and only the top-level nodes are
  read (VM:301-305). Text between tags is split on whitespace, every word tagged O (VM:306-309).
* A tag's text is tokenized with spaCy (VM:311); its entity type is the tag's first `class` attribute —
  `<span class="problem">chest pain</span>` — and only problem / treatment / test / drug count (VM:297,
  312-321). A tag without a class (`<problem>…</problem>`) gives O tags: the reference reads no type from
  the tag name.
* Prediction and gold word sequences are aligned greedily (VM:25-47): equal words pair up; when one word
  is a prefix of the other, the prefix pairs and the rest stays (B- becoming I-); otherwise both words are
  dropped. seqeval's default entity precision/recall/F1 run on the aligned tag sequences (VM:361, 373, 385).

The reference tokenizes with `spacy.load("en_core_web_lg")` (the whole pipeline runs; only its tokens are
used). By default we use `spacy.blank("en")`: the same English rule-based tokenizer, built without the
model (nothing is downloaded). `--spacy_model NAME_OR_PATH` loads a model the user installed (e.g.
en_core_web_lg) and runs it as the reference does; its tokenizer can differ from the blank one where the
package ships its own tokenizer settings. spaCy and BeautifulSoup are optional dependencies (the `mibe`
extra), imported on first use.
"""
from __future__ import annotations

import functools
import warnings
from typing import Sequence

from bs4 import BeautifulSoup, NavigableString, Tag
from seqeval.metrics import f1_score, precision_score, recall_score

ENTITY_TYPES = ("problem", "treatment", "test", "drug")  # VM:297


@functools.lru_cache(maxsize=2)
def english_tokenizer(spacy_model: str | None = None):
    """What splits a tag's text into words: spacy.blank("en")'s tokenizer, or the user's installed model."""
    import spacy  # noqa: PLC0415 - slow to import (a second or more); only the reference NER rule needs it
    if spacy_model is None:
        return spacy.blank("en").tokenizer
    try:
        return spacy.load(spacy_model)
    except OSError as e:
        raise FileNotFoundError(f"--spacy_model {spacy_model}: not an installed spaCy package or model directory "
                                "(install it yourself, e.g. `python -m spacy download en_core_web_lg`; nothing "
                                "is downloaded here)") from e


def html_to_bio(html: str, spacy_model: str | None = None) -> tuple[list[str], list[str]]:
    """(words, BIO tags) of one HTML-marked sentence, read as VM:301-322 reads it."""
    tokenizer = english_tokenizer(spacy_model)
    words, tags = [], []
    for child in BeautifulSoup(html, "html.parser").children:
        if isinstance(child, NavigableString):
            for word in child.split():
                words.append(word)
                tags.append("O")
        elif isinstance(child, Tag):
            classes = child.attrs.get("class") or ["O"]
            entity = classes[0]
            for i, token in enumerate(tokenizer(child.get_text())):
                words.append(token.text)
                tags.append((f"B-{entity}" if i == 0 else f"I-{entity}") if entity in ENTITY_TYPES else "O")
    return words, tags


def _continued(tag: str) -> str:
    return "I-" + tag[2:] if tag.startswith("B-") else tag


def align(pred: Sequence[tuple[str, str]], gold: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Greedy alignment of (word, tag) sequences (VM:25-47); returns (pred tags, gold tags) of the pairs."""
    pred, gold = list(pred), list(gold)
    i = j = 0
    pred_tags, gold_tags = [], []
    while i < len(pred) and j < len(gold):
        (w1, t1), (w2, t2) = pred[i], gold[j]
        if w1 == w2:
            i, j = i + 1, j + 1
        elif w2.startswith(w1):  # the gold word goes on with the rest, now inside the entity (VM:36-39)
            gold[j] = (w2[len(w1):], _continued(t2))
            i += 1
        elif w1.startswith(w2):
            pred[i] = (w1[len(w2):], _continued(t1))
            j += 1
        else:  # VM:44-46: both words dropped, nothing recorded
            i, j = i + 1, j + 1
            continue
        pred_tags.append(t1)
        gold_tags.append(t2)
    return pred_tags, gold_tags


def aligned_tags(output: str, gold_html: str, spacy_model: str | None = None) -> tuple[list[str], list[str]]:
    pred_words, pred_tags = html_to_bio(output, spacy_model)
    gold_words, gold_tags = html_to_bio(gold_html, spacy_model)
    return align(list(zip(pred_words, pred_tags)), list(zip(gold_words, gold_tags)))


def entity_scores(pairs: Sequence[tuple[list[str], list[str]]]) -> dict[str, float]:
    """seqeval precision/recall/F1 (defaults, as VM:361/373/385 call them) over aligned (pred, gold) tags."""
    preds = [p for p, _ in pairs]
    golds = [g for _, g in pairs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"precision": float(precision_score(golds, preds)), "recall": float(recall_score(golds, preds)),
                "f1": float(f1_score(golds, preds))}
