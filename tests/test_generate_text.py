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
from mellama_jax.commands import generate as generate_cli
from mellama_jax.data.templates import TEMPLATE_NAMES, hf_chat_template, strip_response

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
    with pytest.raises(ValueError, match="has none .no chat_template"):
        model.generate(conversation[1:2], max_new_tokens=2)  # this HF directory has no template at all
    with pytest.raises(ValueError, match="must end with a user message"):
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
                                 temperature=0.0, top_k=0, top_p=1.0, seed=0, eos_id=None, stream=True)
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


# A template of another style than ours (role tags as text, system line first, generation prompt), as a
# model from elsewhere might carry it in tokenizer_config.json.
FOREIGN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + ' ' }}"
    "{% elif m['role'] == 'user' %}{{ bos_token + 'user ' + m['content'] + ' ' }}"
    "{% else %}{{ 'bot ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ bos_token + 'bot' }}{% endif %}")


@pytest.fixture(scope="module")
def chat_dirs(tmp_path_factory):
    """A tiny random LLaMA with Meta's real LLaMA-2 tokenizer in two HF directories with a chat_template:
    our export's tokenizer files (llama2_chat), and a plain Llama-2-style directory (tokenizer.model + a
    tokenizer_config.json naming LlamaTokenizer, legacy false, with FOREIGN_TEMPLATE), laid out as Meta's
    HF directories are."""
    import json

    from mellama_jax.data.hf_tokenizer import save_hf_tokenizer
    from mellama_jax.data.tokenizer import Tokenizer
    hf_dir = str(tmp_path_factory.mktemp("chat_model"))
    torch_model = make_hf_model(hf_dir, seed=7, vocab_size=32000)
    shutil.copy(os.path.join(ROOT, "tests", "assets", "llama2-tokenizer", "tokenizer.model"), hf_dir)
    ours = str(tmp_path_factory.mktemp("chat_ours"))
    shutil.copytree(hf_dir, ours, dirs_exist_ok=True)
    save_hf_tokenizer(Tokenizer.load(ours), ours, chat_template=hf_chat_template("llama2_chat"))
    plain = str(tmp_path_factory.mktemp("chat_plain"))
    shutil.copytree(hf_dir, plain, dirs_exist_ok=True)
    with open(os.path.join(plain, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "legacy": False, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": True, "chat_template": FOREIGN_TEMPLATE}, f)
    return {"ours": ours, "plain": plain, "torch": torch_model, "tok": Tokenizer.load(hf_dir)}


CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Chest pain, T 38.4 °C?"},
        {"role": "assistant", "content": "Aspirin; ECG."}, {"role": "user", "content": "Follow-up in 2 weeks?"}]


def _reference_answer(torch_model, directory, messages, max_new_tokens):
    """transformers end to end: apply_chat_template on the directory's own tokenizer files, greedy generate,
    decode of the new tokens."""
    import torch
    import transformers
    hf_tok = transformers.AutoTokenizer.from_pretrained(directory)
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    with torch.no_grad():
        out = torch_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0,
                                   eos_token_id=2)[0, len(ids):].tolist()
    return ids, out[:out.index(2)] if 2 in out else out


@pytest.mark.parametrize("kind", ["ours", "plain"])
def test_chat_with_the_directory_template_matches_transformers(chat_dirs, kind):
    """The API renders chat messages with the directory's chat_template (no template= given), token for token
    as apply_chat_template, and answers as transformers' greedy generate does; streaming gives the same."""
    from mellama_jax.data.chat import rendered_for_generation
    torch_model, sp = chat_dirs["torch"], chat_dirs["tok"]
    model = mellama_jax.load(chat_dirs[kind], scan_layers=False)
    assert model.template is None and model.chat_template is not None  # no training record: the stored one
    ids, new = _reference_answer(torch_model, chat_dirs[kind], CHAT, 12)
    assert rendered_for_generation(CHAT, model.chat_template, model.tokenizer) == ids
    assert model.generate([ids], max_new_tokens=12)[0][:len(new)] == new
    answer = model.generate(CHAT, max_new_tokens=12)
    expected = sp.decode(new).strip()
    assert answer == (strip_response(expected, "llama2_chat") if kind == "ours" else expected)
    assert "".join(model.generate(CHAT, max_new_tokens=12, stream=True)) == answer


def test_chat_stream_command_line_uses_the_directory_template(chat_dirs):
    """`--chat --stream` on a plain directory: its chat_template, answers as transformers' (the unstreamed
    chat loop is test_chat_command_line)."""
    stream = True
    torch_model, sp = chat_dirs["torch"], chat_dirs["tok"]
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    d = chat_dirs["plain"]
    r = subprocess.run([sys.executable, "-m", "mellama_jax.generate", "--model", d, "--chat", "--max_new_tokens", "8",
                        "--system", "Be brief.", *(["--stream"] if stream else [])],
                       input="Chest pain?\nFollow-up?\n\n", cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    answers = [a.split("\n")[0] for a in r.stdout.split("model> ")[1:]]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Chest pain?"}]
    first = sp.decode(_reference_answer(torch_model, d, messages, 8)[1]).strip()
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "Follow-up?"}]
    second = sp.decode(_reference_answer(torch_model, d, messages, 8)[1]).strip()
    assert answers == [first, second]
    assert "tokenizer_config.json" in r.stderr  # names the template it uses
