"""Me-LLaMA's continual-pretraining mixture: biomedical 15 : clinical 1 : general 4 (tokens), REFERENCE §2.

biomedical = PubMed Central full texts + PubMed abstracts, clinical = MIMIC-III / MIMIC-IV notes and
MIMIC-CXR reports, general = a RedPajama subset (~129B tokens in all). None of it can be downloaded by
this project (MIMIC needs PhysioNet credentialing): point the globs at your copies, run
tools/prepare_corpus.py once (ArrayRecord shards + token counts), then set prepared_dir.

    python tools/prepare_corpus.py --data_config configs/data/me_llama_mix.py:/data/me_llama \
        --tokenizer /ckpt/llama2/tokenizer.model --out_dir /data/me_llama/prepared --workers 64
    (or --runner beam --beam_options="--runner=DataflowRunner,..." for the full 129B tokens)
"""
import os

import ml_collections


def get_config(root: str = "/data/me_llama") -> ml_collections.ConfigDict:
    join = lambda *p: os.path.join(root, *p)
    cfg = ml_collections.ConfigDict()
    cfg.components = [
        dict(name="biomedical", weight=15.0, heldout_fraction=0.0005, sources=[
            # PMC Open Access full texts (one JSON object per article) and PubMed abstracts.
            dict(path=join("pmc_oa/*.jsonl.zst"), text_fields=("title", "abstract", "body")),
            dict(path=join("pubmed_abstracts/*.jsonl.gz"), text_fields=("title", "abstract")),
        ]),
        dict(name="clinical", weight=1.0, heldout_fraction=0.001, sources=[
            # MIMIC-III NOTEEVENTS, MIMIC-IV-Note discharge + radiology, MIMIC-CXR reports, exported to parquet.
            dict(path=join("mimic_iii/noteevents*.parquet"), text_fields=("TEXT",)),
            dict(path=join("mimic_iv_note/discharge*.parquet"), text_fields=("text",)),
            dict(path=join("mimic_iv_note/radiology*.parquet"), text_fields=("text",)),
            dict(path=join("mimic_cxr/reports*.jsonl.gz"), text_fields=("findings", "impression")),
        ]),
        dict(name="general", weight=4.0, heldout_fraction=0.0005, sources=[
            dict(path=join("redpajama_subset/*.jsonl.zst"), text_fields=("text",)),
        ]),
    ]
    cfg.weight_unit = "tokens"
    cfg.prepared_dir = join("prepared")
    cfg.strict = False
    # PMC articles are far longer than a 4096-token row: split them into row-sized chunks (counted).
    cfg.overlong = "split"
    cfg.shuffle = True
    cfg.num_packing_bins = 0
    cfg.pack_unit_tokens = 0  # short documents packed in groups of up to seq_len // 6 tokens
    cfg.read_threads = 4
    cfg.prefetch_buffer_size = 256
    cfg.worker_count = 8
    cfg.instruct = dict(sources=[dict(path=join("instructions/*.jsonl"))], template="me_llama", format="auto",
                        max_prompt_tokens=3500, system=None, heldout_fraction=0.01)
    return cfg
