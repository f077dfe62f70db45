"""Instruction data: conversations (sft_records.py reads the published shapes) → masked token sequences.

Each conversation is rendered and tokenized by `chat.render_conversation` (a named template of
templates.py, or a Jinja chat template): for our templates `BOS + prompt-with-template + response + EOS`
per turn, as LLaMA-2's reference chat code does. The loss mask is 1 exactly on the response tokens and the
closing EOS, 0 on BOS and the prompt; a piece spanning the boundary ("▁It" after "[/INST]") belongs to the
response. Boundaries come from sentencepiece's character offsets, so each turn is tokenized once, whole.
"""
from __future__ import annotations

import numpy as np

from mellama_jax.data import errors as E
from mellama_jax.data.chat import render_conversation
from mellama_jax.data.sft_records import Conversation, instruct_check, parse_record  # noqa: F401 - the SFT API
from mellama_jax.data.tokenizer import Tokenizer


def tokenize_conversation(tokenizer: Tokenizer, conv: Conversation, template: str, *,
                          max_prompt_tokens: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, loss_mask) int32 arrays for a whole conversation (`chat.render_conversation`)."""
    def shorten(prompt):
        return _truncate_text(tokenizer, prompt, max_prompt_tokens) if max_prompt_tokens else prompt
    messages = [{"role": "system", "content": conv.system}] if conv.system else []
    for i, (prompt, response) in enumerate(conv.turns):
        messages.append({"role": "user", "content": shorten(prompt),
                         **({"input": conv.input} if conv.input and i == 0 else {})})
        messages.append({"role": "assistant", "content": response})
    return render_conversation(messages, template, tokenizer)


def conversation_from_messages(messages: list[dict]) -> tuple[Conversation, str | None]:
    """transformers-style chat messages -> (Conversation of the answered turns, the final unanswered user
    prompt or None). Roles: an optional leading "system", then alternating "user" / "assistant"; the first
    user message may carry an "input" field (Alpaca's input), as in `templates.hf_chat_template`."""
    system = None
    if messages and messages[0].get("role") == "system":
        system, messages = messages[0].get("content"), messages[1:]
    pairs, pending, first_input = [], None, None
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected or not isinstance(content, str):
            raise E.DataError(f"messages[{i + (system is not None)}]: expected a {expected} message with string "
                              f"content (roles: an optional system message, then user/assistant alternating), "
                              f"got role {role!r}")
        if m.get("input") and i > 0:
            raise E.DataError(f"messages[{i + (system is not None)}]: only the first user message can carry an input")
        if role == "user":
            pending, first_input = content, (m.get("input") or None) if i == 0 else first_input
        else:
            pairs.append((pending, content))
            pending = None
    return Conversation(tuple(pairs), input=first_input, system=system or None), pending


def render_chat(messages: list[dict], template: str, tokenizer: Tokenizer) -> list[int]:
    """Token ids of a chat, ending with the generation prompt when the last message is the user's.

    The same ids as our SFT data for the answered turns (`tokenize_conversation`) and as
    `AutoTokenizer(export).apply_chat_template(messages, add_generation_prompt=True)` (tested), so the
    generate path, SFT and Hugging Face users all see one rendering.
    """
    conversation_from_messages(messages)  # names the message of a wrong role order
    return render_conversation(messages, template, tokenizer,
                               add_generation_prompt=messages[-1].get("role") == "user")[0].tolist()


def _truncate_text(tokenizer: Tokenizer, text: str, max_tokens: int) -> str:
    ids = tokenizer.encode(text, bos=False)
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens])
