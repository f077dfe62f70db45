"""The evaluation runner and report, driven by a scripted stand-in model (the point here is the task,
metric and report logic; tests/test_eval_model.py runs a real tiny model)."""
import json
import os

import pytest
from etils import epath

from mellama_jax import paths
from mellama_jax.demo import mibe as synthetic
from mellama_jax.eval.records import RecordError
from mellama_jax.eval.report import write_report
from mellama_jax.eval.runner import EvalConfig, evaluate, load_tasks
from mellama_jax.eval.tasks import get_task, task_names


class CharTokenizer:
    """One id per character (id = code point + 3); bos 1, eos 2."""
    bos_id, eos_id, pad_id = 1, 2, 0

    def encode(self, text, bos=True, eos=False):
        return ([1] if bos else []) + [ord(c) + 3 for c in text] + ([2] if eos else [])

    def decode(self, ids):
        return "".join(chr(i - 3) for i in ids if i > 2)


class ScriptedModel:
    """Answers each prompt from a script keyed by the record query; records every generate call."""

    class config:
        max_position_embeddings = 4096

    def __init__(self, script):
        self.tokenizer = CharTokenizer()
        self.script = script
        self.calls = []

    def generate(self, prompt_ids, *, max_new_tokens, temperature, eos_id):
        assert temperature == 0.0 and eos_id == 2
        self.calls.append(len(prompt_ids))
        out = []
        for ids in prompt_ids:
            assert ids[0] == 1  # BOS
            prompt = self.tokenizer.decode(ids)
            text = next((v for k, v in self.script.items() if prompt.endswith(k)), "")
            out.append(self.tokenizer.encode(text, bos=False)[:max_new_tokens] + [eos_id])
        return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("mibe"))
    synthetic.write_synthetic_benchmark(d, per_task=6, seed=1)
    return d


def _records(data_dir, task):
    with open(os.path.join(data_dir, f"{task}.jsonl")) as f:
        return [json.loads(line) for line in f]


def _perfect_script(data_dir, template_suffix=""):
    script = {}
    for task in task_names():
        for rec in _records(data_dir, task):
            query = get_task(task).prompt(_as_record(rec))
            script[query + template_suffix] = synthetic.ideal_output(task, rec)
    return script


def _as_record(rec):
    from mellama_jax.eval.records import parse_record
    return parse_record(rec, "x:1", 0)


@pytest.mark.parametrize("matching", ["mibe", "strict"])
def test_perfect_answers_score_perfectly_in_every_task(data_dir, matching):
    model = ScriptedModel(_perfect_script(data_dir))
    cfg = EvalConfig(tasks=("all",), data_dir=data_dir, matching=matching, batch_size=4, progress=False)
    results = evaluate(model, cfg)
    assert [r.task.name for r in results] == task_names()
    for r in results:
        primary = r.metrics[r.task.primary_metric]
        if r.task.name == "hoc" and matching == "mibe":
            # The reference averages F1 over all 10 hallmark columns, also those no record carries (F1 0).
            present = {i for rec in _records(data_dir, "hoc") for i, v in enumerate(rec["gold"]) if v}
            assert primary == pytest.approx(len(present) / 10) and r.metrics["exact_set_accuracy"] == 1.0
            continue
        if r.task.name == "emrqa" and matching == "mibe":
            # The reference's F1 divides a character *set* overlap by character counts: "100 mg" scores 0.8
            # against itself. Exact match is still 1.
            assert r.metrics["exact_match"] == 1.0 and primary < 1.0
            continue
        assert primary == pytest.approx(1.0), (r.task.name, r.metrics)
        assert r.metrics["no_prediction_rate"] == 0.0
    # Batched 4 at a time: 6 records -> two generate calls per task.
    assert model.calls == [4, 2] * len(task_names())


def test_wrong_and_unparsed_answers(data_dir, tmp_path):
    recs = _records(data_dir, "pubmedqa")
    outputs = ["I do not know", "Probably yes.", "", "maybe", "no", "The answer is yes"]
    script = {r["query"]: o for r, o in zip(recs, outputs)}
    golds = [r["answer"] for r in recs]
    model = ScriptedModel(script)
    by_mode = {}
    for matching in ("mibe", "strict"):
        cfg = EvalConfig(tasks=("pubmedqa",), data_dir=data_dir, matching=matching, progress=False)
        (result,) = evaluate(model, cfg)
        by_mode[matching] = [e.prediction for e in result.examples]
        assert [e.output for e in result.examples] == outputs
        assert [e.gold for e in result.examples] == golds
        assert [e.correct for e in result.examples] == [p == g for p, g in zip(by_mode[matching], golds)]
    assert by_mode["mibe"] == ["no", "yes", None, "maybe", "no", "yes"]
    assert by_mode["strict"] == [None, None, None, "maybe", "no", "yes"]

    summary = write_report(str(tmp_path / "out"), [result], cfg, "scripted")
    task = summary["tasks"]["pubmedqa"]
    assert task["num_no_prediction"] == 3 and summary["settings"]["matching"] == "strict"
    with open(tmp_path / "out" / "examples" / "pubmedqa.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert [l["prediction"] for l in lines] == by_mode["strict"]
    assert set(lines[0]) >= {"prompt", "output", "prediction", "gold", "correct"}
    report = (tmp_path / "out" / "report.md").read_text()
    # Both matchings side by side: mibe = 4 of 6 (see by_mode above), strict = 2 of 6 — from the same outputs.
    assert summary["tasks"]["pubmedqa"]["metrics_by_matching"]["mibe"]["accuracy"] == pytest.approx(
        sum(p == g for p, g in zip(by_mode["mibe"], golds)) / 6)
    mibe_acc = summary["tasks"]["pubmedqa"]["metrics_by_matching"]["mibe"]["accuracy"]
    strict_acc = summary["tasks"]["pubmedqa"]["metrics_by_matching"]["strict"]["accuracy"]
    assert (f"| pubmedqa | qa | 6 | zero-shot, greedy | accuracy | {mibe_acc:.4f} | {strict_acc:.4f} |"
            in report)
    assert lines[0]["other"]["matching"] == "mibe" and lines[0]["other"]["prediction"] == "no"
    with pytest.raises(FileExistsError):
        write_report(str(tmp_path / "out"), [result], cfg, "scripted")
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_template_wraps_the_query_and_long_prompts_are_cut(data_dir):
    from mellama_jax.data.templates import render_prompt
    recs = _records(data_dir, "mednli")
    script = {render_prompt("me_llama", r["query"]): r["answer"] for r in recs}
    cfg = EvalConfig(tasks=("mednli",), data_dir=data_dir, template="me_llama", progress=False)
    (result,) = evaluate(ScriptedModel(script), cfg)
    assert result.metrics["accuracy"] == 1.0
    assert result.examples[0].prompt.startswith("Human: \n")
    # A 64-token window with 16 new tokens: prompts keep BOS and their last 47 tokens (the answer cue).
    seen = []

    class Recorder(ScriptedModel):
        def generate(self, prompt_ids, **kw):
            seen.extend(prompt_ids)
            return super().generate(prompt_ids, **kw)

    cfg = EvalConfig(tasks=("mednli",), data_dir=data_dir, max_length=64, max_new_tokens=16, progress=False)
    (result,) = evaluate(Recorder({}), cfg)
    assert all(len(ids) == 48 and ids[0] == 1 for ids in seen)
    assert all(CharTokenizer().decode(ids).endswith("Answer:") for ids in seen)
    assert all(e.truncated for e in result.examples)


def test_bad_records_name_file_and_line(tmp_path):
    d = tmp_path / "data"
    (d / "medqa").mkdir(parents=True)
    good = json.dumps({"query": "q", "choices": ["A", "B"], "gold": 1})
    (d / "medqa" / "test.jsonl").write_text(good + "\n\n" + good + "\n")  # <task>/test.jsonl layout
    assert len(load_tasks(EvalConfig(tasks=("medqa",), data_dir=str(d)))[0].records) == 2

    (d / "pubmedqa.jsonl").write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(RecordError, match=r"pubmedqa\.jsonl:3: not valid JSON"):
        load_tasks(EvalConfig(tasks=("pubmedqa",), data_dir=str(d)))
    (d / "pubmedqa.jsonl").write_text(good + "\n" + json.dumps({"query": "q", "choices": ["yes", "no"], "gold": 5}))
    with pytest.raises(RecordError, match=r"pubmedqa\.jsonl:2: field 'gold': 5 is out of range"):
        load_tasks(EvalConfig(tasks=("pubmedqa",), data_dir=str(d)))
    (d / "i2b2.jsonl").write_text(json.dumps({"query": "q", "answer": "<problem>pain"}) + "\n")
    with pytest.raises(RecordError, match=r"i2b2\.jsonl:1: bad span markup"):
        load_tasks(EvalConfig(tasks=("i2b2",), data_dir=str(d)))
    (d / "hoc.jsonl").write_text(json.dumps({"query": "q", "gold": [0, 8]}) + "\n")  # indices, not multi-hot
    with pytest.raises(RecordError, match=r"hoc\.jsonl:1: field 'gold': task hoc expects a 0/1 vector of length 10"):
        load_tasks(EvalConfig(tasks=("hoc",), data_dir=str(d)))
    with pytest.raises(FileNotFoundError, match=r"mednli\.jsonl.*mednli/test\.jsonl"):
        load_tasks(EvalConfig(tasks=("mednli",), data_dir=str(d)))
    with pytest.raises(KeyError, match="unknown task 'pubmed_qa'"):
        load_tasks(EvalConfig(tasks=("pubmed_qa",), data_dir=str(d)))


@pytest.mark.parametrize("template", ["llama2_chat", "alpaca", "me_llama"])
def test_lm_eval_chat_template_matches_exported_hf_template(template):
    """The adapter renders lm-eval's messages as the Jinja template exported with the HF tokenizer does."""
    import jinja2

    from mellama_jax.data.templates import hf_chat_template
    from mellama_jax.eval.lm_eval_adapter import MellamaJaxLM

    lm = MellamaJaxLM(model=ScriptedModel({}), chat_template=template)
    messages = [{"role": "system", "content": "You are a clinician."},
                {"role": "user", "content": "Q1: fever?"}, {"role": "assistant", "content": "yes"},
                {"role": "user", "content": "Q2: cough?"}]
    for history in (messages, messages[1:], messages[3:]):
        want = jinja2.Environment().from_string(hf_chat_template(template)).render(
            messages=history, bos_token="", eos_token="")
        assert lm.apply_chat_template(history) == want
    assert lm.chat_template(True) == template and lm.chat_template(False) is None


def test_cli_reports_a_bad_record_before_loading_the_model(tmp_path, capsys):
    from mellama_jax import evaluate as cli
    (tmp_path / "mednli.jsonl").write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": 1}) + "\n"
                                           + json.dumps({"answer": "a"}) + "\n")
    code = cli.main(["--model", str(tmp_path / "no_such_model"), "--tasks", "mednli", "--data_dir", str(tmp_path),
                     "--out_dir", str(tmp_path / "out")])
    assert code == 2
    assert "mednli.jsonl:2: missing field 'query'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_evaluation_reads_data_from_and_writes_its_report_to_gcs(gcs, data_dir, tmp_path):
    """The same evaluation with data and report on the GCS server (tests/gcs_server.py) as with local ones."""
    remote_data = gcs.fresh_prefix("mibe")
    paths.copy_tree(data_dir, remote_data)
    script = _perfect_script(data_dir)
    reports = {}
    for where, data, out in (("local", data_dir, str(tmp_path / "report")),
                             ("gcs", remote_data, gcs.fresh_prefix("report"))):
        cfg = EvalConfig(tasks=("pubmedqa", "medqa"), data_dir=data, progress=False)
        results = evaluate(ScriptedModel(script), cfg)
        summary = write_report(out, results, cfg, "scripted")
        reports[where] = (summary, {name: epath.Path(out, name).read_text()
                                    for name in ("examples/pubmedqa.jsonl", "examples/medqa.jsonl")})
        if where == "gcs":
            assert paths.is_committed(out)
            with pytest.raises(FileExistsError):
                write_report(out, results, cfg, "scripted")
    local, remote = reports["local"], reports["gcs"]
    for name, task in remote[0]["tasks"].items():
        assert task["data_file"] == f"{remote_data}/{name}.jsonl"  # read from the server
        assert dict(task, data_file=None, seconds=None) == dict(local[0]["tasks"][name], data_file=None, seconds=None)
    assert {k: v.replace(remote_data, data_dir) for k, v in remote[1].items()} == local[1]
    assert all(t["metrics"][t["primary_metric"]] == 1.0 for t in remote[0]["tasks"].values())
