"""Scores the reference computes with third-party libraries, checked against those libraries directly:
mibe ROUGE = rouge-score's BootstrapAggregator median (as `evaluate`'s rouge reports it), BERTScore with the
bert-score package on a tiny random model saved here (nothing downloaded), and the NER tokenizer taken from a
user's spaCy model."""
import json

import numpy as np
import pytest
from rouge_score import rouge_scorer, scoring

from mellama_jax.eval.mibe import ner
from mellama_jax.eval.records import parse_record
from mellama_jax.eval.report import markdown_table, summary_dict
from mellama_jax.eval.runner import EvalConfig, TaskResult, load_tasks
from mellama_jax.eval.tasks import get_task
from mellama_jax.eval.tasks.base import Example, ScoringOptions

REFS = ["no acute cardiopulmonary process .", "small left pleural effusion .", "lungs are clear .",
        "stable cardiomegaly without edema .", "right lower lobe pneumonia .", "no pneumothorax ."]
PREDS = ["no acute process .", "small effusion on the left .", "clear lungs .", "cardiomegaly , stable .",
         "pneumonia in the right lower lobe .", "no pneumothorax or effusion ."]


def _examples(task, preds, refs, matching="mibe"):
    out = []
    for i, (p, r) in enumerate(zip(preds, refs)):
        record = parse_record({"query": "q", "answer": r}, f"t:{i}", i)
        j = task.judge(p, record, task.gold(record), matching)
        out.append(Example(id=str(i), where=record.where, prompt="q", output=p, prediction=j.prediction, gold=r,
                           correct=j.correct, scores=dict(j.scores)))
    return out


def test_mibe_rouge_is_rouge_scores_bootstrap_median_seeded():
    preds, refs = PREDS * 4, REFS * 4  # 24 examples, so the resampled median differs from the mean
    task = get_task("mimic_cxr").configured(ScoringOptions(seed=7))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    got = task.aggregate(_examples(task, preds, refs), "mibe")
    assert np.array_equal(np.random.get_state()[1], before)  # the global generator is left as it was

    # What evaluate.load("rouge").compute(predictions, references) does, seeded: every default rouge type, in
    # its order, one Score per example into rouge-score's own aggregator; the reported value is mid.fmeasure.
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)
    aggregator = scoring.BootstrapAggregator()
    for p, r in zip(preds, refs):
        aggregator.add_scores(scorer.score(r, p))
    np.random.seed(7)
    want = {k: v.mid.fmeasure for k, v in aggregator.aggregate().items()}
    for k in ("rouge1", "rouge2", "rougeL"):
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
    mean = np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)])
    assert got["rougeL"] != pytest.approx(mean, abs=1e-9)  # not the plain mean
    # Another seed, another (nearby) median; strict stays the stemmed mean.
    other = get_task("mimic_cxr").configured(ScoringOptions(seed=8)).aggregate(_examples(task, preds, refs), "mibe")
    assert other["rougeL"] != got["rougeL"] and abs(other["rougeL"] - got["rougeL"]) < 0.02
    strict = task.aggregate(_examples(task, preds, refs, "strict"), "strict")
    stemmed = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert strict["rougeL"] == pytest.approx(np.mean([stemmed.score(r, p)["rougeL"].fmeasure
                                                      for p, r in zip(preds, refs)]))
    assert "bert_score_f1" not in got and "bert_score_f1" not in strict


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 9-layer BERT with random weights (layer 9 is what bert_score takes for the reference's model)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("bert_score")
    d = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w for s in REFS + PREDS for w in s.split()})
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(str(d / "vocab.txt"), do_lower_case=False, model_max_length=64).save_pretrained(d)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=9, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(d)
    return str(d)


def test_bertscore_is_bert_score_on_the_given_model(tiny_bert):
    import bert_score

    task = get_task("pubmed_sum").configured(ScoringOptions(bertscore_model=tiny_bert))
    got = task.aggregate(_examples(task, PREDS, REFS), "mibe")["bert_score_f1"]
    # evaluate's bertscore = bert_score with its defaults; the layer for bert-base-multilingual-cased is 9.
    assert bert_score.utils.model2layers["bert-base-multilingual-cased"] == 9
    _, _, f1 = bert_score.score(PREDS, REFS, model_type=tiny_bert, num_layers=9)
    assert got == pytest.approx(float(f1.mean()), abs=1e-6)
    assert task.aggregate(_examples(task, PREDS, REFS, "strict"), "strict")["bert_score_f1"] == pytest.approx(got)
    same = task.aggregate(_examples(task, REFS, REFS), "mibe")["bert_score_f1"]
    assert same == pytest.approx(1.0, abs=1e-5) and got < same
    with pytest.raises(FileNotFoundError, match="--bertscore_model"):
        get_task("pubmed_sum").configured(ScoringOptions(bertscore_model=tiny_bert + "/missing")).aggregate(
            _examples(task, PREDS[:1], REFS[:1]), "mibe")


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory):
    """A one-layer BART with random weights and a character-level byte-BPE vocabulary (no merges)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tiny_bart")
    chars = list("abcdefghijklmnopqrstuvwxyz.,-") + ["\u0120"]  # \u0120: byte-level BPE's space
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"] + chars + ["<mask>"])}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    transformers.BartTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=128).save_pretrained(d)
    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                     decoder_ffn_dim=32, max_position_embeddings=128, pad_token_id=1, bos_token_id=0,
                                     eos_token_id=2, decoder_start_token_id=2)
    model = transformers.BartForConditionalGeneration(config)
    model.save_pretrained(d)
    # A "bart_score.pth": other weights for the same model, as the reference loads its paraphrase-tuned ones.
    torch.manual_seed(1)
    torch.save(transformers.BartForConditionalGeneration(config).state_dict(), d / "bart_score.pth")
    return str(d)


def _transformers_bartscore(model_dir, preds, refs, weights=None):
    """Per example, unbatched: minus transformers' own mean token loss of the reference given the prediction."""
    import torch
    import transformers
    tok = transformers.BartTokenizer.from_pretrained(model_dir)
    model = transformers.BartForConditionalGeneration.from_pretrained(model_dir).eval()
    if weights:
        model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        return float(np.mean([-model(**tok(p, return_tensors="pt"), labels=tok(r, return_tensors="pt")["input_ids"]).loss
                              for p, r in zip(preds, refs)]))


def test_bartscore_is_the_mean_reference_loglik_given_the_prediction(tiny_bart):
    preds, refs = PREDS + PREDS[:3], REFS + REFS[:3]  # 9 examples: two batches of 8, padded within each
    task = get_task("pubmed_sum").configured(ScoringOptions(bartscore_model=tiny_bart))
    got = task.aggregate(_examples(task, preds, refs), "mibe")["bart_score"]
    assert got == pytest.approx(_transformers_bartscore(tiny_bart, preds, refs), abs=1e-5)
    weights = tiny_bart + "/bart_score.pth"
    tuned = get_task("pubmed_sum").configured(ScoringOptions(bartscore_model=tiny_bart, bartscore_weights=weights))
    got_tuned = tuned.aggregate(_examples(task, preds, refs), "mibe")["bart_score"]
    assert got_tuned == pytest.approx(_transformers_bartscore(tiny_bart, preds, refs, weights), abs=1e-5)
    assert abs(got_tuned - got) > 1e-3  # the weights were loaded


def test_report_says_when_bertscore_is_not_computed(tmp_path):
    (tmp_path / "mimic_cxr.jsonl").write_text(json.dumps({"query": "q", "answer": REFS[0]}) + "\n")
    for model, text in ((None, "Summaries: BERTScore F1 not computed (pass --bertscore_model DIR); BARTScore not "
                                "computed (pass --bartscore_model DIR)."),
                        ("/m/bert", "Summaries: BERTScore F1 (`bert_score_f1`) with `/m/bert`; BARTScore not")):
        cfg = EvalConfig(tasks=("mimic_cxr",), data_dir=str(tmp_path), bertscore_model=model)
        (p,) = load_tasks(cfg)
        assert p.task.bertscore_model == model  # the run's options reach the task
        result = TaskResult(p.task, p.data_file, "generate", (), {"rougeL": 0.0}, 0.0)
        assert text in markdown_table(summary_dict([result], cfg, "m"))


def test_spacy_model_option_tokenizes_with_the_users_model(tmp_path):
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    nlp.tokenizer.add_special_case("x-ray", [{"ORTH": "x"}, {"ORTH": "-ray"}])  # differs from the blank rules
    nlp.to_disk(tmp_path / "my_model")
    html = 'had a <span class="test">chest x-ray</span> today'
    assert ner.html_to_bio(html) == (["had", "a", "chest", "x", "-", "ray", "today"],
                                          ["O", "O", "B-test", "I-test", "I-test", "I-test", "O"])
    assert ner.html_to_bio(html, str(tmp_path / "my_model")) == (
        ["had", "a", "chest", "x", "-ray", "today"], ["O", "O", "B-test", "I-test", "I-test", "O"])
    task = get_task("i2b2").configured(ScoringOptions(spacy_model=str(tmp_path / "my_model")))
    record = parse_record({"query": "q", "answer": html}, "t:1", 0)
    assert task.judge(html, record, task.gold(record), "mibe").prediction["gold"] == \
        ["O", "O", "B-test", "I-test", "I-test", "O"]
    with pytest.raises(FileNotFoundError, match="--spacy_model no_such_model_xyz: not an installed"):
        ner.html_to_bio(html, "no_such_model_xyz")
