"""A small, deterministic, synthetic three-domain corpus, instruction set and MIBE eval files for the demo.

Everything is generated from templates and word lists (no real patient or publication text). The facts
are consistent across domains and tasks — each disease has a fixed first-line drug, a marker test and a
typical finding — so a tiny model trained on the corpus and the instructions can learn something that the
eval sets measure. Same seed → byte-identical files; the whole set takes a few seconds.

Layout written by `write_demo_data(out_dir)`:
    corpus/biomedical/pubmed-0000{0,1}.jsonl   {"id", "title", "abstract"}
    corpus/clinical/notes.jsonl.gz             {"id", "text"}  (discharge summaries, radiology reports)
    corpus/general/web.parquet                 {"id", "text"}
    heldout/{biomedical,clinical,general}.jsonl
    instruct/me_llama.jsonl (conversation format), instruct/alpaca.jsonl, instruct/mibe.jsonl (task records)
    eval/{pubmedqa,medqa,mednli,i2b2,hoc,mimic_cxr,emrqa}.jsonl   {"query", "answer", "choices", "gold"}
"""
from __future__ import annotations

import gzip
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq

from mellama_jax.data.errors import DataReport
from mellama_jax.data.sources import RecordSource, SourceConfig, text_check, text_of

# disease -> (first-line drug, marker test, typical finding, organ)
FACTS = {
    "hypertension": ("lisinopril", "blood pressure", "elevated blood pressure", "heart"),
    "type 2 diabetes": ("metformin", "hemoglobin A1c", "high fasting glucose", "pancreas"),
    "pneumonia": ("amoxicillin", "chest radiograph", "lobar consolidation", "lung"),
    "heart failure": ("furosemide", "BNP level", "pulmonary edema", "heart"),
    "asthma": ("albuterol", "spirometry", "wheezing", "lung"),
    "hypothyroidism": ("levothyroxine", "TSH level", "fatigue and weight gain", "thyroid"),
    "atrial fibrillation": ("apixaban", "electrocardiogram", "irregular rhythm", "heart"),
    "urinary tract infection": ("nitrofurantoin", "urinalysis", "dysuria", "bladder"),
    "gout": ("colchicine", "serum uric acid", "joint swelling", "joint"),
    "peptic ulcer": ("omeprazole", "endoscopy", "epigastric pain", "stomach"),
    "migraine": ("sumatriptan", "neurologic exam", "throbbing headache", "brain"),
    "anemia": ("ferrous sulfate", "hemoglobin level", "pallor", "blood"),
}
DISEASES = sorted(FACTS)
OUTCOMES = ["mortality", "hospital readmission", "symptom burden", "quality of life", "length of stay"]
DESIGNS = ["randomized controlled trial", "prospective cohort study", "retrospective cohort study",
           "case-control study", "cross-sectional study"]
GENES = ["TP53", "EGFR", "KRAS", "BRCA1", "MYC", "PTEN", "HER2", "VEGFA", "IL6", "TNF"]
HALLMARKS = ["sustaining proliferative signaling", "evading growth suppressors", "resisting cell death",
             "enabling replicative immortality", "inducing angiogenesis", "activating invasion and metastasis",
             "genomic instability and mutation", "tumor promoting inflammation",
             "cellular energetics", "avoiding immune destruction"]
GENERAL_TOPICS = {
    "geography": ["The river flows north through a wide valley before it reaches the sea.",
                  "The capital lies on a plateau surrounded by low mountains.",
                  "Summers in the region are dry, and most rain falls in winter."],
    "cooking": ["Bread rises when yeast ferments the sugars in the dough.",
                "A slow simmer keeps the soup clear and the vegetables tender.",
                "Salt draws moisture out of vegetables before they are roasted."],
    "history": ["The bridge was completed in the nineteenth century after a decade of work.",
                "Trade along the coast connected the small harbours for centuries.",
                "The old library was rebuilt twice after fires destroyed its collection."],
    "technology": ["A compiler translates source code into instructions a processor can run.",
                   "Batteries store energy chemically and release it as electric current.",
                   "Networks route packets between computers using shared protocols."],
    "sports": ["The team trained every morning for the championship season.",
               "Marathon runners pace themselves to save energy for the final miles.",
               "The referee stopped the match when the rain grew heavy."],
}
FIRST = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas"]


def _abstract(r: random.Random, i: int) -> dict:
    disease = r.choice(DISEASES)
    drug, test, finding, organ = FACTS[disease]
    n = r.randint(40, 900)
    design = r.choice(DESIGNS)
    outcome = r.choice(OUTCOMES)
    effect = r.randint(8, 45)
    p = r.choice(["0.001", "0.01", "0.02", "0.04", "0.003"])
    gene = r.choice(GENES)
    title = f"{drug.capitalize()} and {outcome} in patients with {disease}: a {design}"
    sentences = [
        f"BACKGROUND: {disease.capitalize()} is a common condition of the {organ}, and {drug} is the first-line "
        f"therapy for {disease}.",
        f"The effect of {drug} on {outcome} remains uncertain.",
        f"METHODS: In this {design}, we enrolled {n} patients with {disease} and measured the {test} at baseline "
        f"and after {r.randint(4, 52)} weeks.",
        f"Expression of {gene} was assessed in a subset of {r.randint(10, n)} patients.",
        f"RESULTS: Treatment with {drug} reduced {outcome} by {effect}% (p={p}).",
        f"Patients with {finding} at baseline showed the largest benefit.",
        r.choice([f"Adverse events were mild and occurred in {r.randint(1, 15)}% of patients.",
                  f"No serious adverse events were attributed to {drug}.",
                  f"The {test} improved in {r.randint(50, 95)}% of treated patients."]),
        f"CONCLUSIONS: {drug.capitalize()} reduces {outcome} in {disease}, supporting its role as first-line "
        f"therapy.",
    ]
    return {"id": f"pmid-{100000 + i}", "title": title, "abstract": " ".join(sentences)}


def _clinical(r: random.Random, i: int) -> dict:
    disease = r.choice(DISEASES)
    drug, test, finding, organ = FACTS[disease]
    age = r.randint(19, 94)
    sex = r.choice(["male", "female"])
    if r.random() < 0.5:
        dose = r.choice([5, 10, 20, 40, 50, 100, 500])
        text = (f"DISCHARGE SUMMARY\nPatient: {age} year old {sex}.\nChief complaint: {finding}.\n"
                f"History of present illness: The patient presented with {finding} for {r.randint(1, 14)} days. "
                f"The {test} confirmed {disease}.\n"
                f"Vitals: HR {r.randint(55, 120)}, BP {r.randint(95, 180)}/{r.randint(55, 105)}, "
                f"SpO2 {r.randint(88, 100)}%.\n"
                f"Hospital course: Started on {drug} {dose} mg daily with improvement.\n"
                f"Discharge medications: {drug} {dose} mg daily.\n"
                f"Follow-up: repeat {test} in {r.randint(2, 12)} weeks.")
    else:
        normal = r.random() < 0.4
        findings = ("The lungs are clear. Heart size is normal. No pleural effusion or pneumothorax."
                    if normal else
                    f"There is {r.choice(['left', 'right', 'bilateral'])} {r.choice(['lower', 'upper'])} lobe "
                    f"opacity consistent with {r.choice(['consolidation', 'atelectasis', 'edema'])}. "
                    f"{r.choice(['Small pleural effusion.', 'No pneumothorax.', 'Mild cardiomegaly.'])}")
        impression = "No acute cardiopulmonary process." if normal else (
            f"Findings concerning for {r.choice(['pneumonia', 'heart failure', 'atelectasis'])}.")
        text = (f"RADIOLOGY REPORT\nExam: chest radiograph, {r.choice(['PA and lateral', 'portable AP'])}.\n"
                f"Indication: {age} year old {sex} with {finding}.\nFINDINGS: {findings}\n"
                f"IMPRESSION: {impression}")
    return {"id": f"note-{i}", "text": text}


def _general(r: random.Random, i: int) -> dict:
    topic = r.choice(sorted(GENERAL_TOPICS))
    sents = r.sample(GENERAL_TOPICS[topic], k=len(GENERAL_TOPICS[topic]))
    extra = [f"{r.choice(FIRST)} wrote about {topic} in {r.randint(1900, 2023)}.",
             f"There are {r.randint(2, 999)} examples in the collection."]
    return {"id": f"web-{i}", "text": " ".join(sents + r.sample(extra, k=r.randint(1, 2)))}


def _write_jsonl(path: str, records, opener=open) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with opener(path + ".tmp", "wt", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def _gzip_open(path, mode, **_open_kwargs):  # text mode, utf-8: what _GzipText writes
    return _GzipText(path)


class _GzipText:
    """Text writer to a gzip file with mtime=0, so the file is byte-identical between runs."""

    def __init__(self, path):
        self._raw = open(path, "wb")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0, filename="")

    def write(self, s):
        self._gz.write(s.encode("utf-8"))

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self._gz.close()
        self._raw.close()


def write_demo_corpus(out_dir: str, *, seed: int = 0, scale: float = 1.0) -> dict[str, str]:
    """The three-domain corpus and its held-out files; returns {name: path or glob}."""
    r = random.Random(seed)
    n_bio, n_clin, n_gen = int(2400 * scale), int(600 * scale), int(1200 * scale)
    bio = [_abstract(r, i) for i in range(n_bio)]
    half = n_bio // 2
    _write_jsonl(os.path.join(out_dir, "corpus/biomedical/pubmed-00000.jsonl"), bio[:half])
    _write_jsonl(os.path.join(out_dir, "corpus/biomedical/pubmed-00001.jsonl"), bio[half:])
    _write_jsonl(os.path.join(out_dir, "corpus/clinical/notes.jsonl.gz"), [_clinical(r, i) for i in range(n_clin)],
                 opener=_gzip_open)
    general = [_general(r, i) for i in range(n_gen)]
    path = os.path.join(out_dir, "corpus/general/web.parquet")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(general), path + ".tmp")
    os.replace(path + ".tmp", path)
    held = {"biomedical": [_abstract(r, 10 ** 6 + i) for i in range(max(8, n_bio // 40))],
            "clinical": [_clinical(r, 10 ** 6 + i) for i in range(max(8, n_clin // 40))],
            "general": [_general(r, 10 ** 6 + i) for i in range(max(8, n_gen // 40))]}
    for name, recs in held.items():
        _write_jsonl(os.path.join(out_dir, f"heldout/{name}.jsonl"), recs)
    return {"biomedical": os.path.join(out_dir, "corpus/biomedical/*.jsonl"),
            "clinical": os.path.join(out_dir, "corpus/clinical/notes.jsonl.gz"),
            "general": os.path.join(out_dir, "corpus/general/web.parquet"),
            "heldout": os.path.join(out_dir, "heldout")}


def _qa_pairs(r: random.Random) -> tuple[str, str]:
    disease = r.choice(DISEASES)
    drug, test, finding, organ = FACTS[disease]
    kind = r.randrange(4)
    if kind == 0:
        return f"What is the first-line therapy for {disease}?", f"The first-line therapy for {disease} is {drug}."
    if kind == 1:
        return f"Which test is used to assess {disease}?", f"The {test} is used to assess {disease}."
    if kind == 2:
        return (f"A patient presents with {finding}. Which condition of the {organ} should be considered?",
                f"{disease.capitalize()} should be considered.")
    return f"Which condition is treated with {drug}?", f"{drug.capitalize()} is used to treat {disease}."


def write_demo_instructions(out_dir: str, *, seed: int = 0, n: int = 400) -> dict[str, str]:
    r = random.Random(seed + 1)
    conv = []
    for i in range(n):
        q, a = _qa_pairs(r)
        turns = [{"from": "human", "value": q}, {"from": "agent", "value": a}]
        if r.random() < 0.2:
            q2, a2 = _qa_pairs(r)
            turns += [{"from": "human", "value": q2}, {"from": "agent", "value": a2}]
        conv.append({"id": f"conv-{i}", "conversations": turns, "text": q})
    alpaca = []
    for i in range(n // 2):
        note = _clinical(r, 5 * 10 ** 6 + i)["text"]
        if r.random() < 0.5:
            q, a = _qa_pairs(r)
            alpaca.append({"instruction": q, "input": "", "output": a})
        else:
            first = note.split("\n")[0]
            alpaca.append({"instruction": "Give the type of this clinical document.", "input": note,
                           "output": first.title()})
    # Task-formatted training records, as Me-LLaMA's instruction data mixes in (MIMIC summarisation, QA,
    # classification, ...): the MIBE form of the demo tasks, drawn with other seeds than the eval sets.
    mibe = []
    for k, (task, make) in enumerate(sorted(DEMO_EVAL_TASKS.items())):
        rt = random.Random(10 ** 6 + seed * 7919 + k)
        mibe += [dict(make(rt), id=f"train-{task}-{i}") for i in range(n // 4)]
    r.shuffle(mibe)
    paths = {"me_llama": os.path.join(out_dir, "instruct/me_llama.jsonl"),
             "alpaca": os.path.join(out_dir, "instruct/alpaca.jsonl"),
             "mibe": os.path.join(out_dir, "instruct/mibe.jsonl")}
    _write_jsonl(paths["me_llama"], conv)
    _write_jsonl(paths["alpaca"], alpaca)
    _write_jsonl(paths["mibe"], mibe)
    return paths


# ------------------------------------------------------------------------------------------------ eval sets
def _pubmedqa(r):
    disease = r.choice(DISEASES)
    drug = FACTS[disease][0]
    other = r.choice([d for d in DISEASES if FACTS[d][0] != drug])
    label = r.choice(["yes", "no", "maybe"])
    context = _abstract(r, r.randint(0, 10 ** 6))["abstract"]
    asked = {"yes": drug, "no": FACTS[other][0], "maybe": drug}[label]
    q = (f"Does {asked} reduce symptom burden in {disease}?" if label != "maybe"
         else f"Does {drug} reduce outcomes of patients with {disease} and {FACTS[other][2]}?")
    query = (f"Answer the question about the abstract with yes, no, or maybe.\nAbstract: {context}\n"
             f"Question: {q}\nAnswer:")
    choices = ["yes", "no", "maybe"]
    return {"query": query, "answer": label, "choices": choices, "gold": choices.index(label)}


def _medqa(r, n_options=5):
    disease = r.choice(DISEASES)
    drug, test, finding, organ = FACTS[disease]
    wrong = r.sample([FACTS[d][0] for d in DISEASES if FACTS[d][0] != drug], k=n_options - 1)
    options = wrong + [drug]
    r.shuffle(options)
    letters = "ABCDE"[:n_options]
    stem = (f"A {r.randint(20, 85)}-year-old {r.choice(['man', 'woman'])} presents with {finding}. "
            f"The {test} confirms {disease}. What is the most appropriate first-line treatment?")
    query = stem + "\n" + "\n".join(f"{l}. {o}" for l, o in zip(letters, options)) + "\nAnswer:"
    gold = options.index(drug)
    return {"query": query, "answer": drug, "choices": options, "gold": gold}


def _mednli(r):
    disease = r.choice(DISEASES)
    drug, test, finding, organ = FACTS[disease]
    premise = f"The patient was admitted with {finding} and the {test} confirmed {disease}."
    label = r.choice(["entailment", "contradiction", "neutral"])
    hyp = {"entailment": f"The patient has {disease}.",
           "contradiction": f"The patient has no evidence of {disease}.",
           "neutral": f"The patient has a family history of {disease}."}[label]
    choices = ["entailment", "contradiction", "neutral"]
    query = (f"Premise: {premise}\nHypothesis: {hyp}\nDoes the premise entail the hypothesis? Answer "
             f"entailment, contradiction, or neutral.\nAnswer:")
    return {"query": query, "answer": label, "choices": choices, "gold": choices.index(label)}


def _i2b2(r):
    disease = r.choice(DISEASES)
    drug, test, finding, organ = FACTS[disease]
    # Me-LLaMA's NER format: entities marked as <span class="problem|treatment|test">, the type read from
    # the class (the reference scorer's rule, eval/mibe/ner.py).
    span = lambda kind, text: f'<span class="{kind}">{text}</span>'
    sentence = (f"Patient with {span('problem', finding)} ; {span('test', test)} showed "
                f"{span('problem', disease)} , started {span('treatment', drug)} .")
    plain = (f"Patient with {finding} ; {test} showed {disease} , started {drug} .")
    query = ('Mark every medical problem, treatment and test in the sentence with <span class="problem">, '
             '<span class="treatment"> and <span class="test"> tags.\n'
             f"Sentence: {plain}\nAnswer:")
    return {"query": query, "answer": sentence, "choices": ["problem", "treatment", "test"], "gold": None}


def _hoc(r):
    labels = sorted(r.sample(range(len(HALLMARKS)), k=r.randint(1, 3)))
    gene = r.choice(GENES)
    text = " ".join(f"{gene} signalling contributes to {HALLMARKS[l]} in tumour cells." for l in labels)
    query = ("Which hallmarks of cancer does the sentence discuss? Choose from: " + "; ".join(HALLMARKS)
             + f".\nSentence: {text}\nAnswer:")
    # Released HoC form: gold is a 0/1 vector over the hallmarks, answer the labels joined by ";".
    return {"query": query, "answer": ";".join(HALLMARKS[l] for l in labels), "choices": HALLMARKS,
            "gold": [int(i in labels) for i in range(len(HALLMARKS))]}


def _mimic_cxr(r):
    note = _clinical(r, r.randint(0, 10 ** 6))
    while "FINDINGS:" not in note["text"]:
        note = _clinical(r, r.randint(0, 10 ** 6))
    findings = note["text"].split("FINDINGS: ")[1].split("\nIMPRESSION: ")[0]
    impression = note["text"].split("IMPRESSION: ")[1]
    query = f"Summarize the radiology findings into an impression.\nFindings: {findings}\nImpression:"
    return {"query": query, "answer": impression, "choices": [], "gold": None}


def _emrqa(r):
    disease = r.choice(DISEASES)
    drug = FACTS[disease][0]
    dose = r.choice([5, 10, 20, 40, 50, 100, 500])
    note = (f"The patient with {disease} was started on {drug} {dose} mg daily. "
            f"Follow-up was arranged in {r.randint(2, 12)} weeks.")
    query = f"Context: {note}\nQuestion: What dose of {drug} was the patient given?\nAnswer:"
    return {"query": query, "answer": f"{dose} mg", "choices": [], "gold": None}


DEMO_EVAL_TASKS = {"pubmedqa": _pubmedqa, "medqa": _medqa, "mednli": _mednli, "i2b2": _i2b2, "hoc": _hoc,
                   "mimic_cxr": _mimic_cxr, "emrqa": _emrqa}


def write_demo_eval_sets(out_dir: str, *, seed: int = 0, n_per_task: int = 40) -> dict[str, str]:
    """MIBE-format files `out_dir/<task>.jsonl` for the demo tasks; returns {task: path}."""
    paths = {}
    for k, (task, make) in enumerate(sorted(DEMO_EVAL_TASKS.items())):
        r = random.Random(seed * 7919 + k)
        recs = [dict(make(r), id=f"{task}-{i}") for i in range(n_per_task)]
        paths[task] = os.path.join(out_dir, f"{task}.jsonl")
        _write_jsonl(paths[task], recs)
    return paths


def write_demo_data(out_dir: str, *, seed: int = 0, scale: float = 1.0) -> dict[str, str]:
    """Corpus, held-out split, instruction sets and eval files under out_dir (see module doc)."""
    paths = write_demo_corpus(out_dir, seed=seed, scale=scale)
    paths.update({f"instruct_{k}": v for k, v in write_demo_instructions(out_dir, seed=seed).items()})
    paths.update({f"eval_{k}": v for k, v in write_demo_eval_sets(os.path.join(out_dir, "eval"), seed=seed).items()})
    return paths


def demo_texts(out_dir: str):
    """All corpus texts (for tokenizer training), in a fixed order."""
    cfgs = [SourceConfig(os.path.join(out_dir, "corpus/biomedical/*.jsonl"), text_fields=("title", "abstract")),
            SourceConfig(os.path.join(out_dir, "corpus/clinical/notes.jsonl.gz")),
            SourceConfig(os.path.join(out_dir, "corpus/general/web.parquet"))]
    src = RecordSource.build(cfgs, lambda c: text_check(c.text_fields), DataReport(strict=True))
    for i in range(len(src)):
        rec, _, fields = src[i]
        yield text_of(rec, fields)
