"""Failures that used to be silent are loud: topology-aware mesh placement, the preemption watch, path schemes
we cannot handle."""
import logging
import os

import jax
import pytest

import mellama_jax
from mellama_jax import paths
from mellama_jax.checkpoints.manager import Checkpointer
from mellama_jax.config import ConfigError
from mellama_jax.parallel import MeshConfig, make_mesh
from mellama_jax.train.config import CheckpointConfig, TrainConfig, default_config
from mellama_jax.train.loop import train
from mellama_jax.train.preemption import PreemptionWatch, PreemptionWatchError


def test_mesh_placement_failure_is_an_error_unless_opted_in(caplog):
    # dcn_data > 1 asks mesh_utils for a multi-slice layout; CPU devices have no slice_index, so it fails.
    cfg = MeshConfig(data=2, fsdp=-1, tensor=1, dcn_data=2)
    with pytest.raises(ConfigError, match="allow_plain_device_order=True") as e:
        make_mesh(cfg)
    assert "dcn_data=2" in str(e.value) and "8 cpu devices" in str(e.value)
    with caplog.at_level(logging.WARNING):
        mesh = make_mesh(MeshConfig(data=2, fsdp=-1, tensor=1, dcn_data=2, allow_plain_device_order=True))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert list(mesh.devices.flat) == jax.devices()
    assert "plain device order" in caplog.text


def test_mesh_option_reaches_the_train_config():
    c = default_config()
    c.mesh.allow_plain_device_order = True
    c.train.seq_len = 64
    assert TrainConfig.from_config_dict(c).mesh.allow_plain_device_order is True


def test_preemption_service_failure_propagates(tmp_path, monkeypatch):
    ckpt = Checkpointer(str(tmp_path), CheckpointConfig(every_steps=1, keep=1, async_save=False))
    try:
        watch = PreemptionWatch(ckpt.manager)
        # Several processes without jax.distributed's preemption sync service: the real orbax call fails.
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        with pytest.raises(PreemptionWatchError, match="step 3: the preemption sync service failed"):
            watch.reached(3)
        watch.close()
    finally:
        ckpt.close()


def test_unknown_path_scheme_is_an_error_naming_it(tmp_path):
    with pytest.raises(paths.PathSchemeError, match=r"workdir 'hdfs://nn/run': the scheme 'hdfs://' is not supported"):
        c = default_config()
        c.train.seq_len = 64
        train(TrainConfig.from_config_dict(c), "hdfs://nn/run")
    with pytest.raises(ConfigError, match="'ftp://'"):
        mellama_jax.load("ftp://host/model")
    # Local paths are what they were: absolute, ~ expanded; file:// is a local path.
    assert paths.as_str("rel/x") == os.path.abspath("rel/x")
    assert paths.as_str("~/x") == os.path.join(os.path.expanduser("~"), "x")
    assert paths.as_str("file:///tmp/x") == "/tmp/x" and paths.as_str("gs://b/x") == "gs://b/x"
