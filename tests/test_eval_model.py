"""Evaluation on a real tiny model: the log-likelihood scorer against transformers, the lm-eval adapter
against lm-eval's own HF backend (HFLM) on the same weights and tokenizer, and the CLI end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hf_fixtures import hf_logits, make_hf_model

from mellama_jax.data.hf_tokenizer import save_hf_tokenizer
from mellama_jax.demo import mibe as synthetic
from mellama_jax.eval import scoring
from mellama_jax.eval.runner import fit_prompt

VOCAB = 400


def _corpus():
    texts = []
    for task in synthetic.GENERATORS:
        for rec in synthetic.make_records(task, 12, seed=7):
            texts.append(rec["query"] + " " + synthetic.ideal_output(task, rec))
    return texts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An HF LLaMA directory (random weights) with a sentencepiece tokenizer both sides can read."""
    from mellama_jax.api import load
    from mellama_jax.data.tokenizer import train_tokenizer
    d = str(tmp_path_factory.mktemp("tiny_hf"))
    hf = make_hf_model(d, vocab_size=VOCAB, max_position_embeddings=160)
    tok = train_tokenizer(_corpus(), d, vocab_size=VOCAB, character_coverage=1.0)
    save_hf_tokenizer(tok, d)
    return d, hf, load(d)


def _hf_continuation_logprob(hf, context, continuation):
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logp = torch.log_softmax(hf(ids).logits.float(), -1)[0]
    positions = range(len(context) - 1, len(context) + len(continuation) - 1)
    return float(sum(logp[p, t] for p, t in zip(positions, continuation)))


def _hf_is_greedy(hf, context, continuation):
    logits = hf_logits(hf, [context + continuation])[0, len(context) - 1:-1]
    return bool(np.all(np.argmax(logits, -1) == np.asarray(continuation)))


def test_loglik_scorer_matches_transformers(tiny):
    d, hf, model = tiny
    tok = model.tokenizer
    pairs = [("Question: Does aspirin reduce fever?\nAnswer:", " yes"),
             ("Premise: The patient presented with cough.", " Hypothesis: The patient has cough."),
             ("Example 1.", " no"), ("Summarize the findings.", " no acute abnormality on ECG")]
    requests = [scoring.encode_pair(lambda s: tok.encode(s, bos=True), c, k) for c, k in pairs]
    # Requests with the same model input share one row of the forward pass: one-token answers to the first
    # question (the last one is the greedy token, which is_greedy must accept), and the fourth request split
    # at another point (the same tokens, a shorter answer).
    context = requests[0][0]
    greedy_answer = int(np.argmax(hf_logits(hf, [context])[0, -1]))
    requests += [(context, [t]) for t in tok.encode(" no maybe", bos=False)[:2]]
    ctx, cont = requests[3]
    requests += [(ctx + cont[:-2], cont[-2:]), (context, [greedy_answer])]
    got = scoring.loglikelihoods(model.logits, requests, max_length=160, batch_size=2, progress=False)
    want = [_hf_continuation_logprob(hf, c, k) for c, k in requests]
    np.testing.assert_allclose([r.logprob for r in got], want, rtol=1e-4, atol=1e-4)
    assert [r.num_tokens for r in got] == [len(k) for _, k in requests]
    want_greedy = [_hf_is_greedy(hf, c, k) for c, k in requests]
    assert [r.is_greedy for r in got] == want_greedy and want_greedy[-1]

    # The choice scorer picks the argmax of the same numbers (with and without length normalisation).
    choices = ["yes", "no", "maybe"]
    prompts = [c for c, _ in pairs]
    for normalize in (False, True):
        picks = scoring.score_choices(model.logits, lambda s: tok.encode(s, bos=True), prompts, [choices] * 4,
                                      max_length=160, batch_size=4, length_normalize=normalize, progress=False)
        for prompt, pick in zip(prompts, picks):
            scores = []
            for c in choices:
                ctx, cont = scoring.encode_pair(lambda s: tok.encode(s, bos=True), prompt, " " + c)
                scores.append(_hf_continuation_logprob(hf, ctx, cont) / (len(cont) if normalize else 1))
            assert pick == int(np.argmax(scores))


def test_lm_eval_adapter_matches_hflm(tiny):
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model
    from lm_eval.models.huggingface import HFLM

    from mellama_jax.eval.lm_eval_adapter import MellamaJaxLM

    class HFLMSentencepieceDecode(HFLM):
        """HFLM decoding generated ids with sentencepiece, as LLaMA does. transformers' ByteFallback decoder
        turns a whole run of byte pieces into U+FFFD when the run is not valid UTF-8, where sentencepiece
        keeps the valid bytes; a random model emits such runs, so decoding is the one thing not compared."""

        def tok_decode(self, tokens, skip_special_tokens=True):
            if skip_special_tokens:
                return model.tokenizer.decode(tokens)
            return super().tok_decode(tokens, skip_special_tokens=False)

    d, _, model = tiny
    # Built the way lm-eval builds backends (registry name + argument string); a 48-token window so that
    # rolling log-likelihoods need several windows.
    ours = get_model("mellama_jax").create_from_arg_string(
        f"pretrained={d},batch_size=4,max_length=48,max_gen_toks=6", {"device": "cpu", "max_batch_size": None})
    assert isinstance(ours, MellamaJaxLM) and ours.model.config == model.config
    ref = HFLMSentencepieceDecode(pretrained=d, device="cpu", dtype="float32", batch_size=4, max_length=48)

    def inst(kind, args, i):
        return Instance(request_type=kind, doc={}, arguments=args, idx=i)

    ll = [inst("loglikelihood", a, i) for i, a in enumerate([
        ("Question: Does metoprolol reduce anemia?\nAnswer:", " maybe"),
        ("Premise: The patient presented with fever. ", "Hypothesis: none"),  # trailing space moves
        ("", "Patient with chest pain was given aspirin ."),  # empty context -> BOS
        ("Which drug is first line", " for a patient with cough?")])]
    got, want = ours.loglikelihood(ll, disable_tqdm=True), ref.loglikelihood(ll, disable_tqdm=True)
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], rtol=1e-4, atol=1e-4)
    assert [g[1] for g in got] == [w[1] for w in want]

    text = " ".join(r["query"] for r in synthetic.make_records("emrqa", 3, seed=3))
    assert len(model.tokenizer.encode(text)) > 2 * 48
    rolling = [inst("loglikelihood_rolling", (t,), i) for i, t in enumerate([text, "short text"])]
    np.testing.assert_allclose(ours.loglikelihood_rolling(rolling, disable_tqdm=True),
                               ref.loglikelihood_rolling(rolling, disable_tqdm=True), rtol=1e-4, atol=1e-3)

    gen = [inst("generate_until", (c, {"until": ["\n"], "max_gen_toks": 6, "do_sample": False}), i)
           for i, c in enumerate(["Question: What dose of aspirin", "Example 2.\nPremise: The patient"])]
    assert ours.generate_until(gen, disable_tqdm=True) == ref.generate_until(gen, disable_tqdm=True)


def test_loglik_mode_picks_most_likely_choice(tiny, tmp_path):
    from mellama_jax.eval.runner import EvalConfig, evaluate
    d, hf, model = tiny
    data = str(tmp_path / "data")
    synthetic.write_synthetic_benchmark(data, per_task=3, tasks=("pubmedqa",))
    cfg = EvalConfig(tasks=("pubmedqa",), data_dir=data, mode="loglik", batch_size=4, progress=False)
    (result,) = evaluate(model, cfg)
    assert result.mode == "loglik"
    encode = lambda s: model.tokenizer.encode(s, bos=True)
    for e in result.examples:
        scores = [_hf_continuation_logprob(hf, *scoring.encode_pair(encode, e.prompt, " " + c))
                  for c in ("yes", "no", "maybe")]
        assert e.prediction == ("yes", "no", "maybe")[int(np.argmax(scores))]
        assert e.correct == (e.prediction == e.gold)


def test_cli_runs_every_task_end_to_end(tiny, tmp_path):
    d, hf, model = tiny
    data, out = str(tmp_path / "data"), str(tmp_path / "report")
    synthetic.write_synthetic_benchmark(data, per_task=2)
    cmd = [sys.executable, "-m", "mellama_jax.evaluate", "--model", d, "--tasks", "all", "--data_dir", data,
           "--out_dir", out, "--max_new_tokens", "8", "--max_length", "72", "--matching", "strict",
           "--batch_size", "2", "--no_progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["settings"]["matching"] == "strict" and summary["settings"]["decoding"] == "greedy"
    assert list(summary["tasks"]) == list(synthetic.GENERATORS)
    for name, t in summary["tasks"].items():
        assert t["num_examples"] == 2 and t["primary_metric"] in t["metrics"], name
    assert "| diagnosis | diagnosis | 2 | zero-shot, greedy | top1_accuracy |" in proc.stdout
    with open(os.path.join(out, "examples", "pubmedqa.jsonl")) as f:
        examples = [json.loads(line) for line in f]
    # The outputs are transformers' greedy continuations of the same prompts, cut to 72 - 8 tokens (BOS +
    # the end of the prompt), 8 new tokens, stop at EOS.
    tok = model.tokenizer
    for e in examples:
        ids, truncated = fit_prompt(tok.encode(e["prompt"], bos=True), 72 - 8)
        assert truncated == e["truncated"]
        with torch.no_grad():
            seq = hf.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=tok.eos_id,
                              pad_token_id=0)[0, len(ids):].tolist()
        if tok.eos_id in seq:
            seq = seq[:seq.index(tok.eos_id)]
        assert e["output"] == tok.decode(seq).strip()


def test_fewshot_and_self_consistency_are_deterministic_under_a_seed(tiny, tmp_path):
    from mellama_jax.eval.runner import EvalConfig, evaluate
    _, _, model = tiny
    data, train = str(tmp_path / "data"), str(tmp_path / "train")
    synthetic.write_synthetic_benchmark(data, per_task=3, tasks=("pubmedqa",))
    synthetic.write_synthetic_benchmark(train, per_task=4, seed=8, tasks=("pubmedqa",))

    def run(**kw):
        cfg = EvalConfig(tasks=("pubmedqa",), data_dir=data, fewshot_dir=train, max_new_tokens=4, max_length=160,
                         batch_size=2, progress=False, **kw)
        (result,) = evaluate(model, cfg)
        return [e.output for e in result.examples], result

    sc = dict(self_consistency=3, temperature=1.0)
    first, result = run(seed=0, **sc)
    assert result.protocol == "zero-shot, self-consistency (3 samples at T=1, majority vote)"
    assert run(seed=0, **sc)[0] == first
    assert run(seed=1, **sc)[0] != first  # sampled: another seed, other outputs
    shots = dict(num_fewshot=1, fewshot_seeds=2)
    outputs, result = run(**shots)
    assert result.protocol == "1-shot (mean ± std over 2 seeds), greedy" and len(result.per_seed) == 2
    again = run(**shots)[1]
    assert again.metrics_by_matching == result.metrics_by_matching and again.per_seed == result.per_seed
