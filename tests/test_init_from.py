"""`init_from` decides the model: architecture and tokenizer come from the checkpoint unless the user set
them on the command line, and a mismatch the user asked for is a one-line error before anything compiles."""
import os
import subprocess
import sys

import pytest
from hf_fixtures import make_hf_model, train_small_sentencepiece

from mellama_jax.config import ConfigError
from mellama_jax.train.config import TrainConfig, default_config
from mellama_jax.train.init_from import adopt_init_from, check_init_from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("hf_init"))
    make_hf_model(d, hidden_size=48, intermediate_size=80, num_hidden_layers=3, vocab_size=120)
    train_small_sentencepiece(d)
    return d


def test_checkpoint_architecture_and_tokenizer_are_adopted(hf_dir):
    cd = default_config()
    cd.init_from = hf_dir
    cd.train.seq_len = 128
    cd.model.dtype = "bfloat16"  # execution choices stay the config's
    out = adopt_init_from(cd)
    m = out.model
    assert (m.hidden_size, m.intermediate_size, m.num_layers, m.vocab_size, m.num_kv_heads) == (48, 80, 3, 120, 2)
    assert m.dtype == "bfloat16" and out.data.tokenizer == os.path.join(hf_dir, "tokenizer.model")
    check_init_from(hf_dir, TrainConfig.from_config_dict(out).model)  # consistent now
    assert cd.model.hidden_size != 48  # the input config is not modified


def test_explicit_overrides_stay_and_a_mismatch_is_an_error(hf_dir):
    cd = default_config()
    cd.init_from = hf_dir
    cd.train.seq_len = 128
    cd.model.hidden_size = 32
    cd.data.tokenizer = "/my/tokenizer.model"
    out = adopt_init_from(cd, explicit={"model.hidden_size", "data.tokenizer"})
    assert out.model.hidden_size == 32 and out.model.num_layers == 3 and out.data.tokenizer == "/my/tokenizer.model"
    with pytest.raises(ConfigError, match=r"hidden_size.*\(48, 32\)"):
        check_init_from(hf_dir, TrainConfig.from_config_dict(out).model)


def test_train_cli_reports_the_mismatch_in_one_line(hf_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-m", "mellama_jax.train", "--config", "configs/tiny_pretrain.py",
                        "--workdir", str(tmp_path / "w"), f"--config.init_from={hf_dir}",
                        "--config.model.hidden_size=32"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "checkpoint architecture differs" in r.stderr and "hidden_size" in r.stderr
