"""The train step: sharded meshes agree with one device, gradient accumulation, loss and optimizer references.

References nobody here wrote: torch's cross_entropy, torch.optim.AdamW + clip_grad_norm_, and transformers'
get_cosine_schedule_with_warmup.
"""
import jax
import numpy as np
import pytest

from mellama_jax import parallel
from mellama_jax.config import preset
from mellama_jax.data.synthetic import SyntheticSource
from mellama_jax.model import params as P
from mellama_jax.train.batches import global_batch
from mellama_jax.train.config import OptimConfig, SyntheticDataConfig
from mellama_jax.train.loss import cross_entropy_sum
from mellama_jax.train.optimizer import learning_rate_schedule, make_optimizer
from mellama_jax.train.state import FullParams, TrainState, state_layout
from mellama_jax.train.step import compile_train_step

B, T = 8, 32
MODEL = preset("tiny", vocab_size=128, num_layers=2)
# eps 1e-4: Adam's first update is lr * g / (|g| + eps), which turns gradient entries far below eps-scale
# (cancellation-dominated, ~1e-9 here) and their 1e-7-relative reassociation noise from sharded sums into
# full-size parameter differences. With eps above that noise the update reflects the gradient; the
# gradients themselves are compared separately (the first moment holds (1 - b1) * g).
OPTIM = OptimConfig(learning_rate=1e-3, warmup_ratio=0.0, eps=1e-4, weight_decay=0.1)


@pytest.fixture(scope="module")
def setup():
    trainable = FullParams(MODEL)
    tx, schedule = make_optimizer(OPTIM, 10, trainable.abstract_trainable())
    params = P.init_params(MODEL, jax.random.key(0))
    host_state = jax.device_get(TrainState(step=np.zeros((), np.int32), params=params, opt_state=tx.init(params)))
    src = SyntheticSource(SyntheticDataConfig(min_doc_len=5, max_doc_len=20, pad_fraction=0.2), vocab_size=128,
                          seq_len=T, global_batch_size=B)
    batch = dict(src.make_batch(0), row_domain=np.array([0, 2, 1, 0, 2, 2, -1, 1], np.int32))  # -1: no component
    return trainable, tx, schedule, host_state, batch


def run_step(setup, mesh_cfg, devices=None, micro_batches=1):
    trainable, tx, schedule, host_state, batch = setup
    mesh = parallel.make_mesh(mesh_cfg, devices)
    layout = state_layout(trainable, tx, mesh)
    step = compile_train_step(trainable, tx, schedule, layout, mesh, global_batch_size=B, seq_len=T,
                              micro_batches=micro_batches)
    state = jax.device_put(host_state, layout.shardings)
    new_state, metrics = step(state, global_batch(batch, mesh, B))
    assert int(new_state.step) == 1
    return jax.device_get(new_state), jax.device_get(metrics)


@pytest.fixture(scope="module")
def single_device(setup):
    return run_step(setup, parallel.MeshConfig(1, 1, 1), jax.devices()[:1])


def max_relative(a_tree, b_tree):
    """Largest per-leaf max|a - b| / max|b| over the tree."""
    return max(jax.tree.leaves(jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)), a_tree, b_tree)))


@pytest.mark.parametrize("mesh_cfg", [parallel.MeshConfig(8, 1, 1), parallel.MeshConfig(1, 8, 1),
                                      parallel.MeshConfig(1, 4, 2), parallel.MeshConfig(2, 2, 2)],
                         ids=["data8", "fsdp8", "tensor2_fsdp4", "2x2x2"])
def test_sharded_step_matches_single_device(setup, single_device, mesh_cfg):
    ref_state, ref_metrics = single_device
    state, metrics = run_step(setup, mesh_cfg)
    assert max_relative(state.params, ref_state.params) < 1e-5
    mu, ref_mu = state.opt_state[1][0].mu, ref_state.opt_state[1][0].mu  # (1 - b1) * gradient
    assert max_relative(mu, ref_mu) < 1e-5
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], ref_metrics["grad_norm"], rtol=1e-5)


def test_gradient_accumulation_matches_whole_batch(setup, single_device):
    ref_state, ref_metrics = single_device
    state, metrics = run_step(setup, parallel.MeshConfig(1, 1, 1), jax.devices()[:1], micro_batches=4)
    assert max_relative(state.params, ref_state.params) < 1e-5
    assert max_relative(state.opt_state[1][0].mu, ref_state.opt_state[1][0].mu) < 1e-5
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-6)
    assert metrics["loss_tokens"] == ref_metrics["loss_tokens"]
    np.testing.assert_allclose(metrics["domain_loss_sum"], ref_metrics["domain_loss_sum"], rtol=1e-5)
    np.testing.assert_array_equal(metrics["domain_tokens"], ref_metrics["domain_tokens"])


def test_training_loss_per_component(setup, single_device):
    """The per-component sums are the loss of each component's rows (the row_domain -1 row counts nowhere)."""
    _, metrics = single_device
    trainable, _, _, host_state, batch = setup
    logits, _ = trainable.module().apply({"params": host_state.params}, batch["tokens"], batch["positions"],
                                         batch["segment_ids"])
    for d in range(3):
        rows = batch["row_domain"] == d
        total, count = cross_entropy_sum(np.asarray(logits)[rows], {k: v[rows] for k, v in batch.items()})
        np.testing.assert_allclose(metrics["domain_loss_sum"][d], total, rtol=1e-5)
        assert metrics["domain_tokens"][d] == count
    assert metrics["domain_tokens"][3:].sum() == 0
    assert metrics["domain_tokens"].sum() < metrics["loss_tokens"]  # the -1 row's tokens are in the total only


def test_loss_matches_torch_cross_entropy_with_document_boundaries():
    import torch
    rng = np.random.default_rng(0)
    V = 50
    logits = rng.normal(size=(2, 12, V)).astype(np.float32)
    tokens = rng.integers(0, V, (2, 12)).astype(np.int32)
    segment_ids = np.array([[1, 1, 1, 1, 2, 2, 2, 3, 3, 0, 0, 0], [1] * 6 + [2] * 6], np.int32)
    loss_mask = np.array([[1] * 12, [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1]], np.int32)
    batch = {"tokens": tokens, "segment_ids": segment_ids, "loss_mask": loss_mask}
    total, count = cross_entropy_sum(logits, batch)
    # Reference: torch CE with ignore_index on targets that are not predicted within one document.
    targets = torch.tensor(tokens[:, 1:], dtype=torch.long).clone()
    for b in range(2):
        for t in range(11):
            same = segment_ids[b, t + 1] == segment_ids[b, t] and segment_ids[b, t] != 0
            if not (same and loss_mask[b, t + 1]):
                targets[b, t] = -100
    ref = torch.nn.functional.cross_entropy(torch.tensor(logits[:, :-1]).reshape(-1, V), targets.reshape(-1),
                                            ignore_index=-100, reduction="sum")
    np.testing.assert_allclose(float(total), ref.item(), rtol=1e-5)
    assert float(count) == int((targets != -100).sum())


def test_optimizer_matches_torch_adamw_with_clipping_and_transformers_schedule():
    import torch
    import transformers
    cfg = OptimConfig(learning_rate=1e-2, warmup_ratio=0.2, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=0.5)
    total = 10
    rng = np.random.default_rng(0)
    params = {"embed": {"embedding": rng.normal(size=(6, 4)).astype(np.float32)},
              "attn_norm": {"scale": rng.normal(size=(4,)).astype(np.float32)},
              "mlp": {"up_proj": {"kernel": rng.normal(size=(4, 5)).astype(np.float32)}}}
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params) for _ in range(total)]
    tx, schedule = make_optimizer(cfg, total, params)
    state = tx.init(params)
    ours = params
    for g in grads:
        updates, state = tx.update(g, state, ours)
        ours = jax.tree.map(lambda p, u: p + u, ours, updates)

    tp = {k: torch.tensor(v) for k, v in P.flatten_tree(params).items()}
    for t in tp.values():
        t.requires_grad_(True)
    decay = [tp[("mlp", "up_proj", "kernel")]]
    no_decay = [tp[("embed", "embedding")], tp[("attn_norm", "scale")]]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.learning_rate, betas=(0.9, 0.95), eps=1e-8)
    sched = transformers.get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=total)
    for i, g in enumerate(grads):
        np.testing.assert_allclose(float(schedule(i)), sched.get_last_lr()[0], rtol=1e-5, atol=1e-12)  # ours is float32
        for k, v in P.flatten_tree(g).items():
            tp[k].grad = torch.tensor(v)
        torch.nn.utils.clip_grad_norm_(list(tp.values()), cfg.clip_norm)
        opt.step()
        sched.step()
    for k, v in P.flatten_tree(ours).items():
        np.testing.assert_allclose(np.asarray(v), tp[k].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_schedule_shapes():
    sched = learning_rate_schedule(OptimConfig(learning_rate=1.0, warmup_ratio=0.1, min_lr_ratio=0.1), 100)
    assert float(sched(0)) == 0.0 and abs(float(sched(10)) - 1.0) < 1e-6
    assert abs(float(sched(100)) - 0.1) < 1e-6  # ends at min_lr_ratio
