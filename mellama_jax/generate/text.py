"""Text in, text out: prompts and chat messages to token ids, new token ids back to text.

Prompt forms accepted by `Model.generate` (mellama_jax/api.py) and the generate CLI:
* "text"                                  — continued as is (BOS added)
* ["text", ...]                           — a batch of texts
* [{"role": "user", "content": ...}, ...] — one conversation ending with a user message, rendered with the
                                            model's chat template (data/chat.py)
* [[{"role": ...}, ...], ...]             — a batch of conversations
* [[1, 450, ...], ...] or [1, 450, ...]   — token ids (returned as token ids)
A conversation is rendered and tokenized as instruction tuning does it (`chat.render_conversation`) and
as transformers' `apply_chat_template(..., add_generation_prompt=True)` does on our export. The template is
the one passed, else the `chat_template` stored with the model's tokenizer (any Jinja template, ours or an
HF model's), else the template it was instruction-tuned with (`Model.template`), else an error.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from mellama_jax.data.chat import ChatTemplate, load_chat_template, rendered_for_generation
from mellama_jax.data.templates import TEMPLATE_NAMES, strip_response

ROLES = ("system", "user", "assistant")


@dataclasses.dataclass(frozen=True)
class Prompts:
    """Prompts normalised to token ids, with what the caller gets back."""
    ids: list[list[int]]
    kind: str  # "ids", "text" or "chat"
    single: bool  # the caller passed one prompt: return one result, not a list


def _is_message(x: Any) -> bool:
    return isinstance(x, dict) and "role" in x and "content" in x


def _is_ids(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in x) \
        and len(x) > 0


def chat_ids(tokenizer, messages: Sequence[dict], template) -> list[int]:
    """Token ids of a conversation that ends with a user turn, ready for the assistant's answer."""
    messages = list(messages)
    for i, m in enumerate(messages):
        if not _is_message(m) or not isinstance(m["role"], str) or not isinstance(m["content"], str):
            raise ValueError(f"message {i}: expected {{'role': one of {ROLES}, 'content': str}}, got {m!r}")
    if not messages or messages[-1]["role"] != "user":
        raise ValueError(f"messages: the conversation must end with a user message (the one to answer); got roles "
                         f"{[m['role'] for m in messages]}")
    return rendered_for_generation(messages, template, tokenizer)


def to_prompts(prompts: Any, tokenizer, template: str | None) -> Prompts:
    """Normalise any accepted prompt form (module doc) to token ids."""
    if isinstance(prompts, str):
        return Prompts([_encode(tokenizer, prompts)], "text", True)
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(f"prompts: expected a text, a list of texts, chat messages or token-id lists, "
                         f"got {type(prompts).__name__} {prompts!r:.80}")
    if _is_ids(prompts):
        return Prompts([list(prompts)], "ids", True)
    if all(_is_message(m) for m in prompts):
        return Prompts([chat_ids(_need(tokenizer, "chat messages"), prompts, _chat_template(template))], "chat", True)
    if all(isinstance(p, str) for p in prompts):
        return Prompts([_encode(tokenizer, p) for p in prompts], "text", False)
    if all(isinstance(p, (list, tuple)) and p and all(_is_message(m) for m in p) for p in prompts):
        tok = _need(tokenizer, "chat messages")
        return Prompts([chat_ids(tok, conv, _chat_template(template)) for conv in prompts], "chat", False)
    if all(isinstance(p, (list, tuple)) for p in prompts):
        return Prompts([list(p) for p in prompts], "ids", False)  # generate() validates the ids
    raise ValueError("prompts: expected a text, a list of texts, chat messages (dicts with role and content), "
                     "a list of conversations, or token-id lists — not a mixture")


def decode(tokenizer, ids: Sequence[int], kind: str, template: str | None, stops: Sequence[str] = ()) -> str:
    """Text of generated ids: ids the tokenizer does not know (a padded vocabulary) are left out, the text is
    cut at the first stop string, and a chat answer is cleaned of a runaway next turn."""
    text = tokenizer.decode([t for t in ids if 0 <= t < tokenizer.vocab_size])
    cuts = [text.find(s) for s in stops if s and s in text]
    text = text[:min(cuts)] if cuts else text
    if kind != "chat" or not template:
        return text
    name = template.name if isinstance(template, ChatTemplate) else template
    return strip_response(text, name if name in TEMPLATE_NAMES else "none")


def stop_ids(tokenizer, stops: Sequence[str]) -> list[list[int]]:
    """Stop strings as token-id sequences (token-level stops; `decode` also cuts the text)."""
    return [ids for ids in (tokenizer.encode(s, bos=False) for s in stops if s) if ids]


def _encode(tokenizer, text: str) -> list[int]:
    return _need(tokenizer, "text prompts").encode(text, bos=True)


def _need(tokenizer, what: str):
    if tokenizer is None:
        raise ValueError(f"{what} need a tokenizer and this model directory has none; pass token ids instead")
    return tokenizer


def _chat_template(template) -> ChatTemplate:
    if not template:
        raise ValueError("chat messages need a chat template and this model has none (no chat_template in its "
                         "tokenizer_config.json, no instruction-tuning template recorded); pass template= (one of "
                         f"{list(TEMPLATE_NAMES)}, a Jinja string or a tokenizer_config.json)")
    return load_chat_template(template)
