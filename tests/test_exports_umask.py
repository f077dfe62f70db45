"""Exports and model checkpoints get the permissions of files the user creates (0666/0777 less the umask), not
the 0600 safetensors and 0700 temporary directories are created with: colleagues on a shared cluster read them."""
import os
import stat

import jax
import pytest

from mellama_jax.checkpoints.model_dir import save_model_checkpoint
from mellama_jax.config import preset
from mellama_jax.convert.hf import save_hf_checkpoint
from mellama_jax.convert.peft import export_peft
from mellama_jax.model import params as P
from mellama_jax.model.lora import LoraConfig, init_lora


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(root):
    out = {}
    for d, _, files in os.walk(root):
        out[d] = stat.S_IMODE(os.stat(d).st_mode)
        for f in files:
            out[os.path.join(d, f)] = stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode)
    return out


def test_exports_are_readable_by_group_and_others(tmp_path, umask_022):
    cfg = preset("tiny")
    params = P.init_params(cfg, jax.random.key(0))
    lora = LoraConfig(rank=2, alpha=4.0, dropout=0.0, targets=("q_proj",))
    adapters = init_lora(cfg, lora, jax.random.key(1))
    outs = [save_hf_checkpoint(tmp_path / "hf", cfg, params),
            save_model_checkpoint(tmp_path / "ckpt", cfg, params),
            export_peft(str(tmp_path / "peft"), cfg, lora, adapters)]
    for out in outs:
        modes = _modes(out)
        assert any(p.endswith(".safetensors") for p in modes) or "ckpt" in out
        for path, mode in modes.items():
            want = 0o755 if os.path.isdir(path) else 0o644
            assert mode == want, (path, oct(mode))
