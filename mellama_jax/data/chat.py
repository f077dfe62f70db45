"""Chat conversations to token ids and a loss mask, with any chat template: ours by name or a Jinja one.

`render_conversation(messages, template, tokenizer)` is the one rendering of a conversation that SFT data,
the generate path and the API use. `template` is
* a named template of templates.py ("llama2_chat", "me_llama", ...), rendered through its Jinja form
  (`templates.hf_chat_template`, the `chat_template` our exports carry);
* a `ChatTemplate`, or a Jinja source, or a path: a tokenizer_config.json (its `chat_template`), a
  chat_template.jinja, or a model directory holding either (`load_chat_template`).

How it renders, as transformers' `apply_chat_template` does (transformers/utils/chat_template_utils.py,
read in transformers 5.25): a sandboxed Jinja environment with trim_blocks and lstrip_blocks, the
loopcontrols extension, `raise_exception`, `strftime_now`, a `tojson` filter without HTML escaping, and the
tokenizer's special tokens (`bos_token`, `eos_token`, `unk_token`) as variables. The text is then tokenized
as transformers tokenizes it with our exported tokenizer.json (data/hf_tokenizer.py): control-token texts
("<s>", "</s>", "<unk>") become their ids, and each text segment between them is encoded by sentencepiece
with its own dummy-prefix "▁" — which is also how Meta's reference chat code encodes each LLaMA-2 turn.

The loss mask is 1 on what each assistant message adds to the text: its content and whatever the template
closes the turn with (EOS). Where the template marks it with transformers' `{% generation %}` blocks, those
spans are used; otherwise the span of assistant message k is found by rendering the conversation up to k
with the generation prompt, and up to and including k: the text between the two (a template whose renders
are not prefixes of each other is refused, naming the message). A token is masked when it covers any
masked character (sentencepiece's "▁It" spanning "[/INST]" and " It" belongs to the answer).

A control-token text typed inside a message ("what does </s> mean?") stays text, as our `Tokenizer` and
Meta's code keep it: message strings reach the template with such texts masked by same-length private-use
placeholders, restored before sentencepiece encodes the segment (transformers would read it as the
control token unless `sanitize_control_tokens=True`; docs/tokenizer.md).

One tokenizer setting of a model directory is followed: transformers 5 builds a `LlamaTokenizer` named in
tokenizer_config.json with `legacy` not true (Meta's Llama-2 HF directories say `"legacy": false`) so that
a segment after a control token gets no "▁" ("<s>" "[" where sentencepiece and Meta's chat code give
"<s>" "▁["). Such a model's own users and fine-tuners feed it that way, so its stored template is rendered
that way (`space_after_special=False`); our exports name `PreTrainedTokenizerFast` and keep the "▁".
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from datetime import datetime
from typing import Any, Sequence

import jinja2
import jinja2.ext
import jinja2.sandbox
import numpy as np

from mellama_jax import paths
from mellama_jax.data.errors import DataError
from mellama_jax.data.templates import TEMPLATES, hf_chat_template

TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5's save_pretrained puts a chat template


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template and where it came from (for messages)."""
    source: str
    origin: str  # "llama2_chat", "/path/tokenizer_config.json", "<jinja>"
    name: str | None = None  # the named template it was generated from, if any
    # Whether a text segment right after a control token gets sentencepiece's dummy-prefix "▁" (module doc).
    space_after_special: bool = True

    @property
    def compiled(self) -> jinja2.Template:
        return _compile(self.source)

    def __str__(self) -> str:
        return self.name or self.origin


class _GenerationBlocks(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' convention): renders the body, and records its
    character span when a span list is active (`render_text`)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_track"), [], [], body).set_lineno(lineno)

    def _track(self, caller):
        text = caller()
        if _TRACKING:
            chunks, spans = _TRACKING[-1]
            start = sum(len(c) for c in chunks)
            spans.append((start, start + len(text)))
        return text


_TRACKING: list[tuple[list[str], list[tuple[int, int]]]] = []  # the render in progress (single-threaded Jinja)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[_GenerationBlocks, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise DataError(f"chat template: Jinja syntax error at line {e.lineno}: {e.message}") from None


def chat_template_in_dir(directory: str | os.PathLike) -> ChatTemplate | None:
    """The chat template stored in a model/tokenizer directory, or None: chat_template.jinja first
    (transformers 5 writes it there), else tokenizer_config.json's `chat_template` (a string, or a list of
    {"name", "template"} of which "default" is used)."""
    config_path = paths.join(directory, TOKENIZER_CONFIG)  # local or gs://
    config = _read_config(config_path) if paths.resolve(config_path).is_file() else {}
    cls, legacy = config.get("tokenizer_class") or "", config.get("legacy")
    space = not (cls.startswith("LlamaTokenizer") and legacy is not True)
    jinja_path = paths.join(directory, CHAT_TEMPLATE_FILE)
    if paths.resolve(jinja_path).is_file():
        return ChatTemplate(paths.resolve(jinja_path).read_text(encoding="utf-8"), jinja_path,
                            space_after_special=space)
    source = _template_in_config(config, config_path) if config else None
    return ChatTemplate(source, config_path, space_after_special=space) if source else None


def _read_config(path: str) -> dict:
    try:
        config = json.loads(paths.resolve(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the tokenizer config ({e})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object")
    return config


def _template_in_config(config: dict, path: str) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: transformers uses "default"
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    if template is not None and not isinstance(template, str):
        raise DataError(f"{path}: field chat_template: expected a Jinja string, got {type(template).__name__}")
    return template


def load_chat_template(spec: "str | os.PathLike | ChatTemplate") -> ChatTemplate:
    """A ChatTemplate from a template name, a Jinja source, a tokenizer_config.json, a .jinja file, or a
    directory holding one of those (module doc)."""
    if isinstance(spec, ChatTemplate):
        return spec
    spec = os.fspath(spec)
    if spec in TEMPLATES:
        return ChatTemplate(hf_chat_template(spec), spec, name=spec)
    if "{{" in spec or "{%" in spec:
        return ChatTemplate(spec, "<jinja>")
    if os.path.isdir(spec):
        found = chat_template_in_dir(spec)
        if found is None:
            raise DataError(f"{spec}: no chat template here (neither {CHAT_TEMPLATE_FILE} nor a chat_template "
                            f"field in {TOKENIZER_CONFIG})")
        return found
    if os.path.isfile(spec):
        if spec.endswith(".json"):
            if os.path.basename(spec) == TOKENIZER_CONFIG:
                found = chat_template_in_dir(os.path.dirname(spec) or ".")
                if found is not None and found.origin.endswith(TOKENIZER_CONFIG):
                    return found
            source = _template_in_config(_read_config(spec), spec)
            if not source:
                raise DataError(f"{spec}: no chat_template field")
            return ChatTemplate(source, spec)
        with open(spec, encoding="utf-8") as f:
            return ChatTemplate(f.read(), spec)
    raise DataError(f"chat template {spec!r}: expected a template name ({', '.join(TEMPLATES)}), a Jinja "
                    f"string, a tokenizer_config.json, a .jinja file or a directory holding one")


def special_tokens(tokenizer) -> dict[str, int]:
    """Control-token texts the tokenizer maps to ids inside a rendered chat (as our exported tokenizer.json)."""
    return {tokenizer.id_to_piece(i): i for i in (tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) if i >= 0}


def _placeholders(tokenizer) -> dict[str, str]:
    """Each control-token text -> a private-use string of the same length (so character offsets hold)."""
    return {s: chr(0xF0000 + k) + chr(0xF00FF) * (len(s) - 1) for k, s in enumerate(special_tokens(tokenizer))}


def _mask_specials(value, placeholders: dict[str, str]):
    if isinstance(value, str):
        for text, hidden in placeholders.items():
            value = value.replace(text, hidden)
        return value
    if isinstance(value, dict):
        return {k: _mask_specials(v, placeholders) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_specials(v, placeholders) for v in value]
    return value


def render_text(template: ChatTemplate, messages: Sequence[dict], tokenizer, *, add_generation_prompt: bool = False,
                **kwargs) -> tuple[str, list[tuple[int, int]]]:
    """(text, spans of `{% generation %}` blocks) of `messages` rendered as transformers renders them;
    control-token texts inside the messages come back as placeholders (`encode_rendered` restores them)."""
    messages = _mask_specials([dict(m) for m in messages], _placeholders(tokenizer))
    variables = {f"{k}_token": tokenizer.id_to_piece(getattr(tokenizer, f"{k}_id")) for k in ("bos", "eos", "unk")}
    chunks: list[str] = []
    spans: list[tuple[int, int]] = []
    _TRACKING.append((chunks, spans))
    try:
        for chunk in template.compiled.generate(messages=messages,
                                                add_generation_prompt=add_generation_prompt,
                                                **variables, **kwargs):
            chunks.append(chunk)
    except jinja2.exceptions.TemplateError as e:
        raise DataError(f"chat template {template}: {e}") from None
    finally:
        _TRACKING.pop()
    return "".join(chunks), spans


def encode_rendered(tokenizer, text: str, spans: Sequence[tuple[int, int]] = (), *,
                    space_after_special: bool = True) -> tuple[list[int], list[int]]:
    """(ids, mask) of a rendered chat: control-token texts to ids, each segment between them encoded by
    sentencepiece on its own (without its dummy-prefix "▁" after a control token unless
    `space_after_special`); mask 1 on the tokens covering any character of `spans`."""
    specials = special_tokens(tokenizer)
    restore = {hidden: text for text, hidden in _placeholders(tokenizer).items()}
    pattern = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
    covered = np.zeros(len(text) + 1, bool)
    for begin, end in spans:
        covered[begin:end] = True
    ids: list[int] = []
    mask: list[int] = []

    def add_segment(begin: int, end: int) -> None:
        if begin == end:
            return
        segment = text[begin:end]
        for hidden, original in restore.items():
            segment = segment.replace(hidden, original)
        seg_ids, seg_spans = tokenizer.encode_with_offsets(segment, dummy_prefix=begin == 0 or space_after_special)
        for tid, (b, e) in zip(seg_ids, seg_spans):
            b, e = begin + b, begin + e
            # A zero-width piece (a byte-fallback piece before a character's last byte) goes with its character.
            ids.append(tid)
            mask.append(int(covered[b:e].any() if e > b else covered[b]))

    pos = 0
    for m in pattern.finditer(text):
        add_segment(pos, m.start())
        ids.append(specials[m.group()])
        mask.append(int(covered[m.start():m.end()].any()))
        pos = m.end()
    add_segment(pos, len(text))
    return ids, mask


def assistant_spans(template: ChatTemplate, messages: Sequence[dict], tokenizer, full_text: str,
                    **kwargs) -> list[tuple[int, int]]:
    """Character spans of `full_text` added by each assistant message (module doc)."""
    spans = []
    for k, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before, _ = render_text(template, messages[:k], tokenizer, add_generation_prompt=True, **kwargs)
        upto, _ = render_text(template, messages[:k + 1], tokenizer, **kwargs)
        if not (upto.startswith(before) and full_text.startswith(upto)):
            raise DataError(f"chat template {template}: message {k} (assistant): rendering the conversation up to "
                            f"it is not a prefix of the whole rendering, so its loss mask cannot be derived; mark "
                            f"the assistant text with {{% generation %}}...{{% endgeneration %}} in the template")
        spans.append((len(before), len(upto)))
    return spans


def render_conversation(messages: Sequence[dict], template: "str | os.PathLike | ChatTemplate", tokenizer, *,
                        add_generation_prompt: bool = False, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(ids, loss_mask) int32 arrays of a conversation rendered with `template` (module doc).

    messages: [{"role": "system" | "user" | "assistant", "content": str, ...}, ...] as transformers takes
        them (the named templates also read a first user message's "input", Alpaca's input field).
    add_generation_prompt: end with the template's generation prompt (for a conversation ending with a user
        message, to be answered). kwargs: further template variables, as apply_chat_template passes them.
    """
    template = load_chat_template(template)
    messages = list(messages)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise DataError(f"messages[{i}]: expected a dict with a 'role', got {m!r:.80}")
    text, generation = render_text(template, messages, tokenizer, add_generation_prompt=add_generation_prompt,
                                   **kwargs)
    if "generation" in template.source and re.search(r"\{%-?\s*generation\s*-?%\}", template.source):
        spans = generation
    else:
        spans = assistant_spans(template, messages, tokenizer, text, **kwargs)
    ids, mask = encode_rendered(tokenizer, text, spans, space_after_special=template.space_after_special)
    return np.asarray(ids, np.int32), np.asarray(mask, np.int32)


def rendered_for_generation(messages: Sequence[dict], template: Any, tokenizer) -> list[int]:
    """Token ids of a conversation ending with a user message, followed by the generation prompt."""
    if not messages or messages[-1].get("role") != "user":
        raise DataError("chat messages must end with a user message (the one to answer)")
    template = load_chat_template(template)
    text, _ = render_text(template, messages, tokenizer, add_generation_prompt=True)
    return encode_rendered(tokenizer, text, space_after_special=template.space_after_special)[0]

