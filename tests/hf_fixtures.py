"""Tiny random transformers LLaMA models, saved locally: the reference every model test compares with."""
from __future__ import annotations

import os

import numpy as np

TINY_HF = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
               tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def make_hf_model(out_dir: str | None = None, seed: int = 0, **overrides):
    """A random `LlamaForCausalLM` (fp32, eager attention); saved as safetensors when out_dir is given."""
    import torch
    import transformers

    values = {**TINY_HF, **overrides}
    config = transformers.LlamaConfig(**values)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    # Random norms too, so a wrong norm mapping cannot hide behind all-ones weights.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        model.save_pretrained(out_dir, safe_serialization=True)
    return model


def hf_logits(model, tokens) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


def train_small_sentencepiece(out_dir):
    """A 100-piece BPE sentencepiece model written to out_dir/tokenizer.model (for tokenizer round trips)."""
    import sentencepiece as spm
    text = ["the patient was given aspirin for chest pain", "no acute cardiopulmonary process",
            "metformin 500 mg twice daily", "follow up with cardiology in two weeks"] * 20
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=os.path.join(out_dir, "tokenizer"),
                                   vocab_size=100, model_type="bpe", character_coverage=1.0, minloglevel=2)
    os.remove(os.path.join(out_dir, "tokenizer.vocab"))
    return spm.SentencePieceProcessor(model_file=os.path.join(out_dir, "tokenizer.model"))
