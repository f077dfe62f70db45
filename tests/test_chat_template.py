"""Chat templates in the export: transformers' apply_chat_template = our SFT token ids, for every template.

Reference: transformers' `apply_chat_template` (its Jinja renderer and tokenizer) on the exported files of
Meta's real LLaMA-2 tokenizer, against our SFT pipeline (`parse_record` + `tokenize_conversation`).
"""
import os

import pytest

from mellama_jax.data import templates as T
from mellama_jax.data.chat import render_conversation
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


# ------------------------------------------------------------------ golden set: data.chat.render_conversation
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"  # Meta's chat_completion markers (facebookresearch/llama)
GOLDEN = {  # name: (system, [(user, assistant), ...], final user question or None)
    "single": (None, [("What is the first-line therapy for asthma?", "Inhaled corticosteroids.")], None),
    "system": (SYSTEM, [("Dose of metformin?", "500 mg twice daily.")], "And the maximum?"),
    "multi_turn": ("Answer as a cardiologist.", CONVERSATIONS["multi"], "Duration?"),
    "empty_user": (None, [("", "Nothing was asked.")], ""),
    "empty_answer": (None, [("Say nothing.", ""), ("Now say yes.", "Yes.")], None),
    "empty_system": ("", [("Q?", "A.")], None),
    "unicode": ("Réponds en français.", [("Température 38,5 °C — 患者は発熱。 🧬 ¿dolor?", "Paracétamol 1 g; 解熱剤。")],
                "Ñandú — ça va? 🫀"),
    "space_runs": (None, [("Pt is stable.  Will discharge.\n  - CXR   clear\t\tok", "  Agree.   F/u  2 wk.  "),
                          ("   spaced   out   ", "\n\nanswer\n")], "WBC 12.3  (H)\tHgb  9.1 (L)   ?"),
    "control_text": (None, [("what does </s> or <s> mean?", "End </s> and start <s> markers.")], None),
}


def _golden_messages(case):
    system, turns, ask = GOLDEN[case]
    msgs = [{"role": "system", "content": system}] if system is not None else []
    for q, a in turns:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    if ask is not None:
        msgs.append({"role": "user", "content": ask})
    return msgs, ask is not None


@pytest.fixture(scope="module")
def tagged_exports(tok, tmp_path_factory):
    """Exports whose templates carry {% generation %} tags: transformers' own assistant masks."""
    import transformers
    out = {}
    for name in CHAT_TEMPLATES:
        d = str(tmp_path_factory.mktemp(f"{name}_tagged"))
        save_hf_tokenizer(tok, d, chat_template=T.hf_chat_template(name, generation_blocks=True))
        out[name] = transformers.AutoTokenizer.from_pretrained(d)
    return out


def _runs(mask):
    """[start, end) runs of ones."""
    runs, start = [], None
    for i, m in enumerate(list(mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("template", CHAT_TEMPLATES)
@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden_set_ids_and_masks_equal_apply_chat_template(exports, tagged_exports, tok, template, case):
    """ids == apply_chat_template on our export of the real LLaMA-2 tokenizer; the loss mask, derived from the
    plain template by prefix renders, == transformers' assistant mask of the tagged template, turn by turn."""
    messages, asking = _golden_messages(case)
    ids, mask = render_conversation(messages, template, tok, add_generation_prompt=asking)
    if case == "control_text":  # transformers reads typed control texts as control tokens unless sanitized
        ref = exports[template].apply_chat_template(messages, add_generation_prompt=asking, tokenize=True,
                                                    sanitize_control_tokens=True)["input_ids"]
        assert tok.decode(ids.tolist()) == exports[template].decode(ref, skip_special_tokens=True)
        assert ids.tolist().count(tok.eos_id) == 1 and ids.tolist().count(tok.bos_id) == 1  # typed ones stay text
        return
    ref = exports[template].apply_chat_template(messages, add_generation_prompt=asking, tokenize=True)["input_ids"]
    assert ids.tolist() == ref
    tagged = tagged_exports[template].apply_chat_template(messages, add_generation_prompt=asking, tokenize=True,
                                                         return_dict=True, return_assistant_tokens_mask=True)
    assert tagged["input_ids"] == ref
    assert mask.tolist() == tagged["assistant_masks"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    runs = _runs(mask)
    assert len(runs) == len(answers)  # one masked run per assistant turn
    for (begin, end), answer in zip(runs, answers):
        assert ids[end - 1] == tok.eos_id and ids[begin - 1] != tok.eos_id
        assert tok.decode(ids[begin:end - 1].tolist()).strip() == answer.strip()
    # The tagged template gives the same mask through the {% generation %} path.
    tagged_ids, tagged_mask = render_conversation(messages, T.hf_chat_template(template, generation_blocks=True), tok,
                                                  add_generation_prompt=asking)
    assert tagged_ids.tolist() == ref and tagged_mask.tolist() == mask.tolist()


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_llama2_chat_is_metas_reference_encoding(tok, case):
    """llama2_chat == Meta's chat_completion: past turns encode(f"[INST] {q} [/INST] {a} ", BOS+EOS), the last
    question encode(f"[INST] {q} [/INST]", BOS): the generation prompt ends at "]", not a lone "▁"."""
    system, turns, ask = GOLDEN[case]
    dialog = [q for qa in turns for q in qa] + ([ask] if ask is not None else [])
    if system is not None:  # an empty system message still gets its block, as in Meta's code
        dialog[0] = B_SYS + system + E_SYS + dialog[0]
    want = []
    for i in range(0, len(dialog) - 1, 2):
        want += tok.encode(f"[INST] {dialog[i].strip()} [/INST] {dialog[i + 1].strip()} ", bos=True, eos=True)
    if ask is not None:
        want += tok.encode(f"[INST] {dialog[-1].strip()} [/INST]", bos=True)
    messages, asking = _golden_messages(case)
    ids = render_conversation(messages, "llama2_chat", tok, add_generation_prompt=asking)[0].tolist()
    assert ids == want
    if asking:
        assert tok.id_to_piece(ids[-1]) == "]" and ids[-1] != 29871


# A user's own Jinja template (ChatML-like role tags written as text), with and without generation tags.
USER_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{{ '<|assistant|>\\n' }}{% generation %}{{ m['content'] + eos_token }}"
    "{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ bos_token + '<|' + m['role'] + '|>\\n' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def test_user_jinja_template_for_training_masks_like_transformers(tok, tmp_path):
    """A tokenizer_config.json chat template used for SFT: ids and assistant masks equal transformers'
    apply_chat_template (tagged), and the mask derived without the tags is the same."""
    import transformers

    from mellama_jax.data.chat import load_chat_template
    save_hf_tokenizer(tok, str(tmp_path), chat_template=USER_TEMPLATE)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    plain = USER_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    for case in sorted(GOLDEN):
        messages, asking = _golden_messages(case)
        if case == "control_text":
            continue
        ref = hf.apply_chat_template(messages, add_generation_prompt=asking, tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
        ids, mask = render_conversation(messages, load_chat_template(str(tmp_path / "tokenizer_config.json")), tok,
                                        add_generation_prompt=asking)
        assert ids.tolist() == ref["input_ids"] and mask.tolist() == ref["assistant_masks"], case
        ids2, mask2 = render_conversation(messages, plain, tok, add_generation_prompt=asking)
        # Without tags the span also covers the "\n" that closes the turn (what the message adds).
        assert ids2.tolist() == ids.tolist()
        assert [r[0] for r in _runs(mask2)] == [r[0] for r in _runs(mask)], case


def test_template_whose_history_changes_is_refused(tok):
    """A template rendering earlier turns differently once more follow (here: a marker only on the last
    message) has no prefix-stable assistant spans: refused, naming the message."""
    shifting = ("{% for m in messages %}{{ bos_token + m['role'] + ': ' + m['content'] }}"
                "{% if loop.last %}{{ ' (last)' }}{% endif %}{{ eos_token }}{% endfor %}")
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(DataError, match=r"message 1 \(assistant\).*generation"):
        render_conversation(messages, shifting, tok)
