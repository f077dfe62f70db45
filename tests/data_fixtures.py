"""Shared builders for the data tests: demo data + tokenizer, and small corpora with unique documents."""
from __future__ import annotations

import json
import os

from mellama_jax.data.tokenizer import train_tokenizer
from mellama_jax.demo import corpus as demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_demo(root: str, scale: float = 1.0):
    """Demo data under root/demo and a 1024-piece tokenizer trained on it."""
    data = os.path.join(root, "demo")
    demo.write_demo_data(data, scale=scale)
    tok = train_tokenizer(demo.demo_texts(data), os.path.join(root, "tok"), vocab_size=1024)
    return data, tok


def demo_config(data_root: str):
    from mellama_jax.config import config_module
    return config_module(os.path.join(REPO, "configs/data/demo_mix.py")).get_config(data_root)


WORDS = ("patient fever cough aspirin tumor cell protein gene therapy trial dose blood pressure heart lung "
         "kidney liver insulin glucose scan biopsy").split()


def unique_docs(prefix: str, n: int, seed: int = 0, min_words: int = 5, max_words: int = 60) -> list[str]:
    """Documents with a unique id in their first words ("<prefix> 17 ."), varied lengths."""
    import random
    r = random.Random(seed)
    return [f"{prefix} {i} . " + " ".join(r.choice(WORDS) for _ in range(r.randint(min_words, max_words)))
            for i in range(n)]


def write_jsonl(path: str, records) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for rec in records:
            f.write((rec if isinstance(rec, str) else json.dumps(rec)) + "\n")
    return path
