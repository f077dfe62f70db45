"""`--matching mibe` against the verdicts of Me-LLaMA's reference scorer, task by task.

Every row is (model output, record, the verdict the reference gives), worked out by hand from
BIDS-Xu-Lab/Me-LLaMA `src/tasks/vital_measure.py` (VM:<line>, commit 08c893f); the comment on each row names
the line it exercises. Flipping one rule (e.g. lower-casing MedQA) fails these tables.
"""
import numpy as np
import pytest
from sklearn.metrics import f1_score

from mellama_jax.eval.mibe import ner, rules
from mellama_jax.eval.records import parse_record
from mellama_jax.eval.tasks import get_task
from mellama_jax.eval.tasks.base import Example
from mellama_jax.eval.tasks.classification import HALLMARKS

LETTERS5 = ["A", "B", "C", "D", "E"]
DDI = ["DDI-effect", "DDI-mechanism", "DDI-advise", "DDI-false", "DDI-int"]


def _judge(task, output, choices, gold, answer=""):
    record = parse_record({"query": "q", "choices": choices, "gold": gold, "answer": answer}, "t:1", 0)
    t = get_task(task)
    return t.judge(output, record, t.gold(record), "mibe")


# (output, gold index, reference's prediction or None for "missing", correct)
PUBMEDQA = [
    ("yes", 0, "yes", True),  # VM:115-120 substring hit
    ("  No.  ", 1, "no", True),  # VM:107-109 strip + lower-case (LOWER_CASE = True by default, VM:52)
    ("I do not know", 2, "no", False),  # VM:118 "no" is a substring of "not"
    ("No, but yes in children", 1, "yes", False),  # VM:115 choices in list order: "yes" before "no"
    ("Maybe.", 2, "maybe", True),  # VM:108-109 "Maybe" lower-cased
    ("uncertain", 0, None, False),  # VM:121-122 nothing found -> "missing"
    ("The answer is: MAYBE", 2, "maybe", True),  # VM:109 case-insensitive
]


@pytest.mark.parametrize("output,gold,pred,correct", PUBMEDQA)
def test_pubmedqa_table(output, gold, pred, correct):
    j = _judge("pubmedqa", output, ["yes", "no", "maybe"], gold)
    assert (j.prediction, j.correct) == (pred, correct)


MEDQA = [
    ("The answer is D", 3, "D", True),  # VM:646 LOWER_CASE = False: "answer" holds no capital A
    ("A 45-year-old man ... so E", 4, "A", False),  # VM:115-120 capital "A" of "A 45-year-old" is found first
    ("the answer is d", 3, None, False),  # VM:646 no lower-casing: "d" is not "D" -> missing (VM:121)
    ("(C) Ampicillin", 2, "A", False),  # VM:118 "A" of "Ampicillin" comes before "C" in list order
    ("B", 1, "B", True),  # VM:118
    ("Option E", 4, "E", True),  # VM:118 "O","p",... no A-D capitals; "E" found
]


@pytest.mark.parametrize("output,gold,pred,correct", MEDQA)
def test_medqa_table(output, gold, pred, correct):
    j = _judge("medqa", output, LETTERS5, gold)
    assert (j.prediction, j.correct) == (pred, correct)


MEDMCQA = [
    ("Answer: C", 2, "A", False),  # VM:651 LOWER_CASE = False; "A" of "Answer" found first (VM:115-120)
    ("c", 2, None, False),  # VM:651 lower-case "c" is not "C" -> missing
    ("The correct option is D", 3, "D", True),  # no capitals A-C in the text
]


@pytest.mark.parametrize("output,gold,pred,correct", MEDMCQA)
def test_medmcqa_table(output, gold, pred, correct):
    j = _judge("medmcqa", output, LETTERS5[:4], gold)
    assert (j.prediction, j.correct) == (pred, correct)


DDI_ROWS = [
    ("DDI-effect", 0, "DDI-effect", True),  # VM:670-676 exactly one label found
    ("DDI-effect or DDI-mechanism", 0, None, False),  # VM:673-674 two labels -> missing
    ("ddi-effect", 0, None, False),  # VM:667 no lower-casing in DDI2013 -> nothing found
    ("  DDI-advise\n", 2, "DDI-advise", True),  # VM:667 stripped
    ("The relation is DDI-int.", 3, "DDI-int", False),  # VM:671 substring anywhere
    ("none", 3, None, False),  # VM:673 zero labels -> missing
]


@pytest.mark.parametrize("output,gold,pred,correct", DDI_ROWS)
def test_ddi_table(output, gold, pred, correct):
    j = _judge("ddi2013", output, DDI, gold)
    assert (j.prediction, j.correct) == (pred, correct)


NLI = [
    ("Entailment", 0, "entailment", True),  # default Classification: lower-cased (VM:52, VM:108-109)
    ("not entailment but contradiction", 1, "entailment", False),  # VM:115-120 first in list order
    ("NEUTRAL.", 2, "neutral", True),  # VM:109
]


@pytest.mark.parametrize("output,gold,pred,correct", NLI)
def test_mednli_table(output, gold, pred, correct):
    j = _judge("mednli", output, ["entailment", "contradiction", "neutral"], gold)
    assert (j.prediction, j.correct) == (pred, correct)


def test_mtsample_lower_cases_like_the_default_classification():
    choices = ["Surgery", "Neurosurgery", "Neurology"]
    # VM:52 LOWER_CASE default; VM:115 "surgery" is found inside "neurosurgery" before "neurosurgery" is tried.
    j = _judge("mtsample", "NEUROSURGERY", choices, 1)
    assert (j.prediction, j.correct) == ("Surgery", False)


def test_classification_aggregate_matches_the_reference_formulas():
    # VM:124-181: acc = mean(gold == result); missing = mean(result == "missing"); weighted/macro F1 with
    # labels = set(golds) (VM:151, 159), so a predicted class absent from gold adds no column.
    golds = ["yes", "yes", "no", "maybe", "no"]
    preds = ["yes", None, "no", "no", "yes"]
    t = get_task("pubmedqa")
    examples = [Example(id=str(i), where="", prompt="", output="", prediction=p, gold=g, correct=p == g, scores={})
                for i, (g, p) in enumerate(zip(golds, preds))]
    got = t.aggregate(examples, "mibe")
    y_pred = ["missing" if p is None else p for p in preds]
    assert got["accuracy"] == pytest.approx(2 / 5) and got["missing"] == pytest.approx(1 / 5)
    assert got["macro_f1"] == pytest.approx(f1_score(golds, y_pred, average="macro", labels=["yes", "no", "maybe"]))
    assert got["weighted_f1"] == pytest.approx(
        f1_score(golds, y_pred, average="weighted", labels=["yes", "no", "maybe"]))
    # By hand: yes P 1/2 R 1/2 F 1/2; no P 1/2 R 1/2 F 1/2; maybe F 0 -> macro 1/3.
    assert got["macro_f1"] == pytest.approx(1 / 3)
    # A prediction of a class no gold has is not averaged in (strict's label set would add it).
    golds2, preds2 = ["yes", "yes"], ["yes", "no"]
    assert rules.classification_metrics(golds2, preds2)["macro_f1"] == pytest.approx(2 / 3)  # yes: P1 R1/2


# (output, gold vector, reference's predicted vector)
HOC = [
    ("cellular energetics", [0, 0, 0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),  # VM:702-704
    ("Cellular energetics", [0, 0, 0, 0, 0, 0, 0, 0, 1, 0], [0] * 10),  # VM:703 case-sensitive, no lower()
    ("resisting cell death; inducing angiogenesis", [0, 0, 1, 0, 1, 0, 0, 0, 0, 0],
     [0, 0, 1, 0, 1, 0, 0, 0, 0, 0]),  # VM:702-704 every label found anywhere
    ("sustaining proliferative signalings", [1] + [0] * 9, [1] + [0] * 9),  # VM:703 substring, not equality
    ("none", [0] * 10, [0] * 10),  # nothing found: an all-zero vector, no "missing" (VM:701)
]


@pytest.mark.parametrize("output,gold,pred", HOC)
def test_hoc_table(output, gold, pred):
    hot = [i for i, v in enumerate(gold) if v]
    answer = ";".join(HALLMARKS[i] for i in hot)
    j = _judge("hoc", output, list(HALLMARKS), gold, answer)
    assert rules.hoc_vector(output, HALLMARKS) == pred
    assert (j.prediction or []) == [i for i, v in enumerate(pred) if v]
    assert j.correct == (pred == gold)


def test_hoc_aggregate_averages_all_ten_columns():
    # VM:734 macro over every column of the (n, 10) arrays; VM:722-728 binary F1 per label.
    golds = [[8], [0, 2], []]
    preds = [[8], [0], None]
    t = get_task("hoc")
    examples = [Example(id=str(i), where="", prompt="", output="", prediction=p, gold=g, correct=p == g, scores={})
                for i, (g, p) in enumerate(zip(golds, preds))]
    got = t.aggregate(examples, "mibe")
    # By hand: column 8 F1 1, column 0 F1 1, column 2 F1 0 (missed), 7 columns with nothing: 0 -> 2/10.
    assert got["macro_f1"] == pytest.approx(0.2)
    assert got["f1[cellular energetics]"] == 1.0 and got["f1[resisting cell death]"] == 0.0
    y = np.zeros((3, 10), int)
    p = np.zeros((3, 10), int)
    for i, (g, q) in enumerate(zip(golds, preds)):
        y[i, g] = 1
        p[i, q or []] = 1
    assert got["macro_f1"] == pytest.approx(f1_score(p, y, average="macro", zero_division=0))


# (output, gold answer, reference EM, reference F1)
EMRQA = [
    ("81 mg", "81 mg", 1.0, 1.0),  # VM:590-606 all characters distinct
    ("100 mg", "100 mg", 1.0, 0.8),  # VM:619 set overlap {1,0,m,g}=4 over 5 characters (VM:623-625)
    ("81mg", "81 mg", 1.0, 1.0),  # VM:596 characters are space-joined: word boundaries vanish
    ("Aspirin.", "aspirin", 1.0, 6 / 7),  # VM:597-599 lower-case, punctuation dropped; "i" twice: 6 of 7
    ("gm 18", "81 mg", 0.0, 1.0),  # VM:619 a set of characters: any order scores F1 1
    ("", "81 mg", 0.0, 0.0),  # VM:617-618 empty prediction
    ("the dose", "dose", 0.0, 2 * (4 / 7) * 1 / (4 / 7 + 1)),  # no article removal; F1 over chars
]


@pytest.mark.parametrize("output,gold,em,f1", EMRQA)
def test_emrqa_table(output, gold, em, f1):
    j = _judge("emrqa", output, [], None, gold)
    assert j.scores["exact_match"] == em
    assert j.scores["f1"] == pytest.approx(f1)


# (output, gold, reference's aligned (pred tags, gold tags))
NER = [
    ('Pt has <span class="problem">chest pain</span> today',
     'Pt has <span class="problem">chest pain</span> today',
     (["O", "O", "B-problem", "I-problem", "O"], ["O", "O", "B-problem", "I-problem", "O"])),  # VM:301-322
    ("Pt has <problem>chest pain</problem> today",  # VM:313-315 no class attribute: entity "O"
     'Pt has <span class="problem">chest pain</span> today',
     (["O", "O", "O", "O", "O"], ["O", "O", "B-problem", "I-problem", "O"])),
    ('<span class="problem">pain.</span>', 'pain.',  # VM:311 spaCy splits "pain." inside a tag; VM:36-39
     (["B-problem", "I-problem"], ["O", "O"])),  # "pain" pairs with the prefix of "pain.", then "." with "."
    ('<span class="disease">fever</span> now', '<span class="problem">fever</span> now',  # VM:318 unknown type
     (["O", "O"], ["B-problem", "O"])),
    ('gave <span class="drug">aspirin</span>', 'gave <span class="treatment">aspirin</span>',  # VM:297 drug counts
     (["O", "B-drug"], ["O", "B-treatment"])),
    ("totally different words", 'Pt has <span class="test">ECG</span>',  # VM:44-46 mismatches dropped
     ([], [])),
]


@pytest.mark.parametrize("output,gold,aligned", NER)
def test_ner_table(output, gold, aligned):
    assert ner.aligned_tags(output, gold) == aligned
    record = parse_record({"query": "q", "answer": gold}, "t:1", 0) if "<" in gold else None
    if record is not None:
        t = get_task("i2b2")
        j = t.judge(output, record, t.gold(record), "mibe")
        assert (j.prediction["pred"], j.prediction["gold"]) == aligned


def test_ner_aggregate_is_seqeval_on_aligned_tags():
    from seqeval.metrics import f1_score as seqeval_f1
    pairs = [ner.aligned_tags(o, g) for o, g, _ in NER]
    got = ner.entity_scores(pairs)
    assert got["f1"] == pytest.approx(seqeval_f1([g for _, g in pairs], [p for p, _ in pairs]))
    # By hand: gold entities 4 (rows 1, 2, 4, 5), predicted 3 (rows 1, 3, 5), correct 1 (row 1) -> P 1/3, R 1/4.
    assert (got["precision"], got["recall"]) == pytest.approx((1 / 3, 1 / 4))


def test_summaries_use_rouge_without_stemming():
    # VM:400, 462-477: evaluate.load("rouge") = rouge-score with use_stemmer=False.
    from rouge_score import rouge_scorer
    # evaluate's default rouge_types: all four (rougeLsum is scored too; the reference reports three).
    ref = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    pred, gold = "small effusions are unchanged", "small effusion, unchanged"
    want = {k: v.fmeasure for k, v in ref.score(gold, pred).items()}
    j = get_task("mimic_cxr").judge(pred, parse_record({"query": "q", "answer": gold}, "t:1", 0), gold, "mibe")
    assert j.scores == pytest.approx(want)
    assert j.scores["rouge1"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))  # "effusions" != "effusion"
