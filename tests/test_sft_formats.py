"""Instruction data in the shapes it is published in (OpenAI/HF messages, ShareGPT, Alpaca, Dolly, MIBE), read
from JSONL, Parquet and `datasets` save_to_disk directories: every container gives the same examples; a
record of the wrong shape is named by file:line:field (strict) or dropped and counted (lenient).

The Parquet and save_to_disk forms are written by the `datasets` package itself (the reference for what
users bring), with the real LLaMA-2 tokenizer.
"""
import json
import os

import numpy as np
import pytest

from mellama_jax.data import templates as T
from mellama_jax.data.errors import DataError, DataReport
from mellama_jax.data.instruct import tokenize_conversation
from mellama_jax.data.loader import make_sft_iterator
from mellama_jax.data.sft_records import Conversation, instruct_check, to_conversation
from mellama_jax.data.sources import RecordSource, SourceConfig
from mellama_jax.data.tokenizer import Tokenizer

ASSET = os.path.join(os.path.dirname(__file__), "assets", "llama2-tokenizer")
SYSTEM = "You are a careful clinical assistant."


def _records(shape: str, n: int = 12) -> tuple[list[dict], list[Conversation]]:
    """Records of one shape and the conversations they hold (written out by hand, not by the parser)."""
    recs, convs = [], []
    for i in range(n):
        q, a = f"Case {i}: fever {37 + i % 4}.{i} C, WBC {i + 5}k. Next step?", f"Answer {i}: blood cultures."
        q2, a2 = f"And if cultures are positive (case {i})?", f"Treat per sensitivities, day {i}."
        if shape == "messages":
            msgs = ([{"role": "system", "content": SYSTEM}] if i % 2 else []) + [
                {"role": "user", "content": q}, {"role": "assistant", "content": a}]
            if i % 3 == 0:  # multi-turn
                msgs += [{"role": "user", "content": q2}, {"role": "assistant", "content": a2}]
            recs.append({"messages": msgs})
            convs.append(Conversation(((q, a),) + (((q2, a2),) if i % 3 == 0 else ()),
                                      system=SYSTEM if i % 2 else None))
        elif shape == "sharegpt":
            turns = [{"from": "human", "value": q}, {"from": "gpt", "value": a},
                     {"from": "human", "value": q2}, {"from": "gpt", "value": a2}][: 4 if i % 2 else 2]
            recs.append({"id": f"sg{i}", "conversations": turns})
            convs.append(Conversation(((q, a),) + (((q2, a2),) if i % 2 else ())))
        elif shape == "alpaca":
            recs.append({"instruction": q, "input": f"Vitals {i}" if i % 2 else "", "output": a})
            convs.append(Conversation(((q, a),), input=f"Vitals {i}" if i % 2 else None))
        elif shape == "dolly":
            recs.append({"instruction": q, "context": f"Note {i}: stable." if i % 2 else "", "response": a,
                         "category": "closed_qa" if i % 2 else "open_qa"})
            convs.append(Conversation(((q, a),), input=f"Note {i}: stable." if i % 2 else None))
        else:  # mibe
            recs.append({"id": f"m{i}", "query": q, "answer": a, "choices": ["a", "b"], "gold": i % 2})
            convs.append(Conversation(((q, a),)))
    return recs, convs


SHAPES = ("messages", "sharegpt", "alpaca", "dolly", "mibe")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load(ASSET)


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    """Each shape as JSONL, Parquet (datasets.to_parquet), save_to_disk of a Dataset and of a DatasetDict."""
    import datasets
    datasets.disable_progress_bars()
    out = {}
    for shape in SHAPES:
        d = tmp_path_factory.mktemp(shape)
        recs, _ = _records(shape)
        jsonl = d / "data.jsonl"
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
        ds = datasets.Dataset.from_list(recs)
        ds.to_parquet(str(d / "data.parquet"))
        ds.save_to_disk(str(d / "saved"), num_shards=2)  # two Arrow shards, read in order
        datasets.DatasetDict(train=ds, test=ds.select(range(2))).save_to_disk(str(d / "saved_dict"))
        out[shape] = {"jsonl": str(jsonl), "parquet": str(d / "data.parquet"), "disk": str(d / "saved"),
                      "disk_dict": str(d / "saved_dict")}
    return out


def _conversations(path: str, fmt: str = "auto") -> list[Conversation]:
    src = RecordSource.build([SourceConfig(path)], lambda c: instruct_check(fmt), DataReport(strict=True))
    return [to_conversation(src[i][0], fmt) for i in range(len(src))]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_container_gives_the_same_examples(shape, containers, tok):
    _, expected = _records(shape)
    forms = containers[shape]
    for form, path in forms.items():
        assert _conversations(path) == expected, form  # detected shape, any container
        assert _conversations(path, shape) == expected, form  # named shape
    # The packed SFT batches are identical too (same records, same order, same tokens and masks).
    batches = {}
    for form, path in forms.items():
        cfg = dict(components=[], strict=True, num_packing_bins=4, instruct=dict(sources=[path], template="llama2_chat"))
        it = make_sft_iterator(cfg, tok, seq_len=256, global_batch_size=2, seed=3, process_index=0, process_count=1)
        batches[form] = [next(it) for _ in range(3)]
    for form in forms:
        for a, b in zip(batches["jsonl"], batches[form]):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{shape}/{form}/{k}")


def test_every_assistant_turn_is_a_target(tok):
    """A multi-turn messages record: the mask is 1 exactly on each assistant reply (and its EOS)."""
    recs, _ = _records("messages")
    conv = to_conversation(recs[3])  # system + two turns
    assert len(conv.turns) == 2 and conv.system == SYSTEM
    tokens, mask = tokenize_conversation(tok, conv, "llama2_chat")
    answers = [tok.decode(tokens[s:e]) for s, e in _runs(mask)]
    assert [a.removesuffix("</s>").strip() for a in answers] == [r for _, r in conv.turns]
    # Each turn: BOS + rendered prompt (system with the first) + reply + EOS, as Meta's reference renders it.
    first = T.render_prompt("llama2_chat", conv.turns[0][0], system=SYSTEM)
    assert tok.decode(tokens[1:_runs(mask)[0][0]]).strip() == first.strip()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask, [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


BAD = [  # (record, the file:line:field suffix the report names, the kind)
    ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "{}"}]}, "messages[1].role", "bad_record"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None,
                                                      "tool_calls": [{"id": "1"}]}]}, "messages[1].tool_calls", "bad_record"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]}, "messages[1].role", "missing_field"),
    ({"messages": [{"role": "user", "content": "q"}]}, "messages[0].role", "missing_field"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}, "messages[0].content", "missing_field"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "narrator", "value": "a"}]}, "conversations[1].from", "missing_field"),
    ({"instruction": "", "output": "a"}, "instruction", "empty_text"),
    ({"instruction": "do", "context": "c", "response": 5, "category": "qa"}, "response", "missing_field"),
    ({"text": "not an instruction"}, "record", "missing_field"),
]


def test_wrong_shapes_are_named_or_counted(tmp_path):
    good, _ = _records("messages", 3)
    lines = [json.dumps(r) for r in good[:1]] + [json.dumps(b) for b, _, _ in BAD] + [json.dumps(good[1])]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    for lineno, (record, field, kind) in enumerate(BAD, start=2):
        one = tmp_path / f"bad{lineno}.jsonl"
        one.write_text(json.dumps(good[0]) + "\n" + json.dumps(record) + "\n")
        with pytest.raises(DataError) as e:
            _conversations(str(one))
        assert str(e.value).startswith(f"{one}:2:{field}: {kind}: "), str(e.value)
    report = DataReport(strict=False)
    src = RecordSource.build([SourceConfig(str(path))], lambda c: instruct_check(), report)
    assert len(src) == 2 and report.total == len(BAD)  # the good records kept, each bad one counted
    wheres = {p.where for ps in report.examples.values() for p in ps}
    assert wheres == {f"{path}:{i}:{field}" for i, (_, field, _) in enumerate(BAD, start=2)}


def test_named_shape_per_source(tmp_path, tok):
    """A source's record_format overrides detection: a Dolly file whose records also carry "output" (which
    detection would read as Alpaca) is read as Dolly when the source says so."""
    path = tmp_path / "dolly_extra.jsonl"
    path.write_text(json.dumps({"instruction": "Name a beta blocker.", "context": "", "response": "Metoprolol.",
                                "category": "open_qa", "output": "IGNORED"}) + "\n")
    assert to_conversation(json.loads(path.read_text())).turns[0][1] == "IGNORED"
    cfg = dict(components=[], strict=True, instruct=dict(
        sources=[dict(path=str(path), record_format="dolly")], template="none"))
    it = make_sft_iterator(cfg, tok, seq_len=64, global_batch_size=1, seed=0, process_index=0, process_count=1)
    b = next(it)
    first = (b["segment_ids"][0] == 1) & (b["loss_mask"][0] == 1)  # the row packs the record repeatedly
    assert tok.decode(b["tokens"][0][first]).removesuffix("</s>").strip() == "Metoprolol."
    with pytest.raises(DataError, match="record_format='chatml'"):
        SourceConfig(str(path), record_format="chatml")
