"""LoRA instruction tuning end to end: frozen base, adapter-sized optimizer state, adapter-only checkpoints
with exact resume, and exports checked by the libraries users load them with (peft, transformers).

One LoRA run (tiny random HF LLaMA as the base, the demo instruction set, 12 steps on the 8-device CPU
mesh) is shared by the tests; the zero-B ⇒ identical-logits property is tested in test_lora_model.py.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data_fixtures import make_demo
from hf_fixtures import hf_logits, make_hf_model

import mellama_jax
from mellama_jax import paths
from mellama_jax.checkpoints import model_dir
from mellama_jax.config import ConfigError, ModelConfig, config_module
from mellama_jax.model import params as P
from mellama_jax.model.llama import Transformer
from mellama_jax.model.lora import LoraConfig, init_lora, merge_lora
from mellama_jax.train.config import TrainConfig, model_fields
from mellama_jax.train.loop import train
from mellama_jax.train.lora import LoraTrainable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12
TOKENS = np.random.RandomState(0).randint(3, 1024, (2, 11))


def _config_module(name):
    return config_module(os.path.join(ROOT, "configs", f"{name}.py"))


def _chat_config(name, data_root, tokenizer, model_cfg, **overrides) -> TrainConfig:
    """configs/<name>.py on the test's demo data, with the base model's architecture and a short schedule."""
    c = _config_module(name).get_config(data_root)
    c.model = model_fields("tiny", **dict(model_cfg.to_dict(), scan_layers=True, param_dtype="float32"))
    c.data.tokenizer = tokenizer
    c.train.steps, c.train.seq_len = STEPS, 64
    c.checkpoint.every_steps, c.checkpoint.keep, c.checkpoint.async_save = 6, 3, False
    c.eval.every_steps = 0
    c.log.every_steps, c.log.progress_bar, c.log.tensorboard = 2, False, False
    c.update_from_flattened_dict(overrides)
    return TrainConfig.from_config_dict(c)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("lora_train"))
    data_root, tok = make_demo(root, scale=0.1)
    hf_dir = os.path.join(root, "hf_base")
    make_hf_model(hf_dir, vocab_size=1024)
    base_ckpt = model_dir.save_model_checkpoint(os.path.join(root, "base"), *_hf_params(hf_dir),
                                           tokenizer_dir=os.path.dirname(tok.model_path))
    cfg, base = _hf_params(hf_dir)
    return dict(root=root, data=data_root, tokenizer=tok.model_path, hf_dir=hf_dir, base_ckpt=base_ckpt,
                model_cfg=cfg, base=base)


def _hf_params(hf_dir):
    from mellama_jax.convert.hf import load_hf_params
    return load_hf_params(hf_dir, scan_layers=True)


@pytest.fixture(scope="module")
def lora_run(env):
    cfg = _chat_config("tiny_chat_lora", env["data"], env["tokenizer"], env["model_cfg"],
                       init_from=env["base_ckpt"])
    workdir = os.path.join(env["root"], "run")
    return cfg, workdir, train(cfg, workdir)


def _our_logits(cfg: ModelConfig, lora, base, adapters):
    variables = {"params": base, "lora": jax.device_get(adapters)}
    return np.asarray(Transformer(cfg, lora).apply(variables, jnp.asarray(TOKENS))[0])


def test_training_changes_adapters_only_and_lowers_the_loss(env, lora_run):
    cfg, workdir, result = lora_run
    assert result.step == STEPS
    # The frozen base is bit-identical to the checkpoint it was loaded from.
    frozen = P.flatten_tree(jax.device_get(result.state.frozen))
    for path, value in P.flatten_tree(env["base"]).items():
        np.testing.assert_array_equal(frozen[path], value, err_msg="/".join(path))
    # Every adapter B left zero; every adapter moved from its initialisation.
    adapters = P.flatten_tree(jax.device_get(result.state.params))
    initial = jax.device_get(P.flatten_tree(jax.jit(lambda k: init_lora(cfg.model, cfg.train.lora, k))(
        jax.random.key(cfg.train.seed))))
    assert set(adapters) == set(initial) and len(adapters) == 2 * 7
    for path, value in adapters.items():
        assert np.abs(value - np.asarray(initial[path])).max() > 0, "/".join(path)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == STEPS // 2
    assert np.mean(losses[-2:]) < losses[0] - 0.3, losses


def test_optimizer_state_is_exactly_twice_the_adapters(env, lora_run):
    cfg, _, result = lora_run
    adapter_elements = sum(x.size for x in jax.tree.leaves(result.state.params))
    base_elements = P.count_params(cfg.model)
    assert adapter_elements == LoraTrainable(cfg.model, cfg.train.lora).num_trainable()
    assert adapter_elements < base_elements / 10
    leaves = jax.tree.leaves(result.state.opt_state)
    arrays = [x for x in leaves if x.ndim > 0]
    scalars = [x for x in leaves if x.ndim == 0]  # step counts of Adam and the schedule
    assert sum(x.size for x in arrays) == 2 * adapter_elements  # AdamW mu + nu
    assert len(scalars) == 2
    base_shapes = {tuple(np.shape(x)) for x in jax.tree.leaves(env["base"])}
    assert not base_shapes & {x.shape for x in arrays}
    # A bf16 base changes the frozen tree's dtype only; still no optimizer state for it.
    layout_trainable = LoraTrainable(cfg.model, cfg.train.lora, base_dtype="bfloat16")
    assert {x.dtype for x in jax.tree.leaves(layout_trainable.abstract_frozen())} == {jnp.dtype("bfloat16")}
    assert {x.dtype for x in jax.tree.leaves(layout_trainable.abstract_trainable())} == {jnp.dtype("float32")}


def test_adapter_sharding_follows_the_adapted_kernels(lora_run):
    """On fsdp=8: A's fan-in `embed` dim and B's fan-out `embed` dim are sharded like the base kernel."""
    _, _, result = lora_run
    state = result.state
    q = state.params["layers"]["attn"]["q_proj"]
    down = state.params["layers"]["mlp"]["down_proj"]
    assert q["lora_a"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None)
    assert down["lora_b"].sharding.spec == jax.sharding.PartitionSpec(None, None, "fsdp")
    mu = state.opt_state[1][0].mu["layers"]["attn"]["q_proj"]["lora_a"]
    assert mu.sharding.spec == q["lora_a"].sharding.spec


def test_checkpoint_holds_adapters_only_and_resume_reloads_the_base(env, lora_run, tmp_path):
    import orbax.checkpoint as ocp
    cfg, workdir, result = lora_run
    state_dir = os.path.join(workdir, "checkpoints", str(STEPS), "state")
    with ocp.PyTreeCheckpointer() as c:
        stored = c.metadata(state_dir)
    stored = dict(getattr(getattr(stored, "item_metadata", stored), "tree", stored))
    assert sorted(stored) == ["opt_state", "params", "step"]
    stored_elements = sum(int(np.prod(m.shape)) for m in jax.tree.leaves(stored))
    adapter_elements = sum(x.size for x in jax.tree.leaves(result.state.params))
    assert stored_elements == 3 * adapter_elements + 3  # adapters, mu, nu; step + two counts
    # Resume from the step-6 checkpoint: the base comes back from init_from, the data iterator and the
    # dropout stream from the step, so the adapters end bit-identical to the uninterrupted run's.
    resumed = tmp_path / "resumed"
    shutil.copytree(os.path.join(workdir, "checkpoints", "6"), resumed / "checkpoints" / "6")
    again = train(cfg, str(resumed), engine=result.engine)
    assert again.step == STEPS
    for a, b in zip(jax.tree.leaves(jax.device_get(again.state.params)),
                    jax.tree.leaves(jax.device_get(result.state.params))):
        np.testing.assert_array_equal(a, b)


def test_exports_load_in_peft_and_transformers_with_our_logits(env, lora_run, tmp_path):
    import peft
    import torch
    import transformers

    from mellama_jax.commands import convert_jax_to_hf
    cfg, workdir, result = lora_run
    ours = _our_logits(cfg.model, cfg.train.lora, env["base"], result.state.params)
    assert np.abs(ours - _our_logits(cfg.model, cfg.train.lora, env["base"],
                                     jax.tree.map(jnp.zeros_like, result.state.params))).max() > 1e-3

    base_dir, peft_dir, merged_dir = (str(tmp_path / n) for n in ("hf_base", "peft", "hf_merged"))
    args = ["--ckpt_dir", workdir, "--no_progress"]
    assert convert_jax_to_hf.main(args + ["--out_dir", base_dir, "--peft_dir", peft_dir]) == 0
    assert convert_jax_to_hf.main(args + ["--out_dir", merged_dir, "--merge_lora"]) == 0
    with open(os.path.join(peft_dir, "adapter_config.json")) as f:
        assert json.load(f)["base_model_name_or_path"] == base_dir

    hf_base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with_adapter = peft.PeftModel.from_pretrained(hf_base, peft_dir).eval()
    np.testing.assert_allclose(hf_logits(with_adapter, TOKENS), ours, atol=1e-4)
    merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    np.testing.assert_allclose(hf_logits(merged, TOKENS), ours, atol=1e-4)
    assert transformers.AutoTokenizer.from_pretrained(merged_dir)("fever")["input_ids"]

    import mellama_jax
    model = mellama_jax.load(workdir)
    assert model.lora_config == cfg.train.lora and model.step == STEPS
    np.testing.assert_allclose(model.logits(TOKENS), ours, atol=1e-4)


def test_full_finetuning_runs_through_the_same_entry_point(env, tmp_path):
    cfg = _chat_config("tiny_chat_full", env["data"], env["tokenizer"], env["model_cfg"],
                       init_from=env["base_ckpt"], **{"train.steps": 2, "checkpoint.every_steps": 0})
    assert cfg.train.lora is None and cfg.data.kind == "sft"
    result = train(cfg, str(tmp_path / "full"))
    assert result.state.frozen is None
    trained = P.flatten_tree(jax.device_get(result.state.params))
    assert set(trained) == set(P.flatten_tree(env["base"]))
    assert all(np.abs(trained[p] - v).max() > 0 for p, v in P.flatten_tree(env["base"]).items()
               if p[-1] == "kernel")
    mu = jax.tree.leaves(result.state.opt_state[1][0].mu)
    assert sum(x.size for x in mu) == P.count_params(cfg.model)


@pytest.mark.parametrize("overrides, message", [
    ({"train.lora.targets": "q_proj,qkv_proj"}, r"config\.train\.lora\.targets='q_proj,qkv_proj': unknown module "
                                                 r"name\(s\) \['qkv_proj'\]"),
    ({"train.lora.rank": -4}, r"config\.train\.lora\.rank=-4: must be a positive integer"),
    ({"train.lora.base_dtype": "int8"}, r"config\.train\.lora\.base_dtype='int8': expected one of"),
])
def test_bad_lora_config_is_refused(env, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _chat_config("tiny_chat_lora", env["data"], env["tokenizer"], env["model_cfg"], **overrides)


def test_adapters_do_not_merge_into_a_base_of_other_shapes(env, tmp_path):
    cfg = env["model_cfg"]
    lora = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "down_proj"))
    zeros = lambda tree: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), tree)  # shapes are what is checked
    adapters = zeros(LoraTrainable(cfg, lora).abstract_trainable())
    wider = cfg.replace(intermediate_size=2 * cfg.intermediate_size)
    wider_base = zeros(P.abstract_params(wider))
    with pytest.raises(ValueError, match=r"merge_lora: adapters: LoRA adapters do not fit this model config: "
                                         r"layers/mlp/down_proj/lora_a has shape \(2, 96, 4\), expected \(2, 192, 4\)"):
        merge_lora(wider, lora, wider_base, adapters)
    with pytest.raises(ValueError, match=r"merge_lora: base parameters: .*layers/mlp/down_proj/kernel has shape "
                                         r"\(2, 192, 64\), expected \(2, 96, 64\)"):
        merge_lora(cfg, lora, wider_base, adapters)
    # A LoRA run pointed at a base of another architecture stops before training, naming the fields.
    trainable = LoraTrainable(wider, lora, init_from=env["hf_dir"])
    with pytest.raises(ConfigError, match=r"another architecture than the run's model config \(field: \(base, run\)\) "
                                          r"\{'intermediate_size': \(96, 192\)\}"):
        trainable.load_frozen(None)


def test_export_carries_model_card_chat_template_and_generates(env, lora_run, tmp_path):
    """An SFT workdir exported to HF: README.md with the run's own numbers (metrics.jsonl, evaluation
    summaries under both matching rules), the SFT template as chat_template giving our ids, and
    transformers' greedy generate = ours from the same ids."""
    import torch
    import transformers

    import mellama_jax
    from mellama_jax.convert.export import convert_checkpoint_to_hf
    from mellama_jax.data import templates as T
    from mellama_jax.data.instruct import render_chat
    from mellama_jax.eval.report import write_report
    from mellama_jax.eval.runner import EvalConfig, evaluate

    cfg, workdir, _ = lora_run
    model = mellama_jax.load(workdir)
    summaries = {}
    for matching in ("mibe", "strict"):  # what `mellama-evaluate --out_dir <workdir>/eval_<rule>` writes
        ecfg = EvalConfig(tasks=("pubmedqa", "mednli"), data_dir=os.path.join(env["data"], "eval"),
                          template="me_llama", matching=matching, limit=3, max_new_tokens=4, progress=False)
        summaries[matching] = write_report(os.path.join(workdir, f"eval_{matching}"), evaluate(model, ecfg), ecfg,
                                           model_name=workdir, overwrite=True)
    out = convert_checkpoint_to_hf(workdir, tmp_path / "hf", merge_lora=True, progress=False)

    with open(os.path.join(out, "README.md")) as f:
        card = f.read()
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert f"{train_rows[0]['loss']:.4f} (step {train_rows[0]['step']})" in card
    assert f"{train_rows[-1]['loss']:.4f} (step {STEPS})" in card
    assert f"{STEPS:,} of {STEPS:,} planned" in card and "LoRA rank 8" in card and "merged into these weights" in card
    data_rows = [r for r in rows if r["kind"] == "data"]
    tokens = sum(v for k, v in data_rows[-1].items() if k.startswith("tokens/"))
    assert tokens > 0 and f"{int(tokens):,} tokens seen" in card
    assert f"{cfg.train.global_batch_size * cfg.train.seq_len * STEPS:,}" in card
    assert "score (mibe) | score (strict)" in card
    for task, t in summaries["mibe"]["tasks"].items():
        metric, strict = t["primary_metric"], summaries["strict"]["tasks"][task]
        assert (f"| {task} | `{os.path.basename(t['data_file'])}` | {metric} | {t['metrics'][metric]:.4f} | "
                f"{strict['metrics'][metric]:.4f} | {t['num_examples']} |") in card
        assert t["metrics_by_matching"]["strict"] == strict["metrics"]  # one run holds both rules' scores
    assert f"Test data: `{os.path.join(env['data'], 'eval')}`" in card
    assert "Llama 2 is licensed under the LLAMA 2 Community License" in card and "medical device" in card

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok.chat_template == T.hf_chat_template("me_llama")
    messages = [{"role": "user", "content": "What is the first-line therapy for asthma?"}]
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt = render_chat(messages, "me_llama", model.tokenizer)
    assert ids["input_ids"][0].tolist() == prompt

    generation = transformers.GenerationConfig.from_pretrained(out)
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 2, None)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf_model.generate(**ids, max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    ours = model.generate([prompt], max_new_tokens=8)[0]
    assert theirs[:len(ours)] == ours and len(theirs) >= 1


def test_lora_run_with_everything_on_gcs_resumes_exactly_and_loads(env, lora_run, gcs):
    """Base checkpoint (init_from), tokenizer, instruction data and workdir on the GCS server: the run ends
    bit-identical to the local one, a rerun from its step-6 checkpoint too, and mellama_jax.load reads it."""
    _, local_workdir, local = lora_run
    remote = gcs.fresh_prefix("lora")
    paths.copy_tree(env["base_ckpt"], f"{remote}/base")
    paths.copy_tree(env["data"], f"{remote}/data")
    paths.copy_tree(os.path.dirname(env["tokenizer"]), f"{remote}/tok")
    cfg = _chat_config("tiny_chat_lora", f"{remote}/data", f"{remote}/tok/{os.path.basename(env['tokenizer'])}",
                       env["model_cfg"], init_from=f"{remote}/base")
    result = train(cfg, f"{remote}/run")
    paths.copy_tree(f"{remote}/run/checkpoints/6", f"{remote}/resumed/checkpoints/6")
    again = train(cfg, f"{remote}/resumed", engine=result.engine)
    for run in (result, again):
        assert run.step == STEPS
        for a, b in zip(jax.tree.leaves(jax.device_get(run.state.params)), jax.tree.leaves(jax.device_get(local.state.params))):
            np.testing.assert_array_equal(a, b)
    loaded, reference = mellama_jax.load(f"{remote}/run"), mellama_jax.load(local_workdir)
    assert loaded.lora_config == reference.lora_config and loaded.step == STEPS
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(reference.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
