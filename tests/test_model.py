"""Model acceptance: our LLaMA-2 against transformers' LlamaForCausalLM on the same random weights.

Every comparison is with a reference nobody here wrote (transformers' torch model), except where the
property is internal (scanned == unscanned, remat policies, sharded == single device), where the reference
is our own unsharded, unscanned, non-rematerialised model.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_fixtures import hf_logits, make_hf_model

import mellama_jax
from mellama_jax.config import REMAT_POLICIES, preset
from mellama_jax.convert.hf import convert_hf_to_checkpoint
from mellama_jax.model import params as P
from mellama_jax.model.llama import Transformer
from mellama_jax.parallel import MeshConfig, make_mesh

# One case per architectural variant the converter and the model must get right.
HF_CASES = {
    "mha": dict(num_attention_heads=4, num_key_value_heads=4),
    "gqa2_rope_theta": dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0),
    "gqa1_odd_sizes": dict(vocab_size=131, hidden_size=60, intermediate_size=97, num_attention_heads=3,
                           num_key_value_heads=1),
}
ATOL = 1e-4


@pytest.fixture(scope="module", params=sorted(HF_CASES))
def hf_case(request, tmp_path_factory):
    """(name, hf_dir, torch model, tokens [2, 8], reference logits)."""
    name = request.param
    hf_dir = str(tmp_path_factory.mktemp(f"hf_{name}"))
    torch_model = make_hf_model(hf_dir, seed=len(name), **HF_CASES[name])
    vocab = torch_model.config.vocab_size
    tokens = np.random.RandomState(0).randint(0, vocab, size=(2, 8))
    return name, hf_dir, torch_model, tokens, hf_logits(torch_model, tokens)


def test_logits_match_transformers_from_hf_dir(hf_case):
    _, hf_dir, _, tokens, ref = hf_case
    model = mellama_jax.load(hf_dir)
    got = model.logits(tokens)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL)


def test_logits_match_transformers_from_converted_checkpoint(hf_case, tmp_path):
    _, hf_dir, _, tokens, ref = hf_case
    ckpt = convert_hf_to_checkpoint(hf_dir, tmp_path / "ckpt", progress=False)
    model = mellama_jax.load(ckpt)
    assert model.config.scan_layers
    np.testing.assert_allclose(model.logits(tokens), ref, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def gqa_case(tmp_path_factory):
    hf_dir = str(tmp_path_factory.mktemp("hf_gqa"))
    torch_model = make_hf_model(hf_dir, seed=7, num_key_value_heads=2)
    return hf_dir, torch_model, mellama_jax.load(hf_dir)


def test_packed_documents_get_the_logits_they_get_alone(gqa_case):
    """Two documents packed into one row (segments 1,1,1,2,2; positions 0,1,2,0,1) never see each other."""
    _, torch_model, model = gqa_case
    doc1, doc2 = [5, 17, 42], [9, 77]
    packed = model.logits([doc1 + doc2], positions=[[0, 1, 2, 0, 1]], segment_ids=[[1, 1, 1, 2, 2]])
    np.testing.assert_allclose(packed[0, :3], hf_logits(torch_model, [doc1])[0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(packed[0, 3:], hf_logits(torch_model, [doc2])[0], rtol=0, atol=ATOL)
    # The second document really is affected by what precedes it when unpacked: the test can fail.
    unpacked = model.logits([doc1 + doc2])
    assert np.abs(unpacked[0, 3:] - packed[0, 3:]).max() > 1e-3


def test_scanned_and_unscanned_layers_give_identical_logits(gqa_case):
    hf_dir, _, scanned = gqa_case
    unscanned = mellama_jax.load(hf_dir, scan_layers=False)
    assert "layers_0" in unscanned.params and "layers" in scanned.params
    tokens = np.arange(16).reshape(2, 8) % scanned.config.vocab_size
    np.testing.assert_allclose(unscanned.logits(tokens), scanned.logits(tokens), rtol=0, atol=1e-6)


def test_remat_policies_give_identical_logits_and_gradients(gqa_case):
    """Rematerialisation changes what is stored for the backward pass, never the numbers.

    Every policy's logits and gradients come out of one jitted program (one compile instead of twelve).
    """
    _, _, model = gqa_case
    tokens = jnp.asarray(np.arange(12).reshape(2, 6) % model.config.vocab_size)
    probe = jnp.asarray(np.random.RandomState(1).randn(2, 6, model.config.vocab_size).astype(np.float32))

    @jax.jit
    def every_policy(params):
        out = {}
        for name in REMAT_POLICIES:
            cfg = model.config.replace(remat_policy=name)
            loss = lambda p, cfg=cfg: (lambda lg: (jnp.sum(lg * probe), lg))(Transformer(cfg).apply({"params": p}, tokens)[0])
            (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
            out[name] = (logits, grads)
        return out

    results = every_policy(model.params)
    ref_logits, ref_grads = results["none"]
    np.testing.assert_allclose(ref_logits, model.logits(np.asarray(tokens)), rtol=0, atol=1e-6)
    ref = P.flatten_tree(ref_grads)
    for name, (logits, grads) in results.items():
        np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-6, err_msg=name)
        for path, g in P.flatten_tree(grads).items():
            # A recomputed forward is another XLA program, so fp32 sums may round differently: allow 4 ulps of
            # the tensor's largest entry (the embedding gradient reaches ~30, where 1e-6 is below one ulp).
            atol = max(1e-6, 4 * np.finfo(np.float32).eps * float(np.abs(ref[path]).max()))
            np.testing.assert_allclose(g, ref[path], rtol=1e-5, atol=atol, err_msg=f"{name}: {'/'.join(path)}")


def test_sharded_mesh_logits_equal_single_device(gqa_case):
    """Parameters sharded over data x fsdp x tensor = 2 x 2 x 2 with activation constraints: same logits."""
    hf_dir, _, single = gqa_case
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = mellama_jax.load(hf_dir, mesh=mesh)
    q = sharded.params["layers"]["attn"]["q_proj"]["kernel"]
    # [layers, embed, heads, head_dim]: embed over fsdp, heads over tensor, i.e. really split 4 ways.
    assert q.sharding.spec[1:3] == ("fsdp", "tensor"), q.sharding.spec
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.size == q.size // 4
    tokens = np.random.RandomState(3).randint(0, single.config.vocab_size, size=(4, 8))
    np.testing.assert_allclose(sharded.logits(tokens), single.logits(tokens), rtol=0, atol=1e-5)


def _llama2_param_count(vocab, hidden, inter, layers, heads, kv_heads):
    """Independent count from the architecture (not from our parameter table)."""
    head_dim = hidden // heads
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o, k, v
    mlp = 3 * hidden * inter
    norms = 2 * hidden
    return layers * (attention + mlp + norms) + 2 * vocab * hidden + hidden  # + embed, lm_head, final norm


@pytest.mark.parametrize("name, arch, exact, billions", [
    ("llama2_7b", (32000, 4096, 11008, 32, 32, 32), 6_738_415_616, 6.74),
    ("llama2_13b", (32000, 5120, 13824, 40, 40, 40), 13_015_864_320, 13.0),
    ("llama2_70b", (32000, 8192, 28672, 80, 64, 8), 68_976_648_192, 69.0),
])
def test_llama2_presets_have_the_published_sizes(name, arch, exact, billions):
    cfg = preset(name)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.num_heads,
            cfg.num_kv_heads) == arch
    assert (cfg.max_position_embeddings, cfg.rms_norm_eps, cfg.rope_theta) == (4096, 1e-5, 10000.0)
    abstract = P.abstract_params(cfg)  # shapes only: nothing is allocated
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    assert count == _llama2_param_count(*arch) == exact == P.count_params(cfg)
    digits = 2 if billions < 10 else 1
    assert round(count / 1e9, digits) == billions
