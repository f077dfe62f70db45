"""A damaged newest checkpoint: the rerun names it, sets it aside and resumes from the previous complete step,
ending bitwise-equal to an uninterrupted run; a workdir whose every step is damaged stops with one message.

The damage is what a lost host, a full disk or an interrupted copy leaves: each file kind a step holds
(checkpoints/integrity.py) missing, empty, cut or garbled; training and `load()`, on local disk and gs://.
"""
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest
from etils import epath

from mellama_jax import paths
from mellama_jax.checkpoints import manager, rundir
from mellama_jax.checkpoints.errors import CheckpointError
from mellama_jax.config import config_module
from mellama_jax.train.config import TrainConfig
from mellama_jax.train.loop import TrainingError, train

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


# ---------------------------------------------------------------- saves that fail (storage down past its retries)
def failing_saves(monkeypatch, steps):
    """Saves of these steps raise what a storage client raises once its own retries are spent."""
    real = manager.Checkpointer.save

    def save(self, step, *args):
        if step in steps:
            raise OSError(f"503 Service Unavailable (fault injected for step {step})")
        return real(self, step, *args)
    monkeypatch.setattr(manager.Checkpointer, "save", save)


def test_a_failed_save_is_reported_and_training_goes_on(uninterrupted, tmp_path, monkeypatch, caplog):
    ref_dir, ref = uninterrupted
    failing_saves(monkeypatch, {4, 8})  # two in a row: below the default limit of 3
    workdir = str(tmp_path / "run")
    with caplog.at_level(logging.ERROR):
        result = train(small_config(), workdir, engine=ref.engine)
    assert_same_params(result, ref)
    assert losses(workdir) == losses(ref_dir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12"]
    failed = [r.getMessage() for r in caplog.records if "CHECKPOINT SAVE FAILED" in r.getMessage()]
    assert [m.split(" (")[0] for m in failed] == ["CHECKPOINT SAVE FAILED: step 4", "CHECKPOINT SAVE FAILED: step 8"]
    assert "503 Service Unavailable" in failed[0] and "\n" not in failed[0]


def test_failed_saves_in_a_row_stop_the_run_with_one_error(uninterrupted, tmp_path, monkeypatch):
    failing_saves(monkeypatch, {4, 8, 12})
    with pytest.raises(TrainingError) as e:
        train(small_config(**{"checkpoint.max_failed_saves": 2}), str(tmp_path / "run"),
              engine=uninterrupted[1].engine)
    assert str(e.value).startswith("checkpoint save of step 8 failed, 2 saves in a row "
                                   "(checkpoint.max_failed_saves=2); stopping. No checkpoint was saved. "
                                   "Last error: OSError: 503 Service Unavailable"), str(e.value)


# ---------------------------------------------------------------- every file kind a step holds
# (checkpoints/integrity.py), each missing, empty, cut and garbled: the rerun and load() fall back to step 8.
STEP_FILES = {
    "step metadata": "_CHECKPOINT_METADATA",
    "state metadata": "state/_METADATA",
    "shardings": "state/_sharding",
    "array metadata": "state/array_metadatas/process_0",
    "array manifest": "state/manifest.ocdbt",
    "array data": None,  # the data files of the OCDBT store
    "data position": "data_iter/metadata",
    "config record": "config/metadata",
}
KINDS = ("missing", "empty", "cut", "garbled")
# A restore never reads these when they are absent (it is given the shardings; the per-array metadata is
# optional), so the step is intact and stays the one resumed from.
NOT_NEEDED = {("shardings", "missing"), ("array metadata", "missing")}


def damage(step_dir, name, kind):
    """Damage one file kind of a step (local or gs://) as a disk or an interrupted copy does. "array data": every
    data file of the OCDBT store (so whatever a reader asks for is hit: load() reads the parameters only)."""
    root = epath.Path(step_dir)
    if STEP_FILES[name] is None:
        targets = [f for f in paths.files_under(root / "state") if "/d/" in os.fspath(f)]
    else:
        targets = [root / STEP_FILES[name]]
    for target in targets:
        data = target.read_bytes()
        if kind == "missing":
            target.unlink()
        elif kind == "empty":
            target.write_bytes(b"")
        elif kind == "cut":
            target.write_bytes(data[: len(data) // 2])
        else:  # garbled: the middle half overwritten, the size kept
            noise = np.random.default_rng(0).integers(0, 256, len(data) // 2, dtype=np.uint8).tobytes()
            target.write_bytes(data[: len(data) // 4] + noise + data[len(data) // 4 + len(noise):])
    return os.fspath(targets[0])


def names_the_file(text, name, target):
    if name == "array data":  # TensorStore names the array read from the damaged data file, and the store
        return "array file 'params." in text or "array file 'opt_state." in text or "checkpoints/12/state" in text
    return STEP_FILES[name] in text and "checkpoints/12" in text


@pytest.fixture(scope="module")
def step8_params(uninterrupted):
    return rundir.load_training_params(uninterrupted[0], step=8)[1]


def copy_run(ref_dir, dest):
    if dest.startswith("gs://"):
        paths.copy_tree(ref_dir, dest)
        epath.Path(dest, "metrics.jsonl").unlink()
    else:
        shutil.copytree(ref_dir, dest)
        os.remove(os.path.join(dest, "metrics.jsonl"))
    return dest


def assert_tree_equal(a, b):
    for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b)), strict=True):
        np.testing.assert_array_equal(x, y)


def check_load(workdir, name, kind, step8_params, ref, caplog, capfd):
    target = damage(f"{workdir}/checkpoints/12", name, kind)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        _, params, extras = rundir.load_training_params(workdir)
    if (name, kind) in NOT_NEEDED:
        assert extras["step"] == 12
        assert_tree_equal(params, ref.state.params)
    else:
        assert extras["step"] == 8, (name, kind)
        assert_tree_equal(params, step8_params)
        assert "CHECKPOINT DAMAGED: step 12" in caplog.text and names_the_file(caplog.text, name, target), caplog.text
        with pytest.raises(CheckpointError) as e:  # asked for that step: one error naming step and file
            rundir.load_training_params(workdir, step=12)
        assert str(e.value).startswith("step 12: ") and names_the_file(str(e.value), name, target), str(e.value)
        assert "model config" not in str(e.value)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(STEP_FILES))
def test_load_falls_back_from_every_damaged_file(uninterrupted, step8_params, tmp_path, caplog, capfd, name, kind):
    ref_dir, ref = uninterrupted
    workdir = str(tmp_path / "run")
    shutil.copytree(os.path.join(ref_dir, "checkpoints"), os.path.join(workdir, "checkpoints"))
    check_load(workdir, name, kind, step8_params, ref, caplog, capfd)


def check_rerun(workdir, name, kind, ref_dir, ref, caplog, capfd, read_text):
    target = damage(f"{workdir}/checkpoints/12", name, kind)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        again = train(small_config(), workdir, engine=ref.engine)
    assert_same_params(again, ref)
    redone = {}
    for line in read_text(f"{workdir}/metrics.jsonl").splitlines():
        r = json.loads(line)
        if r["kind"] == "train":
            redone[r["step"]] = r["loss"]
    assert sorted(redone) == [9, 10, 11, 12], (name, kind)  # resumed from step 8
    reference = losses(ref_dir)
    assert {s: reference[s] for s in redone} == redone  # bitwise: the floats as logged
    assert "CHECKPOINT DAMAGED" in caplog.text and names_the_file(caplog.text, name, target), caplog.text
    assert "model or optimizer changed" not in caplog.text
    assert any(p.name.startswith("12.damaged-") for p in epath.Path(workdir, "checkpoints").iterdir())
    assert "Traceback" not in capfd.readouterr().err


# Each file once, the damage kind rotating, so every file and every kind is a rerun once or more.
RERUN_CASES = [(name, KINDS[i % len(KINDS)]) for i, name in enumerate(STEP_FILES)]


@pytest.mark.parametrize("name,kind", RERUN_CASES)
def test_rerun_sets_a_damaged_step_aside_and_ends_bitwise(uninterrupted, tmp_path, caplog, capfd, name, kind):
    ref_dir, ref = uninterrupted
    workdir = copy_run(ref_dir, str(tmp_path / "run"))
    check_rerun(workdir, name, kind, ref_dir, ref, caplog, capfd, lambda p: open(p).read())


@pytest.mark.parametrize("kind", ("empty", "cut", "garbled"))
def test_commit_markers_content_is_not_damage(uninterrupted, tmp_path, kind):
    """orbax's commit_success.txt is free text, never read: a step with a damaged marker is intact."""
    ref_dir, ref = uninterrupted
    workdir = copy_run(ref_dir, str(tmp_path / "run"))
    step_dir = epath.Path(workdir, "checkpoints", "12")
    for marker in (step_dir / "commit_success.txt", step_dir / "state" / "commit_success.txt"):
        data = marker.read_bytes()
        marker.write_bytes({"empty": b"", "cut": data[: len(data) // 2], "garbled": b"\xff\x00" * 8}[kind])
    assert rundir.load_training_params(workdir)[2]["step"] == 12


# On the GCS test server: load() with each kind (over different files), reruns of the case (missing
# state metadata) and of a cut data position.
GCS_LOAD_CASES = [("state metadata", "missing"), ("array manifest", "empty"), ("array data", "cut"),
                  ("config record", "garbled")]


@pytest.mark.parametrize("name,kind", GCS_LOAD_CASES)
def test_load_falls_back_on_gcs(gcs, uninterrupted, step8_params, caplog, capfd, name, kind):
    ref_dir, ref = uninterrupted
    workdir = gcs.fresh_prefix("damaged-load")
    paths.copy_tree(os.path.join(ref_dir, "checkpoints"), f"{workdir}/checkpoints")
    check_load(workdir, name, kind, step8_params, ref, caplog, capfd)


@pytest.mark.parametrize("name,kind", [("state metadata", "missing"), ("data position", "cut")])
def test_rerun_falls_back_on_gcs(gcs, uninterrupted, caplog, capfd, name, kind):
    ref_dir, ref = uninterrupted
    workdir = copy_run(ref_dir, gcs.fresh_prefix("damaged-rerun"))
    check_rerun(workdir, name, kind, ref_dir, ref, caplog, capfd, lambda p: epath.Path(p).read_text())
