"""Hugging Face tokenizer files that give exactly the ids our sentencepiece `Tokenizer` trains with.

`save_hf_tokenizer(tok, out_dir)` writes tokenizer.model, tokenizer.json, tokenizer_config.json and
special_tokens_map.json, so `transformers.AutoTokenizer.from_pretrained(out_dir)` (and any tool that builds
its tokenizer from tokenizer.json with the `tokenizers` library) encodes text to sentencepiece's ids.

Why our own tokenizer.json instead of transformers' converter. Measured on Meta's LLaMA-2 tokenizer.model
with transformers 5.25 / tokenizers 0.23 (tests/test_tokenizer_llama2.py):
* LLaMA-2 has 15 whitespace-only pieces ("▁▁" … 16 × "▁", allow_whitespace_only_pieces) stored at low ids
  (259, 268, …) with score -1e9, so sentencepiece merges them *last*. transformers' converted tokenizer
  ranks those merges by id, i.e. almost *first*: "stable.  Will" becomes `▁▁`,`Will` [259, 12984] instead
  of sentencepiece's `▁`,`▁Will` [29871, 2811]; likewise "12.3  (H)", "\\n  - CXR" and any interior run
  of 2+ spaces. Here BPE merges are ranked by sentencepiece's score of the merged piece, as sentencepiece
  applies them; equal scores (only the whitespace pieces) rank the longer piece first, which reproduces
  sentencepiece's leftmost-first growth of a whitespace run.
* sentencepiece's add_dummy_prefix puts "▁" before every encoded text, also one that starts with a space;
  the Metaspace pre-tokenizer transformers 5's `LlamaTokenizer` class rebuilds on load skips that "▁"
  ("  lead": `▁`,`▁lead` instead of `▁▁`,`▁lead`). So tokenizer.json uses a normalizer (Prepend "▁",
  Replace " " → "▁") applied to each text segment, and tokenizer_config.json names
  `PreTrainedTokenizerFast`, the class that loads tokenizer.json as written (transformers 4 and 5).
  Each segment between special tokens gets its own "▁", as each turn of our SFT data is encoded
  separately (`<s>` + turn + `</s>` per turn), so chat templates tokenize like our SFT pipeline.
* transformers 5 has no sentencepiece-backed LLaMA tokenizer any more: `AutoTokenizer(..., use_fast=False)`
  ignores the flag and returns the same tokenizers-backed class.

One difference stays, by transformers' design: `tokenizer(text)` treats a literal "<s>" / "</s>" / "<unk>"
in the text as the control token (our `Tokenizer`, like Meta's code, keeps it as text). Pass
`split_special_tokens=True` (or `apply_chat_template(..., sanitize_control_tokens=True)` for user messages)
to get our ids; it cannot be the default, because chat templates emit "<s>" as text to get the BOS id.

`check_hf_backend` encodes probe texts with both and lists the differences; the export warns with them
(e.g. a tokenizer.model with a non-identity normalizer, which this tokenizer.json does not reproduce).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Iterable

from sentencepiece import sentencepiece_model_pb2 as sp_pb
from tokenizers import AddedToken, decoders, models, normalizers, processors
from tokenizers import Tokenizer as HFTokenizer

from mellama_jax.data.tokenizer import CONFIG_FILE, MODEL_FILE, Tokenizer

log = logging.getLogger(__name__)

TOKENIZER_JSON = "tokenizer.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5's save_pretrained puts a chat template
# The files `save_hf_tokenizer` writes (an HF export carries exactly these).
HF_TOKENIZER_FILES = (MODEL_FILE, TOKENIZER_JSON, CONFIG_FILE, SPECIAL_TOKENS_MAP)
# The class whose loader uses tokenizer.json as written (see the module docstring).
HF_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
SPACE = "▁"  # sentencepiece's whitespace symbol (U+2581)

# Texts the export encodes with both tokenizers before writing (cheap: a few ms); a difference is a warning.
PROBE_TEXTS = (
    "Pt is stable.  Will discharge home.", "WBC 12.3  (H)\tHgb  9.1 (L)", "Plan:\n  - CXR\n  - CBC",
    "  leading spaces", "trailing spaces   ", "[** Hospital 1234 **]   f/u", "a" + " " * 40 + "b",
    "Café naïve — 患者は発熱。 🧬\x07\x00", "HbA1c 6.5% on 2023-11-05", "\n\n\n", "",
)

_NORMAL = sp_pb.ModelProto.SentencePiece.NORMAL


class HFTokenizerError(ValueError):
    """The sentencepiece model cannot be written as HF tokenizer files (names the field)."""


def _proto(tok: Tokenizer) -> sp_pb.ModelProto:
    proto = sp_pb.ModelProto()
    proto.ParseFromString(tok.serialized_proto)
    return proto


def unsupported_features(proto: sp_pb.ModelProto) -> list[str]:
    """sentencepiece settings this tokenizer.json does not reproduce (empty for LLaMA-2's tokenizer)."""
    norm, spec = proto.normalizer_spec, proto.trainer_spec
    problems = []
    if norm.precompiled_charsmap or norm.name not in ("identity", ""):
        problems.append(f"normalizer_spec.name={norm.name!r} (a Unicode normalization; only 'identity' is exact)")
    if norm.remove_extra_whitespaces:
        problems.append("normalizer_spec.remove_extra_whitespaces=true")
    if spec.treat_whitespace_as_suffix:
        problems.append("trainer_spec.treat_whitespace_as_suffix=true")
    kinds = {p.type for p in proto.pieces}
    if sp_pb.ModelProto.SentencePiece.USER_DEFINED in kinds or sp_pb.ModelProto.SentencePiece.UNUSED in kinds:
        problems.append("user-defined or unused pieces")
    return problems


def sentencepiece_merges(proto: sp_pb.ModelProto) -> list[tuple[str, str]]:
    """BPE merges in the order sentencepiece applies them: by the merged piece's score, highest first.

    Every split of a normal piece into two pieces of the vocabulary is a merge (sentencepiece's BPE merges
    any adjacent pair whose concatenation is a piece). Ties (LLaMA-2: only its whitespace-only pieces, all
    scored -1e9) rank the longer result first, then by the ids of the two halves.
    """
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    ranked = []
    for p in proto.pieces:
        if p.type != _NORMAL:
            continue
        piece = p.piece
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                ranked.append((-p.score, -len(piece), vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def hf_backend(tok: Tokenizer):
    """The `tokenizers.Tokenizer` equivalent of `tok` (what tokenizer.json holds)."""
    # Optional dependency: `tokenizers` ships with transformers; only HF exports need it.

    proto = _proto(tok)
    if proto.trainer_spec.model_type != sp_pb.TrainerSpec.BPE:
        raise HFTokenizerError(f"{tok.model_path}: trainer_spec.model_type is not BPE; only BPE "
                               f"(LLaMA-2's) tokenizers can be exported")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    unk = tok.id_to_piece(tok.unk_id)
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=sentencepiece_merges(proto), unk_token=unk,
                                     fuse_unk=True, byte_fallback=proto.trainer_spec.byte_fallback))
    steps = [normalizers.Prepend(SPACE)] if proto.normalizer_spec.add_dummy_prefix else []
    backend.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", SPACE)])
    backend.pre_tokenizer = None  # sentencepiece's BPE runs over the whole text; no piece crosses a "▁" boundary
    strip = [decoders.Strip(" ", 1, 0)] if proto.normalizer_spec.add_dummy_prefix else []
    backend.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
                                        + strip)
    specials = [p.piece for p in proto.pieces if p.type in (sp_pb.ModelProto.SentencePiece.CONTROL,
                                                            sp_pb.ModelProto.SentencePiece.UNKNOWN)]
    backend.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = tok.id_to_piece(tok.bos_id)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok.bos_id)])
    return backend


def hf_tokenizer_config(tok: Tokenizer, *, chat_template: str | None = None,
                        model_max_length: int | None = None) -> dict:
    config = {
        "tokenizer_class": HF_TOKENIZER_CLASS,
        "bos_token": tok.id_to_piece(tok.bos_id),
        "eos_token": tok.id_to_piece(tok.eos_id),
        "unk_token": tok.id_to_piece(tok.unk_id),
        "pad_token": None,  # LLaMA-2 has none
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",  # batched generation
    }
    if model_max_length:
        config["model_max_length"] = int(model_max_length)
    if chat_template:
        config["chat_template"] = chat_template
    return config


def check_hf_backend(tok: Tokenizer, backend, texts: Iterable[str] = PROBE_TEXTS) -> list[str]:
    """The texts on which `backend` (a tokenizers.Tokenizer) gives other ids than `tok`."""
    return [t for t in texts if backend.encode(t, add_special_tokens=False).ids != tok.encode(t, bos=False)]


def save_hf_tokenizer(tok: Tokenizer, out_dir: str, *, chat_template: str | None = None,
                      model_max_length: int | None = None, added_tokens: Iterable[dict] = (),
                      pad_token: str | None = None) -> list[str]:
    """Write the HF tokenizer files of `tok` into `out_dir`; returns their names.

    Warns (log) when the written tokenizer.json encodes a probe text differently from sentencepiece, naming
    the sentencepiece settings it does not reproduce. Each file is written to a temporary name first.
    added_tokens: tokens beyond the sentencepiece vocabulary ({"id", "content", "special"}, as in an HF
    tokenizer.json, e.g. a "<pad>" a fine-tune added), kept at their ids; pad_token names one of them.
    """
    proto = _proto(tok)
    backend = hf_backend(tok)
    _add_tokens(backend, added_tokens, tok.model_path)
    problems = unsupported_features(proto)
    mismatches = check_hf_backend(tok, backend)
    if problems or mismatches:
        log.warning("%s: the exported tokenizer.json may give other ids than sentencepiece (%s)%s",
                    tok.model_path, "; ".join(problems) or "unexpected",
                    f"; differs on {mismatches[:3]!r}" if mismatches else "")
    os.makedirs(out_dir, exist_ok=True)
    bos, eos, unk = (tok.id_to_piece(i) for i in (tok.bos_id, tok.eos_id, tok.unk_id))
    contents = {
        MODEL_FILE: tok.serialized_proto,
        TOKENIZER_JSON: backend.to_str(pretty=True),
        CONFIG_FILE: _json({**hf_tokenizer_config(tok, chat_template=chat_template, model_max_length=model_max_length),
                            **({"pad_token": pad_token} if pad_token else {})}),
        SPECIAL_TOKENS_MAP: _json({"bos_token": bos, "eos_token": eos, "unk_token": unk,
                                   **({"pad_token": pad_token} if pad_token else {})}),
    }
    for name, data in contents.items():
        path = os.path.join(out_dir, name)
        with open(path + ".tmp", "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    return list(contents)


def export_tokenizer_dir(src: str | os.PathLike, out_dir: str, *, chat_template: str | None = None,
                         model_max_length: int | None = None) -> list[str]:
    """The tokenizer of `src` (a tokenizer.model, or a directory: a checkpoint's tokenizer/, an HF export)
    as HF files in `out_dir`; returns the names written ([] when `src` holds no tokenizer).

    With a tokenizer.model, all four files are (re)generated from it, so a tokenizer.json converted
    elsewhere (e.g. Meta's, with the whitespace-merge order above) is replaced by an exact one. A directory
    with only a tokenizer.json is copied as it is, with a warning: its ids cannot be checked here.
    Kept from `src`: its chat template (chat_template.jinja or tokenizer_config.json's; `chat_template`
    replaces it), tokens added beyond the sentencepiece vocabulary, and a pad token among them.
    """
    src = os.fspath(src)
    src_dir = os.path.dirname(src) if os.path.isfile(src) else src
    if os.path.isfile(src) or os.path.isfile(os.path.join(src_dir, MODEL_FILE)):
        tok = Tokenizer.load(src)
        config = _read_json(os.path.join(src_dir, CONFIG_FILE))
        extra = [t for t in _read_json(os.path.join(src_dir, TOKENIZER_JSON)).get("added_tokens") or []
                 if isinstance(t, dict) and t.get("id", -1) >= tok.vocab_size]
        pad = config.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        if chat_template is None:
            chat_template = _read_text(os.path.join(src_dir, CHAT_TEMPLATE_FILE)) or config.get("chat_template")
        return save_hf_tokenizer(tok, out_dir, model_max_length=model_max_length, added_tokens=extra,
                                 chat_template=chat_template,
                                 pad_token=pad if pad in {t.get("content") for t in extra} else None)
    if not os.path.isfile(os.path.join(src_dir, TOKENIZER_JSON)):
        return []
    log.warning("%s: no %s; copying %s as it is (its ids cannot be checked against sentencepiece)",
                src_dir, MODEL_FILE, TOKENIZER_JSON)
    os.makedirs(out_dir, exist_ok=True)
    names = [n for n in HF_TOKENIZER_FILES + (CHAT_TEMPLATE_FILE,) if os.path.isfile(os.path.join(src_dir, n))]
    for name in names:
        shutil.copyfile(os.path.join(src_dir, name), os.path.join(out_dir, name))
    if chat_template is not None:  # replaces the source's template, wherever it was stored
        if CHAT_TEMPLATE_FILE in names:
            os.remove(os.path.join(out_dir, CHAT_TEMPLATE_FILE))
        path = os.path.join(out_dir, CONFIG_FILE)
        with open(path, "w") as f:
            f.write(_json({**_read_json(path), "chat_template": chat_template}))
        names = sorted((set(names) - {CHAT_TEMPLATE_FILE}) | {CONFIG_FILE})
    return names


def _add_tokens(backend, added: Iterable[dict], source: str) -> None:
    for t in sorted(added, key=lambda t: t["id"]):
        token = AddedToken(t["content"], special=bool(t.get("special", True)), normalized=False)
        (backend.add_special_tokens if token.special else backend.add_tokens)([token])
        if backend.token_to_id(t["content"]) != t["id"]:
            log.warning("%s: added token %r lands at id %s instead of %s (ids beyond the sentencepiece "
                        "vocabulary are not contiguous)", source, t["content"], backend.token_to_id(t["content"]),
                        t["id"])


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _read_json(path: str) -> dict:
    """The JSON object in `path`, or {} when it is missing or unreadable (optional HF files)."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _json(value: dict) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
