"""A damaged newest checkpoint: the rerun names it, sets it aside and resumes from the previous complete step,
ending bitwise-equal to an uninterrupted run; a workdir whose every step is damaged stops with one message.

The damage is what a lost host or a storage hiccup leaves: one array file of the OCDBT store cut in half.
"""
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from mellama_jax.checkpoints.errors import CheckpointError
from mellama_jax.config import config_module
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**overrides):
    c = config_module(os.path.join(ROOT, "configs", "tiny_pretrain.py")).get_config()
    c.train.steps = 12
    c.checkpoint.every_steps, c.checkpoint.keep = 4, 3
    c.eval.every_steps = 0
    c.log.update(every_steps=1, progress_bar=False, tensorboard=False, peak_flops_per_device=1e11)
    c.update_from_flattened_dict(overrides)
    return TrainConfig.from_config_dict(c)


def losses(workdir):
    """Per-step train loss (the last record of a step wins: a rerun re-logs the steps it redoes)."""
    out = {}
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        r = json.loads(line)
        if r["kind"] == "train":
            out[r["step"]] = r["loss"]
    return out


def truncate_largest_array_file(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs
             if os.sep + "d" + os.sep in os.path.join(r, f)]
    target = max(files, key=os.path.getsize)
    with open(target, "r+b") as fh:
        fh.truncate(os.path.getsize(target) // 2)
    return target


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    return workdir, train(small_config(), workdir)


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(jax.device_get(a.state.params)), jax.tree.leaves(jax.device_get(b.state.params))):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(np.asarray(jax.device_get(a.state.step)), np.asarray(jax.device_get(b.state.step)))


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(uninterrupted, tmp_path, caplog):
    ref_dir, ref = uninterrupted
    workdir = str(tmp_path / "run")
    shutil.copytree(ref_dir, workdir)  # the same run, now with its newest checkpoint damaged
    os.remove(os.path.join(workdir, "metrics.jsonl"))
    truncate_largest_array_file(os.path.join(workdir, "checkpoints", "12"))
    with caplog.at_level(logging.ERROR):
        again = train(small_config(), workdir, engine=ref.engine)
    assert "CHECKPOINT DAMAGED" in caplog.text and "step 12" in caplog.text
    assert "OUT_OF_RANGE" in caplog.text and "checkpoints/12/state" in caplog.text  # the file and the error
    assert "RESUMING FROM AN OLDER CHECKPOINT: step 8" in caplog.text
    redone = losses(workdir)
    assert sorted(redone) == [9, 10, 11, 12]  # resumed from step 8, not from scratch
    reference = losses(ref_dir)
    assert {s: reference[s] for s in redone} == redone  # bitwise: the floats as logged
    assert_same_params(again, ref)
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    aside = [n for n in names if n.startswith("12.damaged-")]
    assert len(aside) == 1 and sorted(set(names) - set(aside)) == ["12", "4", "8"]
    kept = os.path.join(workdir, "checkpoints", aside[0])
    assert os.path.exists(os.path.join(kept, "state", "_METADATA"))  # set aside, not deleted


def test_every_checkpoint_damaged_stops_naming_them(uninterrupted, tmp_path):
    ref_dir, ref = uninterrupted
    workdir = str(tmp_path / "run")
    shutil.copytree(ref_dir, workdir)
    for step in ("4", "8", "12"):
        truncate_largest_array_file(os.path.join(workdir, "checkpoints", step))
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    with pytest.raises(CheckpointError) as e:
        train(small_config(), workdir, engine=ref.engine)
    message = str(e.value)
    assert "every checkpoint is damaged" in message and "not starting from scratch" in message
    for step in ("4", "8", "12"):
        assert f"step {step}: array file" in message and f"checkpoints/{step}/state" in message
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before  # nothing moved or deleted
    assert len(message.splitlines()) == 4


def test_damaged_json_names_the_file(uninterrupted, tmp_path):
    ref_dir, ref = uninterrupted
    workdir = str(tmp_path / "run")
    shutil.copytree(ref_dir, workdir)
    target = os.path.join(workdir, "checkpoints", "12", "data_iter", "metadata")
    with open(target, "r+b") as fh:
        fh.truncate(os.path.getsize(target) // 2)
    again = train(small_config(), workdir, engine=ref.engine)
    assert_same_params(again, ref)
    assert any(n.startswith("12.damaged-") for n in os.listdir(os.path.join(workdir, "checkpoints")))


def test_a_changed_model_is_not_mistaken_for_damage(uninterrupted, tmp_path):
    ref_dir, _ = uninterrupted
    workdir = str(tmp_path / "run")
    shutil.copytree(ref_dir, workdir)
    with pytest.raises(CheckpointError, match="model or optimizer changed"):
        train(small_config(**{"model.intermediate_size": 96}), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "4", "8"]


def test_a_per_process_data_state_of_an_earlier_version_is_refused_not_set_aside(uninterrupted, tmp_path):
    ref_dir, ref = uninterrupted
    workdir = str(tmp_path / "run")
    shutil.copytree(ref_dir, workdir)
    for step in ("4", "8", "12"):  # what grain's own handler wrote, one file per process
        data_iter = os.path.join(workdir, "checkpoints", step, "data_iter")
        os.remove(os.path.join(data_iter, "metadata"))
        for p in range(2):
            with open(os.path.join(data_iter, f"process_{p}-of-2.json"), "w") as f:
                f.write("{}")
    with pytest.raises(CheckpointError, match=r"per-process grain states \(process_0-of-2.json, process_1-of-2.json\)"):
        train(small_config(), workdir, engine=ref.engine)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "4", "8"]
