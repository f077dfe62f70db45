"""Named prompt templates: how an instruction (and optional input) is shown to the model.

* "me_llama"    — Me-LLaMA's wrapper: "Human: \\n{prompt}\\n\\nAssistant: \\n"
* "llama2_chat" — LLaMA-2-chat as Meta's reference chat code renders it (facebookresearch/llama,
                  llama/generation.py `chat_completion`): a turn is "[INST] {prompt} [/INST] {answer} " with
                  prompt (optional <<SYS>> block first) and answer stripped; the generation prompt ends at
                  "[/INST]", so the answer's first piece carries its space ("]", "▁It") in training and at
                  generation alike. BOS/EOS are ids around each turn, never text.
* "alpaca"      — Stanford Alpaca: "### Instruction: / ### Input: / ### Response:" with its preamble.
* "none"        — the prompt as is (input appended after a blank line).

`render_prompt` is what both SFT data and zero-shot evaluation call, so training and evaluation see the
same text. `render_example` adds the response (`render_answer`); `parse_example` inverts `render_example` (round trip).
`hf_chat_template(name)` gives the equivalent Jinja template stored in exported tokenizer configs, so
`transformers`' `apply_chat_template` renders the same prompt.
"""
from __future__ import annotations

import dataclasses
import string

from mellama_jax.data.errors import DataError

ALPACA_PREAMBLE_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                         "further context. Write a response that appropriately completes the request.\n\n")
ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n")


@dataclasses.dataclass(frozen=True)
class Template:
    """One prompt template, as format strings (the single definition both `render_prompt` and the Jinja
    `hf_chat_template` are generated from). A turn is rendered as

        prefix + system_format(system, if any) + body(prompt[, input]) + suffix      (the prompt)
        answer_prefix + answer + answer_suffix                                        (the answer)

    With `strip`, the prompt (system block and body together) and the answer are stripped of surrounding
    whitespace first, as Meta's LLaMA-2 chat code does.
    """
    name: str
    prefix: str  # text before the prompt
    suffix: str  # text after the prompt, right before the response (the answer marker)
    input_separator: str  # joins prompt and input for templates without an input slot
    system_format: str = "{system}\n\n"  # how a system prompt is placed before the user prompt
    body_format: str = "{prompt}"  # the prompt without an input
    input_body_format: str = "{prompt}{input_separator}{input}"  # the prompt with an input
    answer_prefix: str = ""
    answer_suffix: str = ""
    strip: bool = False


TEMPLATES: dict[str, Template] = {
    "me_llama": Template("me_llama", "Human: \n", "\n\nAssistant: \n", "\n\n"),
    "llama2_chat": Template("llama2_chat", "[INST] ", " [/INST]", "\n\n", "<<SYS>>\n{system}\n<</SYS>>\n\n",
                            answer_prefix=" ", answer_suffix=" ", strip=True),
    "alpaca": Template("alpaca", "", "\n\n### Response:\n", "",
                       body_format=ALPACA_PREAMBLE + "### Instruction:\n{prompt}",
                       input_body_format=ALPACA_PREAMBLE_INPUT + "### Instruction:\n{prompt}\n\n### Input:\n{input}"),
    "none": Template("none", "", "", "\n\n"),
}
TEMPLATE_NAMES = tuple(TEMPLATES)


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise DataError(f"unknown template {name!r}; expected one of {list(TEMPLATES)}")
    return TEMPLATES[name]


def render_prompt(name: str, prompt: str, input: str | None = None, *, system: str | None = None) -> str:
    """The text the model sees before its answer (zero-shot evaluation and SFT prompts)."""
    t = get_template(name)
    if input:
        body = t.input_body_format.format(prompt=prompt, input=input, input_separator=t.input_separator)
    else:
        body = t.body_format.format(prompt=prompt)
    head = t.system_format.format(system=system) if system is not None else ""  # "" too, as Meta's code
    shown = (head + body).strip() if t.strip else head + body
    return f"{t.prefix}{shown}{t.suffix}"


def render_answer(name: str, response: str) -> str:
    """The text of an answer after its prompt (EOS, an id, follows it)."""
    t = get_template(name)
    return f"{t.answer_prefix}{response.strip() if t.strip else response}{t.answer_suffix}"


def render_example(name: str, prompt: str, response: str, input: str | None = None, *,
                   system: str | None = None) -> str:
    return render_prompt(name, prompt, input, system=system) + render_answer(name, response)


def parse_example(name: str, text: str) -> tuple[str, str | None, str]:
    """(prompt, input, response) of a text made by `render_example` without a system prompt.

    The first occurrence of the template's answer marker ends the prompt, so a prompt that itself contains
    the marker cannot round-trip (for "none" there is no marker: everything is prompt).
    """
    t = get_template(name)
    if name == "none":
        return text, None, ""
    if not text.startswith(t.prefix):
        raise DataError(f"text does not start with the {name!r} template prefix {t.prefix!r}")
    body_and_response = text[len(t.prefix):]
    if name == "alpaca":
        marker = "\n\n### Response:\n"
        idx = body_and_response.find(marker)
        if idx < 0:
            raise DataError(f"text has no {marker!r} marker of the alpaca template")
        body, response = body_and_response[:idx], body_and_response[idx + len(marker):]
        if body.startswith(ALPACA_PREAMBLE_INPUT):
            rest = body[len(ALPACA_PREAMBLE_INPUT):]
            instruction, _, inp = rest.partition("\n\n### Input:\n")
            return instruction.removeprefix("### Instruction:\n"), inp, response
        if body.startswith(ALPACA_PREAMBLE):
            return body[len(ALPACA_PREAMBLE):].removeprefix("### Instruction:\n"), None, response
        raise DataError("alpaca text has no recognised preamble")
    idx = body_and_response.find(t.suffix)
    if idx < 0:
        raise DataError(f"text has no {t.suffix!r} marker of the {name!r} template")
    answer = body_and_response[idx + len(t.suffix):]
    answer = answer.removeprefix(t.answer_prefix)
    answer = answer[:len(answer) - len(t.answer_suffix)] if t.answer_suffix and answer.endswith(t.answer_suffix) \
        else answer
    return body_and_response[:idx], None, answer


def wrap_zero_shot(query: str, template: str = "none") -> str:
    """Helper for evaluation: a MIBE query as the model should see it under `template`."""
    return render_prompt(template, query)


def strip_response(text: str, template: str = "none") -> str:
    """Clean a generated answer: drop a leading/trailing whitespace and a runaway next-turn marker."""
    cut_markers = {"me_llama": ("\nHuman:",), "llama2_chat": ("[INST]",), "alpaca": ("\n### Instruction:",)}
    for marker in cut_markers.get(template, ()):
        idx = text.find(marker)
        if idx >= 0:
            text = text[:idx]
    return text.strip()


def hf_chat_template(name: str, *, generation_blocks: bool = False) -> str:
    """The Jinja chat template (tokenizer_config.json's `chat_template`) equivalent to our SFT rendering.

    Generated from the same `Template` definition as `render_prompt`. For messages [system?, user,
    assistant, user, ...] it renders each user turn as `bos_token + render_prompt(...)` (the system prompt
    and a user message's optional "input" field go with the first user turn, as in our SFT data) and each
    assistant turn as `render_answer(content) + eos_token`: BOS/EOS are special tokens, so transformers maps them to ids and
    encodes each turn's text separately, as `instruct.tokenize_conversation` does. The answer marker
    (`suffix`) belongs to the user turn, as in Meta's LLaMA-2 template, so `add_generation_prompt` adds
    nothing and a prompt without it still gets the marker. generation_blocks: wrap each answer in
    transformers' `{% generation %}` tags (for `apply_chat_template(..., return_assistant_tokens_mask=True)`;
    off by default, as Jinja engines outside transformers do not know the tag).
    """
    t = get_template(name)
    system = _jinja_format(t.system_format, system="system")
    body = _jinja_format(t.body_format, prompt="message['content']")
    input_body = _jinja_format(t.input_body_format, prompt="message['content']", input="message['input']",
                               input_separator=_jinja_str(t.input_separator))
    shown = (f"(({system}) if (has_system and loop.first) else '') + "
             f"(({input_body}) if message.get('input') else ({body}))")
    shown = f"({shown}).strip()" if t.strip else shown
    user = f"{{{{ bos_token + {_jinja_str(t.prefix)} + {shown} + {_jinja_str(t.suffix)} }}}}"
    content = "message['content'].strip()" if t.strip else "message['content']"
    answer = f"{{{{ {_jinja_str(t.answer_prefix)} + {content} + {_jinja_str(t.answer_suffix)} + eos_token }}}}"
    if generation_blocks:
        answer = "{% generation %}" + answer + "{% endgeneration %}"
    return (
        "{% set has_system = messages and messages[0]['role'] == 'system' %}"
        "{% if has_system %}{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
        "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
        "{% for message in turns %}"
        "{% if message['role'] not in ('user', 'assistant') or (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate user/assistant/user/... (after an optional system message)') }}"
        "{% endif %}"
        "{% if message.get('input') and not loop.first %}"
        "{{ raise_exception('only the first user message can carry an input field') }}"
        "{% endif %}"
        "{% if message['role'] == 'user' %}" + user +
        "{% else %}" + answer + "{% endif %}"
        "{% endfor %}"
    )


def _jinja_format(fmt: str, **fields: str) -> str:
    """A Jinja expression concatenating `fmt`'s literal text and its {fields} (given as Jinja expressions)."""
    parts = []
    for literal, field, spec, conversion in string.Formatter().parse(fmt):
        if literal:
            parts.append(_jinja_str(literal))
        if field is not None:
            if spec or conversion or field not in fields:
                raise ValueError(f"template field {{{field}}} cannot be rendered in Jinja")
            parts.append(fields[field])
    return " + ".join(parts) or "''"


def _jinja_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
