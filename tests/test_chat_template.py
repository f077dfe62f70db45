"""Chat templates in the export: transformers' apply_chat_template = our SFT token ids, for every template.

Reference: transformers' `apply_chat_template` (its Jinja renderer and tokenizer) on the exported files of
Meta's real LLaMA-2 tokenizer, against our SFT pipeline (`parse_record` + `tokenize_conversation`).
"""
import os

import pytest

from mellama_jax.data import templates as T
from mellama_jax.data.errors import DataError
from mellama_jax.data.hf_tokenizer import save_hf_tokenizer
from mellama_jax.data.instruct import parse_record, render_chat, tokenize_conversation
from mellama_jax.data.tokenizer import Tokenizer

ASSET = os.path.join(os.path.dirname(__file__), "assets", "llama2-tokenizer")
CHAT_TEMPLATES = ("me_llama", "llama2_chat", "alpaca")

SYSTEM = "You are a careful clinical assistant.  Answer briefly."
CONVERSATIONS = {
    "single": [("What is the first-line therapy for asthma?", "Inhaled corticosteroids.")],
    "multi": [("Pt: WBC 12.3  (H), T 38.4.  Infection?", " Possibly;  obtain cultures.\n  - CXR"),
              ("And if the CXR shows a RLL infiltrate?", "Treat as community-acquired pneumonia."),
              ("Dose of ceftriaxone?", "1 g IV q24h.")],
    "whitespace": [("  leading spaces and\ttabs  ", "   answer with leading spaces"),
                   ("患者は発熱。 🧬", "")],
}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load(ASSET)


@pytest.fixture(scope="module")
def exports(tok, tmp_path_factory):
    import transformers
    out = {}
    for name in CHAT_TEMPLATES:
        d = str(tmp_path_factory.mktemp(name))
        save_hf_tokenizer(tok, d, chat_template=T.hf_chat_template(name))
        out[name] = transformers.AutoTokenizer.from_pretrained(d)
    return out


def _messages(turns, system=None, input=None, ask=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for i, (q, a) in enumerate(turns):
        msgs.append({"role": "user", "content": q, **({"input": input} if input and i == 0 else {})})
        msgs.append({"role": "assistant", "content": a})
    if ask is not None:
        msgs.append({"role": "user", "content": ask, **({"input": input} if input and not turns else {})})
    return msgs


def _sft_ids(tok, template, turns, system=None, input=None):
    """Our SFT pipeline on the same conversation, given as a Me-LLaMA record (or Alpaca's, with an input)."""
    if input is not None:
        assert len(turns) == 1
        record = {"instruction": turns[0][0], "input": input, "output": turns[0][1]}
    else:
        conv = [{"from": "system", "value": system}] if system else []
        for q, a in turns:
            conv += [{"from": "human", "value": q}, {"from": "agent", "value": a}]
        record = {"conversations": conv}
    conversation, reason = parse_record(record)
    assert reason is None
    return tokenize_conversation(tok, conversation, template)[0].tolist()


@pytest.mark.parametrize("template", CHAT_TEMPLATES)
@pytest.mark.parametrize("case", sorted(CONVERSATIONS))
@pytest.mark.parametrize("system", [None, SYSTEM])
def test_apply_chat_template_equals_sft_ids(exports, tok, template, case, system):
    hf = exports[template]
    turns = CONVERSATIONS[case]
    # A complete conversation: exactly the SFT token sequence.
    messages = _messages(turns, system=system)
    got = hf.apply_chat_template(messages, tokenize=True)["input_ids"]
    assert got == _sft_ids(tok, template, turns, system=system)
    assert render_chat(messages, template, tok) == got
    # The same conversation asking one more question: SFT ids of the answered turns + the generation prompt.
    ask = "Anything else?  Be brief."
    messages = _messages(turns, system=system, ask=ask)
    got = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    expected = _sft_ids(tok, template, turns, system=system) + tok.encode(T.render_prompt(template, ask))
    assert got == expected
    assert render_chat(messages, template, tok) == expected


@pytest.mark.parametrize("template", CHAT_TEMPLATES)
def test_first_question_with_system_and_input(exports, tok, template):
    hf = exports[template]
    q, inp = "Summarize the note.", "Pt stable.  Will discharge.\n  - CXR clear"
    messages = _messages([], system=SYSTEM, input=inp, ask=q)
    got = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    expected = tok.encode(T.render_prompt(template, q, inp, system=SYSTEM), bos=True)
    assert got == expected == render_chat(messages, template, tok)
    # with an answer: the Alpaca record path of our SFT pipeline
    answered = _messages([(q, "Stable; discharge.")], input=inp)
    assert (hf.apply_chat_template(answered, tokenize=True)["input_ids"]
            == _sft_ids(tok, template, [(q, "Stable; discharge.")], input=inp))


def test_rendered_text_is_render_prompt(exports):
    hf = exports["llama2_chat"]
    messages = _messages([("Dose of X?", "40 mg.")], system="Answer briefly.", ask="And Y?")
    text = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<s>" + T.render_example("llama2_chat", "Dose of X?", "40 mg.", system="Answer briefly.")
                    + "</s><s>" + T.render_prompt("llama2_chat", "And Y?"))


def test_bad_role_order_is_refused(exports, tok):
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(Exception, match="alternate"):
        exports["me_llama"].apply_chat_template(bad, tokenize=False)
    with pytest.raises(DataError, match=r"messages\[1\]: expected a assistant|messages\[1\]"):
        render_chat(bad, "me_llama", tok)


def test_user_text_with_control_tokens(exports, tok):
    """The one documented difference (docs/tokenizer.md): a literal "</s>" typed in a message. transformers
    reads it as EOS by default; with sanitize_control_tokens=True it stays text but is encoded as a segment
    of its own ("▁", "</" instead of our "▁</"), so the ids differ from ours around it."""
    hf = exports["me_llama"]
    messages = [{"role": "user", "content": "what does </s> mean?"}]
    ours = render_chat(messages, "me_llama", tok)
    default = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    sanitized = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       sanitize_control_tokens=True)["input_ids"]
    assert tok.eos_id in default and tok.eos_id not in ours
    assert tok.eos_id not in sanitized and hf.decode(sanitized) == hf.decode(ours)
    assert sanitized != ours
