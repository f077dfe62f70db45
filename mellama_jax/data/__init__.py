"""The data pipeline: tokenizer, sources, corpus preparation, the 15:1:4 mixture, packing, SFT, loaders.

Modules, in the order the data flows:
    tokenizer   Tokenizer (LLaMA-2 sentencepiece), train_tokenizer
    hf_tokenizer  Hugging Face tokenizer files that give the Tokenizer's exact ids in transformers
    sources     JSONL(.gz/.zst) / Parquet / ArrayRecord / TFDS readers with file:line bad-input reports
    readers     streaming readers of PubMed XML, PMC JATS, MIMIC notes CSV, MIMIC-CXR reports
    units       work units of corpus preparation and the documents they hold
    dedup       exact + MinHash-LSH near-duplicate detection
    decontam    n-gram overlap with evaluation test sets
    screen      which documents dedup / decontamination remove (canonical order, any runner)
    prepare     mellama-prepare-corpus's library: ArrayRecord shards as TFDS datasets (local or Beam)
    mixture     token weights -> grain mixing weights; achieved token shares
    packing     documents -> fixed-length rows (grain first-fit packing)
    templates   named prompt templates (me_llama, llama2_chat, alpaca, none)
    instruct    instruction records -> masked token sequences
    loader      make_pretrain_iterator / make_heldout_batches / make_sft_iterator (one grain pipeline each)
    sharded     ShardedGrainSource (per-host shards, elastic resume), mixture / SFT training sources
    synthetic   SyntheticSource: deterministic synthetic batches for tests and benchmarks
    config      typed data configuration from configs/data/*.py
"""
