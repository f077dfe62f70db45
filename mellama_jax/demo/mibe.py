"""A small synthetic benchmark in MIBE's record form, for the demo and for tests.

The real MIBE files are licensed clinical data (MIMIC, i2b2) the user supplies; these records only have the
right *shape* — every task, MIBE's fields, plausible prompts — so the whole evaluation path can run
without them. `ideal_output(task, record)` is what a perfect model would answer, so a scripted model can
check the scoring end to end.

    python -m mellama_jax.demo.mibe OUT_DIR [--per_task 4] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
from typing import Any, Callable

from mellama_jax.eval.tasks.classification import HALLMARKS
from mellama_jax.eval.tasks.re import DDI2013

DRUGS = ("aspirin", "metoprolol", "warfarin", "lisinopril", "metformin", "heparin", "amoxicillin")
PROBLEMS = ("chest pain", "fever", "shortness of breath", "hypertension", "cough", "anemia")
TESTS = ("ECG", "chest x-ray", "CBC", "troponin", "CT scan")
DIAGNOSES = ("sarcoidosis", "tuberculosis", "lymphoma", "pulmonary embolism", "endocarditis")
SPECIALTIES = ("Cardiovascular / Pulmonary", "Orthopedic", "Neurology", "Gastroenterology", "Urology")


def _pubmedqa(r: random.Random) -> dict:
    drug, problem = r.choice(DRUGS), r.choice(PROBLEMS)
    gold = r.randrange(3)
    finding = ["reduced", "did not change", "had an unclear effect on"][gold]
    return {"query": f"Context: In a cohort study, {drug} {finding} {problem}.\nQuestion: Does {drug} reduce "
                     f"{problem}?\nAnswer with yes, no or maybe.\nAnswer:",
            "choices": ["yes", "no", "maybe"], "gold": gold, "answer": ["yes", "no", "maybe"][gold]}


def _lettered(r: random.Random, n: int) -> dict:
    options = r.sample(DRUGS, n)
    gold = r.randrange(n)
    letters = [chr(ord("A") + i) for i in range(n)]
    lines = "\n".join(f"{l}. {o}" for l, o in zip(letters, options))
    return {"query": f"Question: Which drug is first line for a patient with {r.choice(PROBLEMS)}?\n"
                     f"Options:\n{lines}\nAnswer with the letter of the correct option.\nAnswer:",
            "choices": letters, "gold": gold, "answer": letters[gold]}


def _emrqa(r: random.Random) -> dict:
    drug, dose = r.choice(DRUGS), f"{r.choice([5, 10, 25, 50, 100])} mg"
    return {"query": f"Context: The patient was started on {drug} {dose} daily for {r.choice(PROBLEMS)}.\n"
                     f"Question: What dose of {drug} was the patient started on?\nAnswer:",
            "choices": [], "gold": None, "answer": dose}


def _i2b2(r: random.Random) -> dict:
    problem, drug, test = r.choice(PROBLEMS), r.choice(DRUGS), r.choice(TESTS)
    # Me-LLaMA's HTML span form (the type is the class; eval/mibe/ner.py).
    marked = (f'Patient with <span class="problem">{problem}</span> was given <span class="treatment">{drug}</span> '
              f'after <span class="test">{test}</span> .')
    plain = f"Patient with {problem} was given {drug} after {test} ."
    return {"query": "Mark every medical problem, treatment and test in the sentence with <span class=\"problem\">, "
                     f"\"treatment\" and \"test\" spans and repeat the sentence.\nSentence: {plain}\nAnswer:",
            "choices": ["problem", "treatment", "test"], "gold": None, "answer": marked}


def _ddi(r: random.Random) -> dict:
    a, b = r.sample(DRUGS, 2)
    gold = r.randrange(len(DDI2013.default_choices))
    return {"query": f"Classify the interaction between @DRUG$ {a} and @DRUG$ {b} in: '{a} increases the levels "
                     f"of {b}'.\nAnswer with one of: {', '.join(DDI2013.default_choices)}.\nAnswer:",
            "choices": list(DDI2013.default_choices), "gold": gold, "answer": DDI2013.default_choices[gold]}


def _hoc(r: random.Random) -> dict:
    hot = set(r.sample(range(len(HALLMARKS)), r.randrange(0, 3)))
    # The released form: `gold` a 0/1 vector over the hallmarks, `answer` the labels joined by ";".
    return {"query": "Which hallmarks of cancer does this abstract discuss? Abstract: Tumour cells showed "
                     f"altered {r.choice(PROBLEMS)} signalling.\nAnswer with the hallmarks separated by "
                     "semicolons, or none.\nAnswer:",
            "choices": list(HALLMARKS), "gold": [int(i in hot) for i in range(len(HALLMARKS))],
            "answer": ";".join(HALLMARKS[i] for i in sorted(hot))}


def _mtsample(r: random.Random) -> dict:
    gold = r.randrange(len(SPECIALTIES))
    return {"query": f"Transcription: Follow-up visit for {r.choice(PROBLEMS)}.\nWhich medical specialty is this?"
                     "\nAnswer:",
            "choices": list(SPECIALTIES), "gold": gold, "answer": SPECIALTIES[gold]}


def _summary(r: random.Random, source: str) -> dict:
    problem, test = r.choice(PROBLEMS), r.choice(TESTS)
    return {"query": f"Summarize the {source}.\n{source.capitalize()}: The {test} was performed for {problem}. "
                     f"No acute abnormality was seen on the {test}.\nSummary:",
            "choices": [], "gold": None, "answer": f"no acute abnormality on {test}"}


def _nli(r: random.Random, labels: tuple[str, ...]) -> dict:
    problem = r.choice(PROBLEMS)
    gold = r.randrange(len(labels))
    hypothesis = [f"The patient has {problem}.", f"The patient does not have {problem}.",
                  "The patient is older than 60."][gold]
    return {"query": f"Premise: The patient presented with {problem}.\nHypothesis: {hypothesis}\nDoes the premise "
                     f"entail the hypothesis? Answer with one of: {', '.join(labels)}.\nAnswer:",
            "choices": list(labels), "gold": gold, "answer": labels[gold]}


def _diagnosis(r: random.Random) -> dict:
    dx = r.choice(DIAGNOSES)
    return {"query": f"Case: A 45-year-old with {r.choice(PROBLEMS)} and {r.choice(PROBLEMS)}; {r.choice(TESTS)} "
                     "was abnormal.", "choices": [], "gold": None, "answer": dx}


GENERATORS: dict[str, Callable[[random.Random], dict]] = {
    "pubmedqa": _pubmedqa,
    "medqa": lambda r: _lettered(r, 5),
    "medmcqa": lambda r: _lettered(r, 4),
    "emrqa": _emrqa,
    "i2b2": _i2b2,
    "ddi2013": _ddi,
    "hoc": _hoc,
    "mtsample": _mtsample,
    "pubmed_sum": lambda r: _summary(r, "article"),
    "mimic_cxr": lambda r: _summary(r, "findings"),
    "bionli": lambda r: _nli(r, ("entailment", "contradiction")),
    "mednli": lambda r: _nli(r, ("entailment", "contradiction", "neutral")),
    "diagnosis": _diagnosis,
}


def make_records(task: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    r = random.Random(f"{task}:{seed}")
    records = []
    for i in range(n):
        rec = GENERATORS[task](r)
        # Numbered so that no two queries are the same text (a scripted model keys its answers on them).
        rec["query"] = f"Example {i + 1}.\n{rec['query']}"
        records.append({"id": f"{task}-{i}", **rec})
    return records


def ideal_output(task: str, record: dict[str, Any]) -> str:
    """What a perfect model would say (in the format both matching modes accept)."""
    if task == "diagnosis":
        others = [d for d in DIAGNOSES if d != record["answer"]][:2]
        return "\n".join(f"{i}. {d}" for i, d in enumerate([record["answer"]] + others, start=1))
    if task == "hoc":
        return record["answer"] or "none"
    return record["answer"]


def write_synthetic_benchmark(data_dir: str, per_task: int = 4, seed: int = 0,
                              tasks: tuple[str, ...] = tuple(GENERATORS)) -> dict[str, str]:
    """Write `<data_dir>/<task>.jsonl` for each task; returns task -> path."""
    os.makedirs(data_dir, exist_ok=True)
    paths = {}
    for task in tasks:
        path = os.path.join(data_dir, f"{task}.jsonl")
        with open(path + ".tmp", "w") as f:
            for rec in make_records(task, per_task, seed):
                f.write(json.dumps(rec) + "\n")
        os.replace(path + ".tmp", path)
        paths[task] = path
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write a small synthetic MIBE-form benchmark (all tasks).")
    p.add_argument("out_dir")
    p.add_argument("--per_task", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for task, path in write_synthetic_benchmark(args.out_dir, args.per_task, args.seed).items():
        print(f"{task}: {path}")


if __name__ == "__main__":
    main()
