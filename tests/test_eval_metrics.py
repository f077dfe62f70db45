"""Evaluation metrics and answer parsing, checked against scikit-learn, seqeval, rouge-score and the
SQuAD-style scorer that ships with lm-eval (TyDiQA's), plus hand-worked edge cases."""
import numpy as np
import pytest
from rouge_score import rouge_scorer
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from mellama_jax.eval import metrics as M
from mellama_jax.eval.parsing import match_choice, match_labels, ranked_items
from mellama_jax.eval.spans import SpanError, gold_bio, parse_spans, predicted_bio

TYPES = ("problem", "treatment", "test")


# ---------------------------------------------------------------- single-label accuracy / macro-F1
def test_no_prediction_counts_as_miss_not_as_a_class():
    golds = ["yes", "yes", "no", "maybe"]
    preds = ["yes", None, "no", "no"]
    # By hand: yes P=1 R=1/2 F=2/3; no P=1/2 R=1 F=2/3; maybe F=0  -> macro over the 3 real classes = 4/9.
    assert M.macro_f1(golds, preds) == pytest.approx(4 / 9)
    sentinel = [M.NO_PREDICTION if p is None else p for p in preds]
    assert M.macro_f1(golds, preds) == pytest.approx(
        f1_score(golds, sentinel, labels=["maybe", "no", "yes"], average="macro", zero_division=0))
    # sklearn's default label set would make the sentinel a fourth class with F1 0 (the wrong answer).
    assert f1_score(golds, sentinel, average="macro", zero_division=0) == pytest.approx(4 / 9 * 3 / 4)
    assert M.accuracy(golds, preds) == pytest.approx(accuracy_score(golds, sentinel)) == 0.5


def test_macro_f1_matches_sklearn_on_random_labels():
    rng = np.random.RandomState(0)
    classes = ["DDI-false", "DDI-mechanism", "DDI-effect", "DDI-advise", "DDI-int"]
    golds = list(rng.choice(classes, 200))
    preds = [None if rng.rand() < 0.15 else str(c) for c in rng.choice(classes[:4], 200)]
    sentinel = [M.NO_PREDICTION if p is None else p for p in preds]
    assert M.macro_f1(golds, preds) == pytest.approx(
        f1_score(golds, sentinel, labels=sorted(set(golds)), average="macro", zero_division=0))
    assert M.accuracy(golds, preds) == pytest.approx(accuracy_score(golds, sentinel))
    # All unparsed: every real class has F1 0.
    assert M.macro_f1(golds, [None] * 200) == 0.0


def test_multilabel_macro_f1_against_sklearn_with_empty_gold_and_unparsed():
    golds = [[0, 2], [], [1], [2], []]
    preds = [[0], [], None, [1, 2], [3]]
    # Columns seen anywhere: 0, 1, 2, 3 (3 only as a false positive). By hand:
    # 0: P=1 R=1 F=1; 1: tp0 fp1 fn1 F=0; 2: tp1 fp0 fn1 F=2/3; 3: fp1 F=0 -> (1 + 0 + 2/3 + 0) / 4.
    assert M.multilabel_macro_f1(golds, preds, num_labels=10) == pytest.approx((1 + 2 / 3) / 4)
    mlb = MultiLabelBinarizer(classes=list(range(10)))
    y_true = mlb.fit_transform(golds)
    y_pred = mlb.transform([p or [] for p in preds])
    assert M.multilabel_macro_f1(golds, preds, num_labels=10) == pytest.approx(
        f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro", zero_division=0))


# ---------------------------------------------------------------- exact match / token F1
def test_exact_match_and_token_f1_match_squad_scorer():
    from lm_eval.tasks.tydiqa import utils as squad  # the MLQA/SQuAD scorer shipped with lm-eval
    cases = [("The chest pain", ["chest pain"]), ("chest pain, acute", ["acute chest pain", "pain"]),
             ("metoprolol 25 mg", ["Metoprolol 25mg"]), ("no", ["yes"]), ("a an the", ["the"]),
             ("Aspirin.", ["aspirin"])]
    for pred, golds in cases:
        ref_em = squad.metric_max_over_ground_truths(squad.exact_match_score, pred, golds, "en")
        ref_f1 = squad.metric_max_over_ground_truths(squad.f1_score, pred, golds, "en")
        assert M.exact_match(pred, golds) == float(ref_em), pred
        assert M.token_f1(pred, golds) == pytest.approx(ref_f1), pred
    assert M.exact_match(None, ["x"]) == 0.0 and M.token_f1(None, ["x"]) == 0.0


# ---------------------------------------------------------------- NER spans -> BIO -> seqeval
def test_gold_spans_to_bio():
    tokens, tags = gold_bio("Pt with <problem>chest pain</problem>. Started <treatment>aspirin</treatment> ;"
                            " <test>ECG</test> normal", TYPES)
    assert tokens == ["Pt", "with", "chest", "pain.", "Started", "aspirin", ";", "ECG", "normal"]
    assert tags == ["O", "O", "B-problem", "I-problem", "O", "B-treatment", "O", "B-test", "O"]
    with pytest.raises(SpanError):
        gold_bio("<problem>pain", TYPES)


def test_predicted_spans_exact_copy_and_rewritten_output():
    gold_tokens, gold_tags = gold_bio("The <test>CT scan</test> showed <problem>a mass</problem>", TYPES)
    exact = predicted_bio("The <test>CT scan</test> showed a <problem>mass</problem>", gold_tokens, TYPES,
                          strict=True)
    assert exact == ["O", "B-test", "I-test", "O", "O", "B-problem"]
    # The model only lists entities: they are found in the sentence by their tokens.
    listed = predicted_bio("<problem>A mass</problem>, <test>ct scan</test>, <treatment>surgery</treatment>",
                           gold_tokens, TYPES, strict=False)
    assert listed == gold_tags
    # Strict rejects malformed markup; loose keeps what it can read.
    assert predicted_bio("The <test>CT scan showed", gold_tokens, TYPES, strict=True) is None
    assert predicted_bio("The <test>CT scan</problem> showed", gold_tokens, TYPES, strict=True) is None
    assert predicted_bio("The <drug>CT</drug> scan", gold_tokens, TYPES, strict=False) == ["O"] * 6
    assert parse_spans("<Problem> fever </Problem>", TYPES, strict=True)[1][0].text == "fever"


def test_entity_scores_match_seqeval_including_empty_gold_and_unparsed():
    sentences = ["<problem>fever</problem> and <problem>cough</problem>",
                 "no findings today",  # empty gold
                 "give <treatment>tylenol</treatment> now",
                 "<test>CBC</test> drawn"]
    outputs = ["<problem>fever</problem> and cough",
               "no <problem>findings</problem> today",  # false positive on an empty-gold sentence
               "give <treatment>tylenol now",  # malformed: unparsed under strict
               "<test>CBC</test> drawn"]
    golds = [gold_bio(s, TYPES) for s in sentences]
    preds = [predicted_bio(o, toks, TYPES, strict=True) for o, (toks, _) in zip(outputs, golds)]
    assert preds[2] is None
    gold_tags = [t for _, t in golds]
    scores = M.entity_scores(gold_tags, preds)
    ref_pred = [p if p is not None else ["O"] * len(g) for p, g in zip(preds, gold_tags)]
    assert scores["f1"] == pytest.approx(seqeval_f1(gold_tags, ref_pred))
    # By hand: gold entities 4, predicted 3, correct 2 -> P 2/3, R 1/2, F1 4/7.
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((2 / 3, 1 / 2, 4 / 7))
    assert M.entity_scores([["O", "O"]], [["O", "O"]])["f1"] == 0.0  # nothing to find, nothing found


# ---------------------------------------------------------------- ROUGE, top-k
def test_rouge_is_mean_of_rouge_score_fmeasures():
    refs = ["no acute cardiopulmonary process", "small left pleural effusion, unchanged", "stable exam"]
    preds = ["No acute cardiopulmonary abnormality.", "left pleural effusions are small", None]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    ref = [scorer.score(r, p or "") for r, p in zip(refs, preds)]
    got = M.rouge(preds, refs)
    for k in ("rouge1", "rouge2", "rougeL"):
        assert got[k] == pytest.approx(np.mean([s[k].fmeasure for s in ref]))
    assert got["rouge1"] > 0


def test_top_k_accuracy():
    assert M.top_k_accuracy([1, 3, None, 5, 2], (1, 3, 5)) == {
        "top1_accuracy": 0.2, "top3_accuracy": 0.6, "top5_accuracy": 0.8}


# ---------------------------------------------------------------- parsers
PUBMEDQA = ("yes", "no", "maybe")


@pytest.mark.parametrize("output,mibe,strict", [
    ("Yes.", 0, 0),
    ("yes, the trial shows benefit", 0, 0),
    ("The answer is: maybe", 2, 2),
    ("I do not know", 1, None),  # MIBE quirk: "no" inside "not"
    ("No, but yes in children", 0, 1),  # mibe walks choices in order: "yes" is found first
    ("Maybe not.", 1, 2),
    ("I think so", None, None),
    ("", None, None),
])
def test_pubmedqa_matching(output, mibe, strict):
    assert match_choice(output, PUBMEDQA, "mibe") == mibe
    assert match_choice(output, PUBMEDQA, "strict") == strict


def test_lettered_strict_and_long_labels():
    letters = ("A", "B", "C", "D", "E")
    assert match_choice("(C) Ampicillin", letters, "strict", lettered=True) == 2
    assert match_choice("Answer: D.", letters, "strict", lettered=True) == 3
    assert match_choice("The correct answer is E: metformin", letters, "strict", lettered=True) == 4
    assert match_choice("Ampicillin is best", letters, "strict", lettered=True) is None
    options = ("Ampicillin", "Ceftriaxone", "Doxycycline", "Vancomycin")
    assert match_choice("B. Ceftriaxone", options, "strict", lettered=True) == 1
    assert match_choice("Doxycycline 100 mg", options, "strict", lettered=True) == 2
    nli = ("entailment", "contradiction", "neutral")
    assert match_choice("Contradiction - the premise says otherwise", nli, "strict") == 1
    assert match_choice("not entailment but contradiction", nli, "mibe") == 0


def test_multilabel_and_ranked_parsing():
    labels = ("resisting cell death", "inducing angiogenesis", "cellular energetics",
              "genomic instability and mutation")
    assert match_labels("Inducing angiogenesis; resisting cell death", labels, "strict") == (0, 1)
    assert match_labels("inducing angiogenesis and cellular energetics.", labels, "strict") == (1, 2)
    assert match_labels("Genomic instability and mutation", labels, "strict") == (3,)
    assert match_labels("inducing angiogenesis, something else", labels, "strict") is None
    assert match_labels("None", labels, "strict") == ()
    assert match_labels("It is about inducing angiogenesis", labels, "mibe") == (1,)
    assert match_labels("unclear", labels, "mibe") is None
    text = "Most likely:\n1. Sarcoidosis\n2) Tuberculosis.\n- Lymphoma\n"
    assert ranked_items(text, "strict") == ["Sarcoidosis", "Tuberculosis", "Lymphoma"]
    assert ranked_items("Sarcoidosis, tuberculosis", "strict") == ["Sarcoidosis", "tuberculosis"]
    assert ranked_items("", "mibe") == []
