"""LoRA in the model and its PEFT export, checked against peft itself."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_fixtures import hf_logits, make_hf_model
from safetensors import safe_open

from mellama_jax.config import ConfigError, ModelConfig
from mellama_jax.convert.mapping import params_from_hf
from mellama_jax.convert.peft import export_peft, import_peft
from mellama_jax.model import params as P
from mellama_jax.model.llama import Transformer
from mellama_jax.model.lora import LoraConfig, init_lora, merge_lora

TOKENS = np.random.RandomState(0).randint(3, 128, (2, 9))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("hf"))
    hf = make_hf_model(d)
    cfg = ModelConfig.from_hf_config(d)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = params_from_hf(cfg, state.__getitem__)
    return d, hf, cfg, params


def _randomise_b(adapters, seed=1):
    """Non-zero B so the adapters actually change the output."""
    flat = P.flatten_tree(adapters)
    rng = np.random.RandomState(seed)
    for path, v in flat.items():
        if path[-1] == "lora_b":
            flat[path] = jnp.asarray(0.05 * rng.standard_normal(v.shape), jnp.float32)
    return P.tree_from_paths(flat)


def _logits(cfg, params, lora=None, adapters=None):
    vars_ = {"params": params}
    if adapters is not None:
        vars_["lora"] = adapters
    return np.asarray(Transformer(cfg, lora).apply(vars_, jnp.asarray(TOKENS))[0])


def test_zero_b_leaves_logits_unchanged(base):
    _, _, cfg, params = base
    lora = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    adapters = init_lora(cfg, lora, jax.random.key(0))
    np.testing.assert_array_equal(_logits(cfg, params, lora, adapters), _logits(cfg, params))


def test_model_init_declares_the_same_lora_tree(base):
    _, _, cfg, _ = base
    lora = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "o_proj", "down_proj"))
    declared = jax.eval_shape(lambda: Transformer(cfg, lora).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    ours = init_lora(cfg, lora, jax.random.key(0))
    assert jax.tree.map(lambda x: x.shape, declared["lora"]) == jax.tree.map(lambda x: x.shape, ours)


@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("o_proj", "gate_proj", "up_proj", "down_proj", "k_proj")])
def test_peft_export_matches_peft_and_merge(base, tmp_path, targets):
    import peft
    import torch

    hf_dir, hf, cfg, params = base
    lora = LoraConfig(rank=4, alpha=16.0, targets=targets)
    adapters = _randomise_b(init_lora(cfg, lora, jax.random.key(3)))
    ours = _logits(cfg, params, lora, adapters)
    assert np.abs(ours - _logits(cfg, params)).max() > 1e-3  # the adapters matter

    out = export_peft(str(tmp_path / "adapter"), cfg, lora, adapters, base_model_name_or_path=hf_dir)
    with safe_open(f"{out}/adapter_model.safetensors", "np") as f:
        assert all(k.startswith("base_model.model.model.layers.") for k in f.keys())
    base_model = make_hf_model(None)  # same seed -> same weights as the saved base
    peft_model = peft.PeftModel.from_pretrained(base_model, out).eval()
    np.testing.assert_allclose(hf_logits(peft_model, TOKENS), ours, atol=1e-4)

    merged = merge_lora(cfg, lora, params, adapters)
    np.testing.assert_allclose(_logits(cfg, merged), ours, atol=1e-4)

    lora2, adapters2 = import_peft(out, cfg)
    assert lora2 == LoraConfig(rank=4, alpha=16.0, dropout=0.0, targets=tuple(sorted(targets)))
    for a, b in zip(jax.tree.leaves(adapters), jax.tree.leaves(adapters2)):
        np.testing.assert_array_equal(np.asarray(a), b)
    del torch


@pytest.mark.parametrize("kwargs, message", [
    (dict(targets=("q_proj", "qkv_proj")), "unknown module name"),
    (dict(rank=0), r"lora\.rank=0: must be a positive integer"),
    (dict(rank=-2), r"lora\.rank=-2: must be a positive integer"),
    (dict(targets=()), r"lora\.targets='': empty; name at least one of q_proj"),
])
def test_bad_lora_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LoraConfig(**kwargs)
