"""The command-line tools, installed as console scripts (pyproject.toml [project.scripts]):

    mellama-convert-hf        convert_hf_to_jax.py   HF LLaMA directory -> our model checkpoint (streaming)
    mellama-convert-jax       convert_jax_to_hf.py   our checkpoint or training workdir -> HF (+ PEFT adapter)
    mellama-prepare-corpus    prepare_corpus.py      raw sources -> deduplicated, decontaminated token shards
    mellama-train-tokenizer   train_tokenizer.py     a LLaMA-2-style sentencepiece tokenizer (tests, the demo)
    mellama-make-demo-corpus  make_demo_corpus.py    the demo's synthetic corpus, instruction and MIBE files
    mellama-plan              plan.py                ahead-of-time plans for TPU topologies
    mellama-build-mibe        build_mibe.py          MIBE test records from a task's original distribution

`python tools/<name>.py` runs the same `main` from a checkout. Each is thin: parse flags, call the package.
"""
