"""The ahead-of-time planner (mellama_jax.planning, mellama-plan).

Without libtpu: topology names, the FLOPs count of the traced real train step (against the model's FLOPs
formula and against XLA's own cost analysis of a loop-free step), config loading, plan choice.
With libtpu (marked `tpu`): the real train step compiled for fake v5e and 2-slice v5p devices, an
out-of-memory plan reported as "does not fit", the executable serialized, the CLI end to end.
"""
import dataclasses
import glob
import os
import pickle

import jax
import pytest

from mellama_jax.config import ConfigError, ModelConfig
from mellama_jax.libtpu_env import libtpu_available
from mellama_jax.model import params as P
from mellama_jax.parallel import MeshConfig, make_mesh
from mellama_jax.planning import config_files, planner
from mellama_jax.planning.compiled import CompileReport, parse_out_of_memory
from mellama_jax.planning.flops import jaxpr_matmul_flops
from mellama_jax.planning.topology import parse_topology
from mellama_jax.train.step import MAX_DOMAINS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_70B = os.path.join(ROOT, "configs", "me_llama", "pretrain_70b.py")
needs_libtpu = pytest.mark.skipif(not libtpu_available(), reason="libtpu not installed (pip install -e '.[tpu]')")
TINY = ["train.seq_len=128", "train.global_batch_size=16"]


@pytest.mark.parametrize("name,chips,shape,accelerator,hosts", [
    ("v5p-128", 64, (4, 4, 4), "v5p-128", 16),
    ("v5p-32", 16, (2, 2, 4), "v5p-32", 4),
    ("v5e-256", 256, (16, 16), "v5litepod-256", 64),
    ("v5litepod-8", 8, (2, 4), "v5litepod-8", 1),
    ("v4-32", 16, (2, 2, 4), "v4-32", 4),
    ("v5e:2x2", 4, (2, 2), "v5litepod-4", 1),
])
def test_topology_names(name, chips, shape, accelerator, hosts):
    t = parse_topology(name)
    assert (t.num_chips, t.shape, t.accelerator_type, t.hosts_per_slice) == (chips, shape, accelerator, hosts)


def test_multi_slice_topology_and_bad_names():
    t = parse_topology("2xv5p-16")
    assert (t.num_slices, t.num_chips, t.libtpu_name, t.name) == (2, 16, "v5p:2x2x2", "2xv5p-16")
    assert parse_topology("v5p-16", num_slices=2) == t
    for bad, match in [("v9-8", "unknown TPU generation"), ("v5p-12", "power of two"), ("v5p-7", "TensorCores"),
                       ("tpu", "expected an accelerator type")]:
        with pytest.raises(ValueError, match=match):
            parse_topology(bad)


def test_out_of_memory_messages_parse():
    a = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (24.00G) "
         "exceeds available HBM (15.75G).")
    assert parse_out_of_memory(a) == (24 * 1024 ** 3, int(15.75 * 1024 ** 3))
    # Verbatim from libtpu (70B on v5p-32): "Used" stops at the capacity; the total is the demand.
    b = ("RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: XLA:TPU compile permanent error. Ran out of memory in "
         "memory space hbm. Used 95.74G of 95.74G hbm. Exceeded hbm capacity by 1.23M. Total hbm usage >= 96.00G: "
         "reserved        263.01M program          47.55G arguments        48.20G")
    assert parse_out_of_memory(b) == (96 * 1024 ** 3, int(95.74 * 1024 ** 3))
    c = "Ran out of memory in memory space hbm. Used 95.74G of 95.74G hbm. Exceeded hbm capacity by 2.5G."
    assert parse_out_of_memory(c) == (int(95.74 * 1024 ** 3) + int(2.5 * 1024 ** 3), int(95.74 * 1024 ** 3))
    assert parse_out_of_memory("something else") == (None, None)


def _cpu_plan_inputs(overrides):
    config = config_files.load_config(CONFIG_70B, model="tiny", overrides=TINY + ["model.attention=xla"] + overrides)
    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    return config, mesh


def _traced_flops(config, mesh):
    from mellama_jax import parallel
    jitted, args = planner.train_step_inputs(config, mesh)
    with parallel.activation_sharding(mesh):
        traced = jitted.trace(*args)
    return jitted, args, traced, jaxpr_matmul_flops(traced.jaxpr)


def test_step_flops_count_scans_and_recompute():
    """Counted through the layer scan and the micro-batch scan, they equal the model's formula without remat
    (6N + attention, model.params.flops_per_token); full remat adds one forward pass of the layers."""
    config, mesh = _cpu_plan_inputs(["train.micro_batches=2", "model.remat_policy=none"])
    model = ModelConfig.from_dict(planner._model_dict(config))
    tokens = config.train.global_batch_size * config.train.seq_len
    _, _, _, flops = _traced_flops(config, mesh)
    # The formula's 6N counts the RMSNorm scales (2 per layer + the final one) too; they are no matmul.
    norm_params = (2 * model.num_layers + 1) * model.hidden_size
    # XLA attention computes every score of the T x T matrix and masks half: twice the causal count the formula
    # uses (MaxText's convention), so add the other half back.
    full_attention = 6 * model.num_layers * config.train.seq_len * model.num_heads * model.head_dim
    # The step also sums loss and tokens per mixture component: two [B] x [B, MAX_DOMAINS] products (train/step.py).
    per_component = 2 * 2 * config.train.global_batch_size * MAX_DOMAINS
    expected = (P.flops_per_token(model, config.train.seq_len) + full_attention - 6 * norm_params) * tokens + per_component
    assert flops == pytest.approx(expected, rel=1e-9)
    config_full, _ = _cpu_plan_inputs(["train.micro_batches=2", "model.remat_policy=full"])
    _, _, _, flops_full = _traced_flops(config_full, mesh)
    assert 1.15 * flops < flops_full < 1.40 * flops


def test_step_flops_agree_with_xla_cost_analysis_of_loop_free_step():
    """XLA counts a loop-free step exactly (matmuls plus element-wise work), so ours must be just below it."""
    # One device (nothing replicated, so nothing counted twice); a model wide enough for matmuls to dominate.
    config = config_files.load_config(CONFIG_70B, model="tiny", overrides=[
        "train.seq_len=64", "train.global_batch_size=2", "model.attention=xla", "model.scan_layers=False",
        "model.hidden_size=512", "model.intermediate_size=1376", "model.num_heads=8", "model.num_kv_heads=4",
        "model.head_dim=64"])
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    jitted, args, traced, flops = _traced_flops(config, mesh)
    from mellama_jax import parallel
    with parallel.activation_sharding(mesh):
        cost = traced.lower().compile().cost_analysis()
    xla = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
    assert 0.9 * xla < flops <= xla


def test_adapt_config_micro_batch_and_slices():
    config = config_files.load_config(CONFIG_70B)
    cfg, shape = planner.adapt_config(config, parse_topology("v5p-128"), remat="minimal", micro_batch=2)
    assert (cfg.model.remat_policy, shape.data_parallel, shape.micro_batches, cfg.train.micro_batches) == \
        ("minimal", 64, 4, 4)
    cfg, shape = planner.adapt_config(config, parse_topology("2xv5p-128"), micro_batch=1)
    assert (cfg.mesh.dcn_data, cfg.mesh.data, shape.data_parallel, shape.micro_batches) == (2, 2, 128, 4)
    with pytest.raises(ConfigError, match="does not divide train.global_batch_size=512"):
        planner.adapt_config(config, parse_topology("v5e-256"), micro_batch=4)
    assert planner.micro_batch_choices(config, parse_topology("v5e-256")) == [1, 2]


def test_config_overrides_are_checked():
    cfg = config_files.load_config(CONFIG_70B, model="llama2_13b", overrides=["train.global_batch_size=256",
                                                                              "optim.learning_rate=1e-5"])
    assert (cfg.model.hidden_size, cfg.model.attention, cfg.train.global_batch_size) == (5120, "splash", 256)
    with pytest.raises(ConfigError, match=r"config\.train\.global_batch: no such config field"):
        config_files.load_config(CONFIG_70B, overrides=["train.global_batch=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config_files.load_config(CONFIG_70B, overrides=["train.seq_len"])


def test_choose_prefers_least_recompute_then_largest_micro_batch():
    base = CompileReport(topology="t", remat_policy="none", micro_batch_per_chip=1, micro_batches=4,
                         hbm_bytes=100, fits=True, argument_bytes=10, flops_per_chip=100.0e9)
    reports = [
        dataclasses.replace(base, remat_policy="none", fits=False, out_of_memory=True, required_bytes=300),
        dataclasses.replace(base, remat_policy="minimal", flops_per_chip=110.0e9),
        dataclasses.replace(base, remat_policy="minimal", micro_batch_per_chip=2, micro_batches=2,
                            flops_per_chip=110.0e9),
        dataclasses.replace(base, remat_policy="full", micro_batch_per_chip=4, micro_batches=1,
                            flops_per_chip=133.0e9),
    ]
    best = planner.choose(reports)
    assert (best.remat_policy, best.micro_batch_per_chip) == ("minimal", 2)
    assert planner.choose(reports[:1]) is None
    assert reports[0].status == "does not fit" and "needs" in reports[0].summary()


# ---------------------------------------------------------------- with libtpu
@pytest.mark.tpu
@needs_libtpu
def test_plan_tiny_config_fits_on_v5e_with_splash(tmp_path):
    config = config_files.load_config(CONFIG_70B, model="tiny", overrides=TINY)
    assert config.model.attention == "splash"
    exe = tmp_path / "step.exe"
    report = planner.plan_step(config, "v5e:2x2", remat="full", micro_batch=2, save_executable=str(exe))
    assert report.fits and report.status == "fits"
    assert (report.micro_batch_per_chip, report.micro_batches) == (2, 2)
    assert 0 < report.total_bytes < report.hbm_bytes == 16 * 1024 ** 3
    assert report.argument_bytes > 0 and report.temp_bytes > 0
    assert report.flops_per_chip > report.model_flops_per_chip  # full remat recomputes the forward
    with open(exe, "rb") as f:
        payload = pickle.load(f)
    assert set(payload) == {"executable", "in_tree", "out_tree"} and len(payload["executable"]) > 0


@pytest.mark.tpu
@needs_libtpu
def test_every_remat_policy_compiles_for_tpu_and_saves_less_than_none():
    """MaxText's policies, host-offload ones included, compile and fit on a small v5e slice."""
    from mellama_jax.config import REMAT_POLICIES
    config = config_files.load_config(CONFIG_70B, model="tiny", overrides=TINY + ["model.attention=xla"])
    devices = planner.fake_devices(parse_topology("v5e:2x2"))
    reports = {r: planner.plan_step(config, "v5e:2x2", remat=r, micro_batch=4, devices=devices)
               for r in REMAT_POLICIES}
    assert all(r.fits for r in reports.values()), {k: r.summary() for k, r in reports.items() if not r.fits}
    # Recompute grows as less is saved; an offloaded set is kept (on the host), so recomputed no more.
    flops = {k: r.flops_per_chip for k, r in reports.items()}
    assert flops["none"] < flops["full"] and flops["minimal_offloaded"] == pytest.approx(flops["minimal"]), flops


@pytest.mark.tpu
@needs_libtpu
def test_plan_two_slice_v5p():
    config = config_files.load_config(CONFIG_70B, model="tiny", overrides=TINY + ["model.attention=xla"])
    report = planner.plan_step(config, "2xv5p-8")
    assert report.fits and report.topology == "2xv5p-8"
    assert report.total_bytes > 0 and report.flops_per_chip > 0


@pytest.mark.tpu
@needs_libtpu
def test_out_of_memory_is_reported_not_raised(capsys, tmp_path):
    import json

    from mellama_jax.commands import plan as plan_cli

    # 256 rows x 512 tokens x 32000 fp32 logits per chip alone exceed a v5e chip's 16 GiB.
    code = plan_cli.main(["--config", CONFIG_70B, "--model", "tiny", "--topology", "v5e:2x2", "--remat", "none",
                          "--config.model.vocab_size=32000", "--config.train.seq_len=512",
                          "--config.train.global_batch_size=1024", "--config.model.attention=xla",
                          "--json", str(tmp_path / "plan.json")])
    out = capsys.readouterr()
    assert code == 1
    assert "does not fit: needs" in out.out and "Traceback" not in out.out + out.err
    (report,) = json.loads((tmp_path / "plan.json").read_text())["reports"]
    assert report["status"] == "does not fit" and report["out_of_memory"]
    assert report["required_bytes"] > report["available_bytes"] > 15 * 1024 ** 3


def test_estimates_from_a_report():
    """Step time, throughput, days and chip-hours follow from the model FLOPs at the stated MFU (by hand)."""
    from mellama_jax.planning import estimates
    from mellama_jax.planning.compiled import CompileReport
    from mellama_jax.planning.topology import parse_topology

    topology = parse_topology("v5p-8")  # 4 chips, 459 TFLOP/s bf16 and 2765 GB/s each
    config = config_files.load_config(CONFIG_70B, model="tiny", overrides=[
        "train.global_batch_size=8", "train.seq_len=512", "train.steps=1000"])
    rep = CompileReport(topology="v5p-8", remat_policy="minimal", micro_batch_per_chip=1, micro_batches=2,
                        hbm_bytes=95 * 1024 ** 3, fits=True, model_flops_per_chip=459e12,
                        xla_flops_per_chip=229.5e12, xla_bytes_accessed_per_chip=2765e9 * 0.25)
    e = estimates.estimate(rep, config, topology, mfu=0.5)
    assert e.step_seconds == pytest.approx(2.0)  # 459e12 / (459e12 x 0.5)
    assert e.tokens_per_sec_per_chip == pytest.approx(8 * 512 / 2.0 / 4)
    assert e.tokens_per_day == pytest.approx(8 * 512 / 2.0 * 86400)
    assert e.days == pytest.approx(1000 * 8 * 512 / (8 * 512 / 2.0 * 86400))
    assert e.chip_hours == pytest.approx(e.days * 24 * 4)
    assert (e.roofline_compute_seconds, e.roofline_hbm_seconds) == pytest.approx((0.5, 0.25))
    assert any("compute-bound" in line for line in e.lines())


def test_launch_flags_are_the_difference_from_the_config_file():
    """What the plan changed (preset, --config.x=y overrides, remat, accumulation, a multi-slice mesh) and nothing else;
    tests/test_plan_launch.py runs the training CLI on such flags."""
    from mellama_jax.planning import estimates

    base = config_files.file_config(CONFIG_70B)
    config = config_files.load_config(CONFIG_70B, overrides=["train.global_batch_size=256",
                                                             "optim.learning_rate=1e-5"])
    planned, _ = planner.adapt_config(config, parse_topology("2xv5p-128"), remat="minimal", micro_batch=1)
    assert estimates.launch_flags(planned, base) == [
        "--config.mesh.data=2", "--config.mesh.dcn_data=2", "--config.model.remat_policy=minimal",
        "--config.optim.learning_rate=1e-05",
        "--config.train.global_batch_size=256", "--config.train.micro_batches=2"]
    assert estimates.launch_flags(base, base) == []


# The training configs a pod runs (recipe_*.py drive the staged recipe; their training stages are these configs).
SHIPPED_POD_CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "me_llama", "*.py"))
                             if not os.path.basename(p).startswith("recipe_"))


@pytest.mark.tpu
@pytest.mark.slow
@needs_libtpu
@pytest.mark.parametrize("path", SHIPPED_POD_CONFIGS, ids=os.path.basename)
def test_shipped_pod_config_fits_its_stated_topology(path):
    """Every shipped pod config names its slice (TOPOLOGY, Cloud's spelling) and its train step fits there."""
    from mellama_jax.config import config_module
    topology = config_module(path).TOPOLOGY
    rep = planner.plan_step(config_files.load_config(path), topology)
    assert rep.fits, f"{os.path.basename(path)} on {topology}: {rep.summary()}"
