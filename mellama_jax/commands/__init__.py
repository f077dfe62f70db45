"""Every command line, installed as console scripts (pyproject.toml [project.scripts]):

    mellama-train             train.py               pretraining / instruction tuning / LoRA from a config file
    mellama-recipe            recipe.py              the staged Me-LLaMA recipe (real or demo) from a recipe config
    mellama-generate          generate.py            continue prompts or chat with any model directory
    mellama-evaluate          evaluate.py            the MIBE benchmark on a model
    mellama-lm-eval           lm_eval.py             lm-evaluation-harness with our model backend
    mellama-convert-hf        convert_hf_to_jax.py   HF LLaMA directory -> our model checkpoint (streaming)
    mellama-convert-jax       convert_jax_to_hf.py   our checkpoint or training workdir -> HF (+ PEFT adapter)
    mellama-prepare-corpus    prepare_corpus.py      raw sources -> deduplicated, decontaminated token shards
    mellama-train-tokenizer   train_tokenizer.py     a LLaMA-2-style sentencepiece tokenizer (tests, the demo)
    mellama-make-demo-corpus  make_demo_corpus.py    the demo's synthetic corpus, instruction and MIBE files
    mellama-plan              plan.py                ahead-of-time plans for TPU topologies
    mellama-build-mibe        build_mibe.py          MIBE test records from a task's original distribution

Each is thin: parse the command line, call the package, turn user mistakes into one line (mellama_jax/cli.py).
Config-driven commands (train, recipe, plan) take `--config FILE` and `--config.<field>=<value>` overrides.
Each module runs the same `main` under `python -m`; `python -m mellama_jax.train|recipe|generate|evaluate`
are kept as the short spellings.
"""
