"""Tokenizer parity with transformers, LLaMA-2 training options, HF files, and the prompt templates."""
import os
import random

import pytest
from data_fixtures import make_demo

from mellama_jax.data import templates as T
from mellama_jax.data.errors import DataError
from mellama_jax.data.hf_tokenizer import save_hf_tokenizer
from mellama_jax.data.tokenizer import Tokenizer, train_tokenizer

VARIED = [
    "",
    "The patient received 40 mg of furosemide at 10:30.",
    "Dosis: 2,5 mg/kg — Äther, naïve café; 患者は発熱。Ωmega ≥ 3.14159",
    "emoji 🧬 and tabs\tinside\ttext",
    "line one\nline two\n\nline four\n",
    "inner   whitespace    runs  here",
    "trailing spaces   ",
    "digits 1234567890 and 2023-11-05 and 3.5e-7",
    "MIXED case ACRONYMS: MRI, CT, ECG, HbA1c",
    "\n\n",
    "a",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tok"))
    data, tok = make_demo(root, scale=0.5)
    hf_dir = os.path.join(root, "hf")
    save_hf_tokenizer(tok, hf_dir, chat_template=T.hf_chat_template("llama2_chat"))
    return tok, hf_dir


def test_ids_equal_transformers(demo):
    import transformers
    tok, hf_dir = demo
    hf = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert len(hf) == tok.vocab_size  # transformers 5 builds an empty tokenizer from tokenizer.model alone
    for text in VARIED:
        assert tok.encode(text) == hf(text)["input_ids"], repr(text)
        assert tok.decode(tok.encode(text, bos=False)) == hf.decode(hf(text, add_special_tokens=False)["input_ids"])
    # Leading whitespace runs too (transformers' own LLaMA conversion drops a "▁" there; ours does not).
    assert tok.encode("  leading") == hf("  leading")["input_ids"]


def test_bos_eos_and_special_ids(demo):
    tok, _ = demo
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 0)
    assert tok.encode("x", bos=True, eos=True)[0] == 1 and tok.encode("x", bos=True, eos=True)[-1] == 2
    assert tok.encode("x", bos=False)[0] != 1
    # "<s>" in a document is text, never a control token (as in LLaMA-2's sentencepiece usage).
    assert 1 not in tok.encode("<s> and </s>", bos=False) and 2 not in tok.encode("</s>", bos=False)


def test_trained_with_llama2_options(demo):
    from sentencepiece import sentencepiece_model_pb2 as pb
    tok, _ = demo
    proto = pb.ModelProto()
    with open(tok.model_path, "rb") as f:
        proto.ParseFromString(f.read())
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    assert spec.model_type == pb.TrainerSpec.BPE
    assert spec.byte_fallback and spec.split_digits and spec.allow_whitespace_only_pieces
    assert not norm.remove_extra_whitespaces and norm.add_dummy_prefix and norm.name == "identity"
    assert (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id) == (0, 1, 2, -1)
    assert tok.vocab_size == 1024
    # byte fallback: an unseen character becomes byte pieces, not <unk>
    assert tok.unk_id not in tok.encode("ʬ", bos=False)


def test_hf_files_and_load(demo, tmp_path):
    tok, hf_dir = demo
    again = Tokenizer.load(hf_dir)
    assert again.sha256 == tok.sha256 and again.encode(VARIED[2]) == tok.encode(VARIED[2])
    assert Tokenizer.load(os.path.join(hf_dir, "tokenizer.model")).sha256 == tok.sha256
    with pytest.raises(DataError, match="no tokenizer.model in this directory"):
        Tokenizer.load(str(tmp_path))
    with pytest.raises(DataError, match="no such sentencepiece model file"):
        Tokenizer.load(str(tmp_path / "missing.model"))
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a sentencepiece model"):
        Tokenizer(str(bad))


def test_chat_template_survives_export(demo):
    import transformers
    tok, hf_dir = demo
    hf = transformers.AutoTokenizer.from_pretrained(hf_dir)
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Dose of X?"},
                {"role": "assistant", "content": "40 mg."}, {"role": "user", "content": "And Y?"}]
    ours = ("<s>" + T.render_example("llama2_chat", "Dose of X?", "40 mg.", system="Answer briefly.") + "</s>"
            + "<s>" + T.render_prompt("llama2_chat", "And Y?"))
    assert hf.apply_chat_template(messages, tokenize=False) == ours


@pytest.mark.parametrize("name", ["me_llama", "llama2_chat", "alpaca"])
def test_template_round_trip(name):
    r = random.Random(0)
    alphabet = "abc xyz\n:#.?é0123"
    for _ in range(200):
        prompt = "".join(r.choice(alphabet) for _ in range(r.randint(1, 40))).strip() or "q"
        response = "".join(r.choice(alphabet) for _ in range(r.randint(0, 40)))
        inp = "".join(r.choice(alphabet) for _ in range(r.randint(1, 20))).strip() if r.random() < 0.5 else None
        inp = inp or None  # an empty input renders as no input
        marker = {"me_llama": "\n\nAssistant: \n", "llama2_chat": " [/INST]", "alpaca": "\n\n### Response:\n"}[name]
        if name == "llama2_chat":  # Meta's chat code strips prompt and answer
            prompt, response, inp = prompt.strip() or "q", response.strip(), inp and inp.strip() or None
        if marker in prompt + (inp or ""):
            continue
        text = T.render_example(name, prompt, response, input=inp)
        got_prompt, got_input, got_response = T.parse_example(name, text)
        assert got_response == response
        if name == "alpaca":
            assert (got_prompt, got_input) == (prompt, inp)
        else:  # templates without an input slot carry the input inside the prompt
            assert got_prompt == (prompt if not inp else f"{prompt}\n\n{inp}")


def test_template_texts():
    assert T.render_prompt("me_llama", "Q?") == "Human: \nQ?\n\nAssistant: \n"
    assert T.render_prompt("llama2_chat", "  Q? ") == "[INST] Q? [/INST]"
    assert T.render_prompt("llama2_chat", "Q?", system="S") == "[INST] <<SYS>>\nS\n<</SYS>>\n\nQ? [/INST]"
    assert T.render_example("llama2_chat", "Q?", " A. ") == "[INST] Q? [/INST] A. "
    assert T.render_prompt("alpaca", "Do it", "ctx").endswith("### Instruction:\nDo it\n\n### Input:\nctx\n\n### Response:\n")
    assert T.render_prompt("none", "Q?") == "Q?" and T.wrap_zero_shot("Q?", "none") == "Q?"
    assert T.strip_response(" yes\nHuman: more", "me_llama") == "yes"
    with pytest.raises(DataError, match="unknown template"):
        T.render_prompt("vicuna", "Q?")


def test_train_tokenizer_is_atomic_on_failure(tmp_path):
    with pytest.raises(DataError):
        train_tokenizer(["tiny text"], str(tmp_path / "t"), vocab_size=50000)
    assert not (tmp_path / "t" / "tokenizer.model").exists()
