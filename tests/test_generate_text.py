"""Text in, text out: `Model.generate` with texts, chat messages and streaming, checked against transformers'
greedy decoding and sentencepiece; token ids outside the vocabulary are errors; `generate --chat`."""
import os
import shutil
import subprocess
import sys
import types

import jinja2
import numpy as np
import pytest
from hf_fixtures import make_hf_model, train_small_sentencepiece

import mellama_jax
from mellama_jax.data.templates import TEMPLATE_NAMES, hf_chat_template, strip_response
from mellama_jax.generate import __main__ as generate_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    hf_dir = str(tmp_path_factory.mktemp("hf_text"))
    torch_model = make_hf_model(hf_dir, seed=5)
    sp = train_small_sentencepiece(hf_dir)
    return hf_dir, torch_model, sp, mellama_jax.load(hf_dir, scan_layers=False)


def _transformers_text(torch_model, sp, ids, max_new_tokens):
    import torch
    with torch.no_grad():
        # An explicit attention mask: without one transformers masks every id equal to pad_token_id (0, which
        # is also this tokenizer's <unk>, e.g. for "\n") as padding.
        out = torch_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0,
                                   eos_token_id=2)[0, len(ids):].tolist()
    if 2 in out:
        out = out[:out.index(2)]
    return sp.decode([t for t in out if t < sp.get_piece_size()])


def test_text_prompts_give_text_as_transformers_decodes(tiny):
    _, torch_model, sp, model = tiny
    texts = ["the patient was given", "metformin 500 mg"]
    want = [_transformers_text(torch_model, sp, [1] + sp.encode(t), 12) for t in texts]
    assert model.generate(texts[0], max_new_tokens=12) == want[0]
    assert model.generate(texts, max_new_tokens=12) == want
    # token ids in, token ids out, as before
    ids = model.generate([[1] + sp.encode(texts[0])], max_new_tokens=12)
    assert isinstance(ids, list) and isinstance(ids[0], list) and all(isinstance(t, int) for t in ids[0])


def test_chat_messages_render_like_the_jinja_chat_template(tiny):
    _, torch_model, sp, model = tiny
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "chest pain"},
                    {"role": "assistant", "content": "aspirin"}, {"role": "user", "content": "follow up"}]
    for template in TEMPLATE_NAMES:
        # The exported Jinja template, rendered by jinja2 with BOS/EOS markers, tokenized turn by turn.
        rendered = jinja2.Environment().from_string(hf_chat_template(template)).render(
            messages=conversation, bos_token="\x01", eos_token="\x02")
        ids = []
        for part in rendered.split("\x01")[1:]:
            text, eos, _ = part.partition("\x02")
            ids += [1] + sp.encode(text) + ([2] if eos else [])
        want = _transformers_text(torch_model, sp, ids, 10)
        assert model.generate(conversation, template=template, max_new_tokens=10) == strip_response(want, template)
    with pytest.raises(ValueError, match="prompt template"):
        model.generate(conversation[1:2], max_new_tokens=2)  # an HF directory records no template
    with pytest.raises(ValueError, match="ending with a user turn"):
        model.generate(conversation[:3], template="me_llama", max_new_tokens=2)


def test_stream_yields_the_same_text_in_pieces(tiny):
    _, _, _, model = tiny
    full = model.generate("the patient was given", max_new_tokens=40, eos_id=-1)
    pieces = list(model.generate("the patient was given", max_new_tokens=40, eos_id=-1, stream=True))
    assert len(pieces) > 1 and "".join(pieces) == full
    with pytest.raises(ValueError, match="one prompt"):
        model.generate(["a", "b"], stream=True)


def test_token_ids_outside_the_vocabulary_are_errors(tiny):
    _, _, _, model = tiny
    vocab = model.config.vocab_size
    with pytest.raises(ValueError, match=rf"outside the vocabulary \[0, {vocab}\)"):
        model.logits(np.array([[1, vocab]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits(np.array([[1, -1]]))
    with pytest.raises(ValueError, match=str(vocab)):
        model.generate([[1, vocab + 5]], max_new_tokens=2)


def test_chat_loop_streams_answers_with_the_history(tiny):
    hf_dir, _, _, model = tiny
    lines = iter(["chest pain", "follow up", ""])
    written = []
    args = types.SimpleNamespace(template="llama2_chat", model=hf_dir, system=None, max_new_tokens=6,
                                 temperature=0.0, top_k=0, top_p=1.0, seed=0, eos_id=None)
    assert generate_cli.chat(model, args, read=lambda _: next(lines), write=written.append) == 0
    answers = "".join(written).split("model> ")[1:]
    first = model.generate([{"role": "user", "content": "chest pain"}], template="llama2_chat", max_new_tokens=6)
    second = model.generate([{"role": "user", "content": "chest pain"}, {"role": "assistant", "content": first},
                             {"role": "user", "content": "follow up"}], template="llama2_chat", max_new_tokens=6)
    assert [a.rstrip("\n") for a in answers] == [first, second]


def test_chat_command_line(tiny, tmp_path):
    hf_dir = tiny[0]
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-m", "mellama_jax.generate", "--model", hf_dir, "--chat", "--template",
                        "me_llama", "--max_new_tokens", "4"], input="chest pain\n\n", cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "model> " in r.stdout and "template me_llama" in r.stderr
    no_template = shutil.copytree(hf_dir, tmp_path / "m")
    r = subprocess.run([sys.executable, "-m", "mellama_jax.generate", "--model", str(no_template), "--chat"],
                       input="", cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--template" in r.stderr
