"""An even smaller `make demo` for tests and smoke runs: every stage of the recipe in about a minute.

    mellama-recipe --config configs/demo_smoke.py --workdir runs/smoke
"""
from mellama_jax.config import sibling_config


def _demo():
    return sibling_config(__file__, "demo.py").get_config()


def get_config():
    c = _demo()
    c.workdir = "runs/smoke"
    c.data.demo_scale = 0.15
    c.data.vocab_size = 512
    c.data.workers = 1
    for stage in (c.pretrain, c.instruct):
        stage.model.vocab_size = 512
        stage.model.hidden_size = 64
        stage.model.intermediate_size = 172
        stage.model.num_layers = 2
        stage.model.head_dim = 16
        stage.train.seq_len = 128
        stage.train.global_batch_size = 8
        stage.checkpoint.every_steps = 2
        stage.log.every_steps = 2
    c.pretrain.train.steps = 8
    c.pretrain.eval.every_steps = 4
    c.pretrain.eval.batches = 1
    c.instruct.train.steps = 4
    c.instruct.train.lora.rank = 4
    c.evaluate.limit = 2
    c.evaluate.max_new_tokens = 8
    c.evaluate.batch_size = 4
    return c
