"""LLaMA-2 sentencepiece tokenizer: loading, encoding, Hugging Face export, and training a small one.

LLaMA-2's tokenizer is a sentencepiece BPE model (32k pieces, byte fallback, digits split, whitespace kept
as is, unk=0 / bos=1 / eos=2, no pad). `Tokenizer` wraps any such `tokenizer.model`; `train_tokenizer`
trains a small model with the same options for tests and the demo (no real tokenizer can be downloaded).

`Tokenizer.load(path)` is the one place that finds a tokenizer: `path` is a tokenizer.model or a directory
holding one (a checkpoint's tokenizer/, an HF export). Hugging Face files that reproduce these ids in
transformers are written by `mellama_jax.data.hf_tokenizer.save_hf_tokenizer`.
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Iterable, Sequence

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb

from mellama_jax import paths
from mellama_jax.data.errors import DataError

MODEL_FILE = "tokenizer.model"
CONFIG_FILE = "tokenizer_config.json"

# LLaMA-2's trainer options (as stored in its tokenizer.model's trainer_spec), minus corpus-size knobs.
LLAMA2_TRAINER_OPTIONS = dict(
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    remove_extra_whitespaces=False,
    normalization_rule_name="identity",
    add_dummy_prefix=True,
    split_by_unicode_script=True,
    split_by_whitespace=True,
    split_by_number=True,
    max_sentencepiece_length=16,
    character_coverage=0.99995,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    unk_piece="<unk>",
    bos_piece="<s>",
    eos_piece="</s>",
)


class Tokenizer:
    """A sentencepiece model with LLaMA-2's BOS/EOS conventions.

    encode(text, bos=True, eos=False) -> ids; BOS/EOS are added as ids (never parsed from the text, so
    "<s>" inside a document stays text). Picklable (grain worker processes receive a copy).
    """

    def __init__(self, model_path: str):
        path = paths.resolve(model_path, what="tokenizer")  # local or gs://: read as bytes either way
        if not path.is_file():
            raise DataError(f"{model_path}: no such sentencepiece model file")
        self._init_from_proto(path.read_bytes(), os.fspath(path))

    def _init_from_proto(self, proto: bytes, model_path: str) -> None:
        self.model_path = model_path
        self._proto = proto
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(proto)
        except Exception as e:  # sentencepiece raises bare RuntimeError/OSError
            raise DataError(f"{model_path}: not a sentencepiece model ({e})") from e

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """A tokenizer.model file, or a directory holding one (an HF export, a checkpoint's tokenizer/)."""
        return cls(model_file(path))

    def __getstate__(self):
        return {"proto": self._proto, "model_path": self.model_path}

    def __setstate__(self, state):
        self._init_from_proto(state["proto"], state["model_path"])

    # ------------------------------------------------------------------ ids
    @property
    def vocab_size(self) -> int:
        return self._sp.GetPieceSize()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    @property
    def pad_id(self) -> int:
        """LLaMA-2 has no pad token; padding uses id 0 (unk), always masked out by segment id 0."""
        pad = self._sp.pad_id()
        return pad if pad >= 0 else 0

    @property
    def serialized_proto(self) -> bytes:
        """The tokenizer.model file's bytes."""
        return self._proto

    @property
    def sha256(self) -> str:
        """Fingerprint of the model file; prepared corpora record it so a mismatch is caught on load."""
        return hashlib.sha256(self._proto).hexdigest()

    def id_to_piece(self, i: int) -> str:
        return self._sp.IdToPiece(int(i))

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
        ids = self._sp.EncodeAsIds(text)
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_batch(self, texts: Sequence[str], *, bos: bool = True, eos: bool = False,
                     num_threads: int = 1, as_numpy: bool = False) -> list:
        """Ids of many texts in one sentencepiece call (int32 arrays with as_numpy)."""
        return self._sp.Encode(list(texts), add_bos=bos, add_eos=eos, num_threads=num_threads,
                               return_type="numpy" if as_numpy else int)

    def encode_with_offsets(self, text: str, *, dummy_prefix: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids (no BOS/EOS) and each piece's [begin, end) character span in `text`. dummy_prefix=False
        encodes without the model's add_dummy_prefix "▁" (the text continues a previous one)."""
        sp = self._sp if dummy_prefix else self._no_prefix_processor()
        proto = sp.encode(text, return_type="proto")  # sentencepiece >= 0.2.1
        ids, spans = [], []
        # sentencepiece reports byte offsets into the UTF-8 text; convert to character offsets.
        raw = text.encode("utf-8")
        char_at_byte = _char_index_of_bytes(text, raw)
        for piece in proto.pieces:
            ids.append(piece.id)
            spans.append((char_at_byte[piece.begin], char_at_byte[piece.end]))
        return ids, spans

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.DecodeIds([int(i) for i in ids])

    def _no_prefix_processor(self) -> spm.SentencePieceProcessor:
        if getattr(self, "_sp_no_prefix", None) is None:
            model = sp_pb.ModelProto()
            model.ParseFromString(self._proto)
            model.normalizer_spec.add_dummy_prefix = False
            self._sp_no_prefix = spm.SentencePieceProcessor()
            self._sp_no_prefix.LoadFromSerializedProto(model.SerializeToString())
        return self._sp_no_prefix


def model_file(path: str | os.PathLike) -> str:
    """`path` when it is a file, else `path/tokenizer.model` (local or gs://); DataError when neither exists."""
    path = paths.as_str(path, what="tokenizer")
    if paths.resolve(path).is_dir():
        candidate = paths.join(path, MODEL_FILE)
        if not paths.resolve(candidate).is_file():
            raise DataError(f"{path}: no {MODEL_FILE} in this directory")
        return candidate
    if not paths.resolve(path).is_file():
        raise DataError(f"{path}: no such sentencepiece model file (or directory holding {MODEL_FILE})")
    return path


def _char_index_of_bytes(text: str, raw: bytes) -> list[int]:
    """Map each byte offset (0..len(raw)) of the UTF-8 encoding to the index of the character it starts."""
    if len(raw) == len(text):  # ASCII fast path
        return list(range(len(text) + 1))
    table = [0] * (len(raw) + 1)
    b = 0
    for ci, ch in enumerate(text):
        n = len(ch.encode("utf-8"))
        for k in range(n):
            table[b + k] = ci
        b += n
    table[len(raw)] = len(text)
    return table


def train_tokenizer(texts: Iterable[str], out_dir: str, *, vocab_size: int = 1024,
                    input_sentence_size: int = 0, seed_sentencepieces: int = 0, **overrides) -> Tokenizer:
    """Train a LLaMA-2-style sentencepiece BPE model on `texts` and save `out_dir/tokenizer.model`.

    Documents are split into lines (sentencepiece trains on sentences); blank lines are skipped.
    `overrides` replace entries of LLAMA2_TRAINER_OPTIONS (e.g. character_coverage=1.0).
    Written atomically: a failed run leaves no tokenizer.model behind.
    """
    options = {**LLAMA2_TRAINER_OPTIONS, **overrides}
    unknown = set(overrides) - set(LLAMA2_TRAINER_OPTIONS) - {"num_threads", "max_sentence_length",
                                                             "train_extremely_large_corpus", "user_defined_symbols"}
    if unknown:
        raise DataError(f"train_tokenizer: unknown option(s) {sorted(unknown)}")

    def sentences():
        for text in texts:
            for line in text.split("\n"):
                if line.strip():
                    yield line

    model = io.BytesIO()
    kwargs = dict(options, vocab_size=vocab_size, num_threads=options.get("num_threads", 1),
                  max_sentence_length=options.get("max_sentence_length", 16384), minloglevel=2)
    if input_sentence_size:
        kwargs.update(input_sentence_size=input_sentence_size, shuffle_input_sentence=True)
    if seed_sentencepieces:
        kwargs["seed_sentencepiece_size"] = seed_sentencepieces
    try:
        spm.SentencePieceTrainer.Train(sentence_iterator=sentences(), model_writer=model, **kwargs)
    except RuntimeError as e:
        raise DataError(f"sentencepiece training failed: {e}") from e
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, MODEL_FILE)
    with open(path + ".tmp", "wb") as f:
        f.write(model.getvalue())
    os.replace(path + ".tmp", path)
    return Tokenizer(path)
