"""`make demo`: the Me-LLaMA pipeline in miniature on the embedded synthetic data, on a CPU, in minutes.

    mellama-recipe --config configs/demo.py --workdir runs/demo
    mellama-recipe --config configs/demo.py --workdir runs/demo --config.init_from=/path/to/Llama-2-7b-hf

The demo is one config of the recipe driver (configs/me_llama/recipe_13b.py is the real one).
Stages: prepare (demo corpus, tokenizer, ArrayRecord shards) → convert (init_from, if given) → pretrain (continual pretraining on the
15:1:4 mixture) → instruct (LoRA instruction tuning) → evaluate (base vs tuned on the demo MIBE tasks) →
export (HF merged + PEFT) → report.
"""
import ml_collections

from mellama_jax.config import sibling_config
from mellama_jax.train.config import default_config, model_fields


def _demo_mix(root: str) -> ml_collections.ConfigDict:
    """configs/data/demo_mix.py, loaded by path so this file works from any working directory."""
    return sibling_config(__file__, "data/demo_mix.py").get_config(root)


def _stage(steps: int, lr: float) -> ml_collections.ConfigDict:
    c = default_config()
    c.model = model_fields("demo")
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.train.steps = steps
    c.train.seq_len = 256
    c.train.global_batch_size = 16
    c.optim.learning_rate = lr
    c.optim.warmup_ratio = 0.05
    c.optim.min_lr_ratio = 0.1
    c.optim.weight_decay = 0.01
    c.checkpoint.every_steps = 50
    c.checkpoint.keep = 2
    c.log.every_steps = 10
    return c


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "runs/demo"
    c.init_from = ""  # a Hugging Face LLaMA-2 directory (or a converted checkpoint) instead of random init
    c.seed = 0

    # prepare: the synthetic three-domain corpus, a tokenizer trained on it, and ArrayRecord shards.
    c.data = ml_collections.ConfigDict(dict(
        source="demo",  # the prepare stage writes the synthetic corpus (configs/me_llama/recipe_13b.py: "corpus")
        root="",  # data.source="corpus" only: where the sources are
        demo_scale=1.0,  # size of the generated corpus (1.0 ≈ 4,200 documents)
        tokenizer="",  # an existing tokenizer.model; empty = train a LLaMA-2-style one on the corpus
        vocab_size=1024,
        prepare_shards=True,  # tokenize into ArrayRecord (TFDS layout) as the real pipeline does
        workers=2,
    ))
    c.mixture = _demo_mix("<data>")  # "<data>" is replaced by the prepare stage's directory

    # pretrain: continual pretraining on the 15:1:4 mixture with held-out loss per component.
    c.pretrain = _stage(steps=200, lr=3e-3)
    c.pretrain.eval.every_steps = 100
    c.pretrain.eval.batches = 2

    # instruct: LoRA instruction tuning on the demo instruction set (Me-LLaMA-chat style).
    c.instruct = _stage(steps=160, lr=3e-3)
    c.instruct.train.lora.rank = 16
    c.instruct.train.lora.alpha = 32.0
    c.instruct.train.lora.targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    c.instruct.optim.weight_decay = 0.0

    # evaluate: the demo MIBE tasks, base (pretrained) vs instruction-tuned.
    c.evaluate = ml_collections.ConfigDict(dict(
        tasks="pubmedqa,medqa,mednli,i2b2,hoc,mimic_cxr,emrqa",
        data_dir="",  # empty = the demo eval sets written by the prepare stage
        max_new_tokens=48,
        template="me_llama",
        matching="mibe",
        limit=40,
        batch_size=20,
    ))

    # export: Hugging Face weights (merged LoRA) + a PEFT adapter on the exported base.
    c.export = ml_collections.ConfigDict(dict(dtype="float32", max_shard_size="2GB", check_with_transformers=True))
    return c
