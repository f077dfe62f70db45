"""mellama-build-mibe for i2b2 2010 concepts, emrQA data.json and BioNLI CSV: small files in each original
schema (the 2010 `*.txt`/`*.con` pair, emrQA's data.json tree, BioNLI's entailment CSV) → records → read back
by the evaluation reader → scored under both matchings; bad raw records name file, line and field."""
import csv
import json

from mellama_jax.commands import build_mibe
from mellama_jax.eval.mibe import prompts as T
from mellama_jax.eval.runner import EvalConfig, load_tasks
from mellama_jax.eval.tasks.base import Example

# 2010 i2b2/VA: one sentence per line, tokens split by spaces; concepts as line(1-based):token(0-based), end
# inclusive, text lower-cased (the annotation guideline's own example is c="a cough" ...||t="problem").
NOTE_TXT = ("Admission Date :\n"
            "2010-01-02\n"
            "The patient had a cough and fever ; chest x-ray was negative .\n"
            "\n"
            "He was started on Levaquin 500 mg daily .\n")
NOTE_CON = ('c="a cough" 3:3 3:4||t="problem"\n'
            'c="fever" 3:6 3:6||t="problem"\n'
            'c="chest x-ray" 3:8 3:9||t="test"\n'
            'c="levaquin" 5:4 5:4||t="treatment"\n')


def _i2b2(tmp_path, con=NOTE_CON):
    root = tmp_path / "i2b2"
    (root / "txt").mkdir(parents=True)
    (root / "concept").mkdir()
    (root / "txt" / "0001.txt").write_text(NOTE_TXT)
    (root / "concept" / "0001.con").write_text(con)
    return root


EMRQA = {"data": [{"title": "medication", "paragraphs": [{
    "note_id": "0001",
    "context": ["Admission Date :", "He was started on Levaquin 500 mg daily .", "Discharge medications : aspirin ."],
    "qas": [
        {"question": ["What is the dosage of Levaquin ?", "How much Levaquin does the patient take ?"],
         "id": [["What is the dosage of |medication| ?", "MedicationEvent (|medication|) [dosage=x]"]],
         "answers": [{"answer_start": [2, 5], "text": "500 mg", "evidence": "He was started on Levaquin 500 mg daily .",
                      "evidence_start": 2, "answer_entity_type": "single"}]},
        {"question": ["Has the patient ever been on heparin ?"], "id": [["...", "..."]],
         "answers": [{"answer_start": [], "text": "", "evidence": "", "evidence_start": "",
                      "answer_entity_type": "empty"}]},
        {"question": "What medications is the patient discharged on ?", "id": "uuid-3",
         "answers": [{"answer_start": [[3, 3]], "text": " aspirin ", "evidence": "Discharge medications : aspirin .",
                      "evidence_start": 3, "answer_entity_type": "complex"}]},
    ]}]}]}

# BioNLI's entailment CSV (read by its src/data_preparation.py: pmid, supp_set, conclusion, label_cat).
BIONLI_ROWS = [
    {"index": 0, "pmid": 101, "supp_set": "TNF induced NF-kB activation in HeLa cells.\nThe effect was dose dependent.",
     "conclusion": "TNF activates NF-kB.", "label_cat": "pos"},
    {"index": 1, "pmid": 101, "supp_set": "TNF induced NF-kB activation in HeLa cells.",
     "conclusion": "NF-kB activates TNF.", "label_cat": "SRE"},
]


def _bionli(tmp_path, rows=BIONLI_ROWS):
    path = tmp_path / "bionli_test.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _build(task, raw, out):
    return build_mibe.main(["--task", task, "--raw", str(raw), "--out", str(out)])


def _score(prepared, outputs, matching):
    task = prepared.task
    examples = []
    for record, gold, output in zip(prepared.records, prepared.golds, outputs):
        j = task.judge(output, record, gold, matching)
        examples.append(Example(id=record.id, where=record.where, prompt=record.query, output=output,
                                prediction=j.prediction, gold=gold, correct=j.correct, scores=dict(j.scores)))
    return task.aggregate(examples, matching)


def test_i2b2_round_trip(tmp_path):
    out = tmp_path / "mibe"
    assert _build("i2b2", _i2b2(tmp_path), out) == 0
    (p,) = load_tasks(EvalConfig(tasks=("i2b2",), data_dir=str(out)))
    assert [r.id for r in p.records] == ["I2B20", "I2B21", "I2B22", "I2B23"]  # the blank line is no record
    answers = [r.answer for r in p.records]
    assert answers[2] == ('The patient had <span class="problem">a cough</span> and <span class="problem">fever</span>'
                          ' ; <span class="test">chest x-ray</span> was negative .')
    assert answers[3] == 'He was started on <span class="treatment">Levaquin</span> 500 mg daily .'
    assert answers[0] == "Admission Date :"  # a line without concepts is a record too (all O)
    assert p.records[3].query == T.I2B2.format(text="He was started on Levaquin 500 mg daily .")
    assert p.golds[2]["tags"] == ["O", "O", "O", "B-problem", "I-problem", "O", "B-problem", "O", "B-test", "I-test",
                                  "O", "O", "O"]
    # Scored: echoing the gold is perfect under both rules; dropping one concept loses recall only.
    for matching in ("mibe", "strict"):
        assert _score(p, answers, matching)["entity_f1"] == 1.0
        missed = answers[:3] + ["He was started on Levaquin 500 mg daily ."]
        got = _score(p, missed, matching)
        assert got["entity_precision"] == 1.0 and got["entity_recall"] == 0.75


def test_i2b2_bad_concepts_name_file_and_line(tmp_path, capsys):
    out = tmp_path / "mibe"
    assert _build("i2b2", _i2b2(tmp_path, NOTE_CON.replace('c="fever" 3:6 3:6', 'c="fever" 3:7 3:7')), out) == 2
    assert "0001.con:2: field 'c' is 'fever' but line 3 tokens 7-7 of " in capsys.readouterr().err
    assert not (out / "i2b2.jsonl").exists()
    bad_type = tmp_path / "t2"
    bad_type.mkdir()
    assert _build("i2b2", _i2b2(bad_type, 'c="a cough" 3:3 3:4||t="symptom"\n'), out) == 2
    assert "0001.con:1: field 't' is 'symptom'" in capsys.readouterr().err
    (bad_type / "i2b2" / "other").mkdir()
    (bad_type / "i2b2" / "other" / "0001.txt").write_text(NOTE_TXT)
    assert _build("i2b2", bad_type / "i2b2", out) == 2
    assert "a second note named 0001.txt" in capsys.readouterr().err


def test_emrqa_round_trip(tmp_path):
    raw = tmp_path / "data.json"
    raw.write_text(json.dumps(EMRQA))
    out = tmp_path / "mibe"
    assert _build("emrqa", raw, out) == 0
    (p,) = load_tasks(EvalConfig(tasks=("emrqa",), data_dir=str(out)))
    assert [r.id for r in p.records] == ["EmrQA0", "EmrQA1"]  # the "empty" answer has no span: skipped
    first, second = p.records
    assert first.answer == "500 mg" and second.answer == "aspirin"
    assert first.query == ("\nTASK: Given a medical context and an open-ended question related to it, extract the "
                           "relevant text segment from the context as an answer. Expected output: Only extract and "
                           "return the text segment from the provided context that directly answers the question. "
                           "Do not add any new words.\n###\nContext: Admission Date :\nHe was started on Levaquin "
                           "500 mg daily .\nDischarge medications : aspirin .\nQuestion What is the dosage of "
                           "Levaquin ?\nAnswer:\n")
    assert "Question What medications is the patient discharged on ?\nAnswer:\n" in second.query
    for matching in ("mibe", "strict"):
        assert _score(p, ["500 mg", "aspirin"], matching)["exact_match"] == 1.0
        assert _score(p, ["500 mg", "heparin"], matching)["exact_match"] == 0.5


def test_emrqa_bad_schema_names_the_path(tmp_path, capsys):
    bad = json.loads(json.dumps(EMRQA))
    del bad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["text"]
    raw = tmp_path / "data.json"
    raw.write_text(json.dumps(bad))
    assert _build("emrqa", raw, tmp_path / "mibe") == 2
    assert "data.json:data[medication].paragraphs[0].qas[0]: missing field 'text'" in capsys.readouterr().err


def test_bionli_round_trip(tmp_path):
    out = tmp_path / "mibe"
    assert _build("bionli", _bionli(tmp_path), out) == 0
    (p,) = load_tasks(EvalConfig(tasks=("bionli",), data_dir=str(out)))
    assert [(r.id, r.answer, r.gold) for r in p.records] == [("BioNLI0", "entailment", 0), ("BioNLI1", "contradiction", 1)]
    assert p.records[0].query == T.BIONLI.format(
        text="[PRE] TNF induced NF-kB activation in HeLa cells.\nThe effect was dose dependent. [HYP] TNF activates NF-kB.")
    for matching in ("mibe", "strict"):
        assert _score(p, ["entailment", "contradiction"], matching)["accuracy"] == 1.0
        assert _score(p, ["entailment", "entailment"], matching)["accuracy"] == 0.5


def test_bionli_missing_column_names_line(tmp_path, capsys):
    rows = [{k: v for k, v in r.items() if k != "conclusion"} for r in BIONLI_ROWS]
    assert _build("bionli", _bionli(tmp_path, rows), tmp_path / "mibe") == 2
    assert "bionli_test.csv:3: missing field 'conclusion'" in capsys.readouterr().err
