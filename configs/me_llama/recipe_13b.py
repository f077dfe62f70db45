"""The Me-LLaMA-13B recipe, end to end, as one resumable driver run (docs/sources.md: the published recipe).

    mellama-recipe --config configs/me_llama/recipe_13b.py --workdir gs://BUCKET/me-llama-13b \
        --config.data.root=gs://BUCKET/corpus --config.init_from=gs://BUCKET/Llama-2-13b-hf --dry_run

Stages: prepare (the distributed corpus files under data.root — PubMed baseline XML, PMC OA JATS, MIMIC
CSVs, MIMIC-CXR reports, RedPajama JSONL, laid out as configs/data/me_llama_mix.py names them — read,
deduplicated, decontaminated against the MIBE test files, tokenized with LLaMA-2's tokenizer into ArrayRecord
shards) → convert (LLaMA-2-13B HF weights → model checkpoint) → pretrain (configs/me_llama/pretrain_13b.py) →
instruct (LoRA, configs/me_llama/chat_13b_lora.py, instruction files `<data.root>/instructions/*.jsonl`) →
evaluate (MIBE, base vs tuned, test files `<data.root>/eval`) → export (HF merged + PEFT) → report.
Each stage is skipped once complete; `--dry_run` checks every input and prints each stage's command (the
training stages as the `mellama-train` command to run on the pod's hosts). Any field is set with
`--config.<stage>.<field>=...` (e.g. --config.pretrain.train.steps=1000), data paths with
`--config.mixture...` / `--config.evaluate.data_dir=...`.
"""
import ml_collections

from mellama_jax.config import sibling_config

ALL_MIBE = "pubmedqa,medqa,medmcqa,emrqa,i2b2,ddi2013,hoc,mtsample,pubmed_sum,mimic_cxr,bionli,mednli"


def get_config() -> ml_collections.ConfigDict:
    pretrain = sibling_config(__file__, "pretrain_13b.py").get_config()
    chat = sibling_config(__file__, "chat_13b_lora.py").get_config()
    mix = sibling_config(__file__, "../data/me_llama_mix.py").get_config("<data>")  # "<data>" = data.root
    mix.prepared_dir = None  # the prepare stage writes <workdir>/prepare/shards and the stages read those
    # The instruction files (any layout of JSONL conversations / Alpaca / MIBE records), as the chat config reads them.
    mix.instruct = ml_collections.ConfigDict(dict(
        sources=[dict(path="<data>/instructions/*.jsonl")], template="me_llama", format="auto",
        max_prompt_tokens=3500, system=None, heldout_fraction=0.01))

    c = ml_collections.ConfigDict()
    c.workdir = "runs/me_llama_13b"
    c.init_from = ""  # LLaMA-2-13B: a Hugging Face directory (local or gs://), e.g. meta-llama/Llama-2-13b-hf
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(
        source="corpus",
        root="",  # the directory or gs:// prefix holding the corpus sources, instructions/ and eval/
        demo_scale=1.0,  # data.source="demo" only
        tokenizer="",  # empty: init_from's tokenizer.model (LLaMA-2's)
        vocab_size=32000,
        prepare_shards=True,
        workers=16,
    ))
    c.mixture = mix
    c.pretrain = pretrain
    c.instruct = chat
    c.evaluate = ml_collections.ConfigDict(dict(
        tasks=ALL_MIBE,
        data_dir="<data>/eval",  # the released MIBE test files (docs/evaluation.md)
        max_new_tokens=256,  # Me-LLaMA's evaluation: greedy, at most 256 new tokens
        template="me_llama",
        matching="mibe",
        limit=0,  # 0 = every record
        batch_size=32,
    ))
    c.export = ml_collections.ConfigDict(dict(dtype="bfloat16", max_shard_size="5GB", check_with_transformers=False))
    return c
