"""Data config of the demo: the synthetic three-domain corpus of mellama-make-demo-corpus, mixed 15:1:4.

    from configs.data import demo_mix; cfg = demo_mix.get_config("runs/demo/data")
or with ml_collections config flags: --data_config=configs/data/demo_mix.py:runs/demo/data
"""
import os

import ml_collections


def get_config(root: str = "runs/demo/data") -> ml_collections.ConfigDict:
    join = lambda *p: os.path.join(root, *p)
    cfg = ml_collections.ConfigDict()
    cfg.components = [
        dict(name="biomedical", weight=15.0,
             sources=[dict(path=join("corpus/biomedical/*.jsonl"), text_fields=("title", "abstract"))],
             heldout_sources=[dict(path=join("heldout/biomedical.jsonl"), text_fields=("title", "abstract"))]),
        dict(name="clinical", weight=1.0,
             sources=[dict(path=join("corpus/clinical/notes.jsonl.gz"), text_fields=("text",))],
             heldout_sources=[dict(path=join("heldout/clinical.jsonl"), text_fields=("text",))]),
        dict(name="general", weight=4.0,
             sources=[dict(path=join("corpus/general/web.parquet"), text_fields=("text",))],
             heldout_sources=[dict(path=join("heldout/general.jsonl"), text_fields=("text",))]),
    ]
    cfg.weight_unit = "tokens"
    cfg.prepared_dir = None  # set to the output of mellama-prepare-corpus to read ArrayRecord shards
    cfg.strict = False
    cfg.overlong = "auto"
    cfg.shuffle = True
    cfg.num_packing_bins = 0
    cfg.pack_unit_tokens = 0  # short documents packed in groups of up to seq_len // 6 tokens
    cfg.read_threads = 0
    cfg.worker_count = 0
    cfg.instruct = dict(
        sources=[dict(path=join("instruct/me_llama.jsonl")), dict(path=join("instruct/alpaca.jsonl")),
                 dict(path=join("instruct/mibe.jsonl"))],
        template="me_llama", format="auto", max_prompt_tokens=0, system=None, heldout_fraction=0.05)
    return cfg
