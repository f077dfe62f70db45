"""mellama-build-mibe: small files in each original schema → MIBE records with Me-LLaMA's templates →
read back and validated by the evaluation reader (round trip); bad raw records name file, line and field."""
import json
import os

import pytest

from mellama_jax.commands import build_mibe
from mellama_jax.eval.runner import EvalConfig, load_tasks
from mellama_jax.eval.tasks.classification import HALLMARKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DDI_XML = """<?xml version="1.0" encoding="UTF-8"?>
<document id="DDI-DrugBank.d1">
  <sentence id="DDI-DrugBank.d1.s0" text="Aspirin increases the effect of warfarin but not of heparin.">
    <entity id="DDI-DrugBank.d1.s0.e0" charOffset="0-6" type="drug" text="Aspirin"/>
    <entity id="DDI-DrugBank.d1.s0.e1" charOffset="32-39" type="drug" text="warfarin"/>
    <entity id="DDI-DrugBank.d1.s0.e2" charOffset="52-58" type="drug" text="heparin"/>
    <pair id="DDI-DrugBank.d1.s0.p0" e1="DDI-DrugBank.d1.s0.e0" e2="DDI-DrugBank.d1.s0.e1" ddi="true" type="effect"/>
    <pair id="DDI-DrugBank.d1.s0.p1" e1="DDI-DrugBank.d1.s0.e0" e2="DDI-DrugBank.d1.s0.e2" ddi="false"/>
  </sentence>
</document>
"""


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def raw(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    (d / "ori_pqal.json").write_text(json.dumps({
        "21645374": {"QUESTION": "Do mitochondria play a role in remodelling lace plant leaves during programmed cell "
                                 "death?", "CONTEXTS": ["Programmed cell death (PCD) is ...", "The following ..."],
                     "LABELS": ["BACKGROUND", "RESULTS"], "final_decision": "yes", "LONG_ANSWER": "..."},
        "16418930": {"QUESTION": "Landolt C and snellen e acuity: differences in strabismus amblyopia?",
                     "CONTEXTS": ["Assessment of visual acuity ..."], "final_decision": "no"}}))
    _jsonl(d / "medqa.jsonl", [
        {"question": "A 23-year-old woman has dysuria. Which is the best treatment",
         "answer": "Nitrofurantoin", "options": {"A": "Ampicillin", "B": "Ceftriaxone", "C": "Doxycycline",
                                                   "D": "Nitrofurantoin", "E": "Metronidazole"},
         "meta_info": "step2&3", "answer_idx": "D"}])
    _jsonl(d / "medmcqa.jsonl", [
        {"question": "Which vitamin is fat soluble?", "opa": "B1", "opb": "C", "opc": "K", "opd": "B12", "cop": 3},
        {"question": "First line drug for absence seizures", "opa": "Ethosuximide", "opb": "Phenytoin",
         "opc": "Carbamazepine", "opd": "Lamotrigine", "cop": 4}])
    (d / "ddi").mkdir()
    (d / "ddi" / "d1.xml").write_text(DDI_XML)
    (d / "hoc.tsv").write_text("text\tlabels\nAbstract about glycolysis.\tcellular energetics\n"
                               "Abstract two.\tresisting cell death;inducing angiogenesis\n")
    _jsonl(d / "mednli.jsonl", [{"sentence1": "Pt has fever.", "sentence2": "Pt is febrile.",
                                 "gold_label": "entailment"}])
    (d / "mtsamples.csv").write_text(
        ",description,medical_specialty,sample_name,transcription,keywords\n"
        '0, A 23-year-old, Allergy / Immunology, Allergic Rhinitis ,"SUBJECTIVE:, This 23-year-old white female '
        'presents with allergies.","allergy / immunology, allergic rhinitis"\n')
    _jsonl(d / "pubmed_sum.jsonl", [{"src": "long article text", "tgt": "the abstract"}])
    _jsonl(d / "mimic_cxr.jsonl", [{"findings": ["Lungs are clear.", "No effusion."],
                                    "impression": ["No acute process."]}])
    return d


SOURCES = {"pubmedqa": "ori_pqal.json", "medqa": "medqa.jsonl", "medmcqa": "medmcqa.jsonl", "ddi2013": "ddi",
           "hoc": "hoc.tsv", "mednli": "mednli.jsonl", "mtsample": "mtsamples.csv", "pubmed_sum": "pubmed_sum.jsonl", "mimic_cxr": "mimic_cxr.jsonl"}


def _build(task, raw_path, out, *extra):
    return build_mibe.main(["--task", task, "--raw", str(raw_path), "--out", str(out), *extra])


def test_round_trip_every_task(raw, tmp_path):
    out = tmp_path / "mibe"
    for task, name in SOURCES.items():
        assert _build(task, raw / name, out) == 0, task
    prepared = {p.task.name: p for p in load_tasks(EvalConfig(tasks=tuple(SOURCES), data_dir=str(out)))}
    assert {t: len(p.records) for t, p in prepared.items()} == {
        "pubmedqa": 2, "medqa": 1, "medmcqa": 2, "ddi2013": 2, "hoc": 2, "mednli": 1, "mtsample": 1,
        "pubmed_sum": 1, "mimic_cxr": 1}

    q = prepared["pubmedqa"].records[0]
    assert q.id == "PubmedQA0" and q.answer == "yes" and q.gold == 0 and q.choices == ("yes", "no", "maybe")
    assert q.query.startswith("As an expert doctor in clinical science and medical knowledge, can you tell me if")
    assert q.query.endswith("Answer yes, no, or maybe.\nProgrammed cell death (PCD) is ...\nThe following ...\n"
                            "Do mitochondria play a role in remodelling lace plant leaves during programmed cell "
                            "death?\nThe answer is:\n")
    assert prepared["pubmedqa"].golds == ("yes", "no")

    m = prepared["medqa"].records[0]
    assert m.gold == 3 and m.answer == "D" and m.choices == ("A", "B", "C", "D", "E")
    assert ("\nQuestion: A 23-year-old woman has dysuria. Which is the best treatment?\n\nOptions:\nA. Ampicillin\n"
            "B. Ceftriaxone\nC. Doxycycline\nD. Nitrofurantoin\nE. Metronidazole\n\nThe answer is\n") in m.query
    # cop 1-4 (a 4 is present): 3 -> C, 4 -> D.
    assert prepared["medmcqa"].golds == ("C", "D")
    assert "Options:\nA. B1\nB. C\nC. K\nD. B12\n\nThe answer is\n" in prepared["medmcqa"].records[0].query

    effect, false = prepared["ddi2013"].records
    assert (effect.answer, false.answer) == ("DDI-effect", "DDI-false") and effect.gold == 0 and false.gold == 3
    assert effect.query.endswith("###\nINPUT: @DRUG$ increases the effect of @DRUG$ but not of heparin.\nOUTPUT:\n")
    assert "INPUT: @DRUG$ increases the effect of warfarin but not of @DRUG$.\nOUTPUT:\n" in false.query

    hoc = prepared["hoc"]
    assert hoc.records[0].gold == [0, 0, 0, 0, 0, 0, 0, 0, 1, 0] and hoc.golds[1] == [2, 4]
    assert hoc.records[1].query.endswith("relevant topics.\n    ###\n    INPUT: Abstract two.\n    OUTPUT:\n")
    assert prepared["mednli"].records[0].query.endswith("INPUT: [PRE] Pt has fever. [HYP] Pt is febrile.\nOUTPUT:\n")
    mt = prepared["mtsample"].records[0]
    assert mt.answer == "Allergy / Immunology" and mt.gold == 1 and len(mt.choices) == 40
    assert mt.query.endswith("###\nINPUT: SUBJECTIVE:, This 23-year-old white female presents with allergies.\n"
                             "OUTPUT:\n")
    assert prepared["mimic_cxr"].records[0].answer == "No acute process."
    assert "INPUT: Lungs are clear. No effusion.\n" in prepared["mimic_cxr"].records[0].query


def test_bad_raw_records_name_file_line_and_field(raw, tmp_path, capsys):
    out = tmp_path / "mibe"
    (raw / "hoc_bad.tsv").write_text("text\tlabels\nok\tcellular energetics\nbad\tcellular energy\n")
    assert _build("hoc", raw / "hoc_bad.tsv", out) == 2
    assert "hoc_bad.tsv:3: field 'labels' is 'cellular energy'" in capsys.readouterr().err
    assert not os.path.exists(out / "hoc.jsonl")
    _jsonl(raw / "mcqa_ambiguous.jsonl", [{"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 2}])
    assert _build("medmcqa", raw / "mcqa_ambiguous.jsonl", out) == 2
    assert "pass --cop_base" in capsys.readouterr().err
    assert _build("medmcqa", raw / "mcqa_ambiguous.jsonl", out, "--cop_base", "0") == 0
    assert load_tasks(EvalConfig(tasks=("medmcqa",), data_dir=str(out)))[0].golds == ("C",)
    _jsonl(raw / "medqa_bad.jsonl", [{"question": "q", "options": {"A": "x"}, "answer_idx": "F"}])
    assert _build("medqa", raw / "medqa_bad.jsonl", out) == 2
    assert "medqa_bad.jsonl:1: field 'answer_idx' is 'F'" in capsys.readouterr().err


def test_hallmark_order_is_the_released_one():
    # preprocess_instruct.py HoC.choices; index 8 is "cellular energetics" ([0,0,0,0,0,0,0,0,1,0] in the issue).
    assert HALLMARKS.index("cellular energetics") == 8 and len(HALLMARKS) == 10
