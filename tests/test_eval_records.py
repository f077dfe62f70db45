"""Records in the form Me-LLaMA released its test sets, read from JSONL, a hub parquet snapshot and a
`datasets.save_to_disk` directory (both written here by the `datasets` library itself), give the same
examples; records that do not fit their task's gold format fail naming file, line/row and field."""
import json
import os

import datasets
import pytest

from mellama_jax.eval.records import RecordError, find_task_file, iter_records
from mellama_jax.eval.runner import EvalConfig, load_tasks
from mellama_jax.eval.tasks import get_task
from mellama_jax.eval.tasks.classification import HALLMARKS

# Shaped like the released sets (src/preprocess_instruct.py build_*_instruction): id, query, answer, choices,
# gold, text. HoC's gold is a 0/1 vector; index 8 is "cellular energetics".
RELEASED = {
    "hoc": [
        {"id": "HoC0", "query": "The task is to decide the Hallmarks of Cancer ...\nINPUT: abstract one\nOUTPUT:",
         "answer": "cellular energetics", "choices": list(HALLMARKS), "gold": [0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
         "text": "abstract one"},
        {"id": "HoC1", "query": "The task is to decide the Hallmarks of Cancer ...\nINPUT: abstract two\nOUTPUT:",
         "answer": "sustaining proliferative signaling;resisting cell death", "choices": list(HALLMARKS),
         "gold": [1, 0, 1, 0, 0, 0, 0, 0, 0, 0], "text": "abstract two"},
    ],
    "medqa": [
        {"id": "MedQA0", "query": "Question: q1\n\nOptions:\nA. x\nB. y\n\nThe answer is", "answer": "B",
         "choices": ["A", "B", "C", "D", "E"], "gold": 1, "text": "q1"},
        {"id": "MedQA1", "query": "Question: q2\n\nOptions:\nA. x\nB. y\n\nThe answer is", "answer": "E",
         "choices": ["A", "B", "C", "D", "E"], "gold": 4, "text": "q2"},
    ],
    "emrqa": [
        {"id": "EmrQA0", "query": "Context: started aspirin 81 mg\nQuestion what dose\nAnswer:", "answer": "81 mg",
         "choices": [], "gold": None, "text": "started aspirin 81 mg"},
    ],
}


def _write_forms(root, task, rows):
    """The same rows as <task>.jsonl, a hub snapshot <Released>/data/test-*.parquet and save_to_disk dirs."""
    jsonl = root / "jsonl"
    jsonl.mkdir(exist_ok=True)
    with open(jsonl / f"{task}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    ds = datasets.Dataset.from_list(rows)
    released = get_task(task).released_as
    snapshot = root / "snapshot" / released / "data"
    snapshot.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(snapshot / "test-00000-of-00001.parquet"))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(root / "dict" / task))
    ds.save_to_disk(str(root / "saved" / task))
    return ds


@pytest.mark.parametrize("task", sorted(RELEASED))
def test_three_forms_give_the_same_examples(tmp_path, task):
    _write_forms(tmp_path, task, RELEASED[task])
    read = {}
    for form in ("jsonl", "snapshot", "dict", "saved"):
        path = find_task_file(str(tmp_path / form), task, get_task(task).file_names)
        records = list(iter_records(path))
        read[form] = [(r.id, r.query, r.answer, r.choices, r.gold, r.text) for r in records]
        assert [get_task(task).gold(r) for r in records] == [get_task(task).gold(r) for r in
                                                              iter_records(str(tmp_path / "jsonl" / f"{task}.jsonl"))]
    assert read["jsonl"] == read["snapshot"] == read["dict"] == read["saved"]
    assert [r[0] for r in read["jsonl"]] == [r["id"] for r in RELEASED[task]]
    assert read["jsonl"][0][5] == RELEASED[task][0]["text"]


def test_hoc_gold_is_the_multi_hot_vector():
    # The misread of issue 15: [0,...,1,0] taken as indices gave every abstract labels 0 and 1.
    path_rows = RELEASED["hoc"]
    from mellama_jax.eval.records import parse_record
    golds = [get_task("hoc").gold(parse_record(r, f"x:{i + 1}", i)) for i, r in enumerate(path_rows)]
    assert golds == [[8], [0, 2]]
    assert HALLMARKS[8] == "cellular energetics"


def _misfit(tmp_path, form, task, rows, expected):
    d = tmp_path
    if form == "jsonl":
        d.mkdir(parents=True)
        (d / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        snap = d / task / "data"
        snap.mkdir(parents=True)
        datasets.Dataset.from_list(rows).to_parquet(str(snap / "test-00000-of-00001.parquet"))
    with pytest.raises(RecordError, match=expected):
        load_tasks(EvalConfig(tasks=(task,), data_dir=str(d)))


@pytest.mark.parametrize("form,where", [("jsonl", r"hoc\.jsonl:2"), ("parquet", r"test-00000-of-00001\.parquet:row 1")])
def test_misfits_name_file_line_and_field(tmp_path, form, where):
    good = RELEASED["hoc"][0]
    as_indices = dict(good, gold=[8])  # a list of indices is never reinterpreted as labels
    _misfit(tmp_path / "a", form, "hoc", [good, as_indices],
            where + r": field 'gold': task hoc expects a 0/1 vector of length 10")


def test_other_misfits(tmp_path):
    good = RELEASED["hoc"][0]
    _misfit(tmp_path / "a", "jsonl", "hoc", [good, dict(good, gold=[0] * 9 + [2])],
            r"hoc\.jsonl:2: field 'gold'")  # not 0/1
    _misfit(tmp_path / "b", "jsonl", "hoc", [dict(good, answer="inducing angiogenesis")],
            r"hoc\.jsonl:1: field 'answer': 'inducing angiogenesis' disagrees with 'gold'")
    _misfit(tmp_path / "c", "jsonl", "hoc", [dict(good, choices=list(reversed(HALLMARKS)))],
            r"hoc\.jsonl:1: field 'choices'")
    q = RELEASED["medqa"][0]
    _misfit(tmp_path / "d", "jsonl", "medqa", [q, dict(q, gold=[1])], r"medqa\.jsonl:2: field 'gold': task medqa "
                                                                       r"expects an integer index")
    _misfit(tmp_path / "e", "parquet", "medqa", [q, dict(q, answer="C")],
            r"parquet:row 1: field 'answer': 'C' disagrees with choices\[gold\]='B'")
    _misfit(tmp_path / "f", "jsonl", "medqa", [dict(q, gold=7)], r"medqa\.jsonl:1: field 'gold': 7 is out of range")


def test_saved_dataset_dict_without_test_split(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(RELEASED["medqa"])}).save_to_disk(
        str(tmp_path / "medqa"))
    with pytest.raises(FileNotFoundError, match=r"splits \['train'\], no 'test' split"):
        find_task_file(str(tmp_path), "medqa")
    assert not os.path.exists(tmp_path / "medqa" / "test")
