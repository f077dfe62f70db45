"""Training checkpoints: an orbax CheckpointManager over `<workdir>/checkpoints/<step>/`.

Each step directory is a composite of three items:
    state      {"step", "params", "opt_state"} (PyTree; sharded arrays written by their owners). The frozen
               part of a LoRA run (its base) is not stored; it is reloaded from the config's init_from
    data_iter  the batch source's position (JSON for the synthetic source, grain's per-process files)
    config     the run's full config (JSON): the model group lets `mellama_jax.load(workdir)` and
               `checkpoints.rundir.load_training_params` rebuild the model without the config file

Saving is asynchronous (training continues while the arrays are written); orbax writes into a temporary
directory and renames it when complete (on object storage, where rename is not atomic, orbax writes a
commit marker last instead), so a run killed mid-save leaves the previous step as the latest *complete*
checkpoint, which is what a rerun resumes from. Restoring goes through ShapeDtypeStructs that carry the
*current* mesh's shardings, so a checkpoint restores onto a different mesh shape.

A complete checkpoint can still be damaged (an object cut short by a lost host or a storage hiccup).
`restore_latest` reads the newest step; if its files cannot be read it names the step and file, moves the
step directory aside as `<step>.damaged-<UTC time>` (kept, outside orbax's step naming) and falls back to
the previous step, loudly. It never starts from scratch: if every step is damaged it stops, naming them.
A restore that fails for another reason (the model or optimizer changed) is an error, not damage.
"""
from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from mellama_jax import paths
from mellama_jax.checkpoints.errors import CheckpointDamaged, CheckpointError
from mellama_jax.checkpoints.integrity import damage_of, quiet_failed_restores, step_damage
from mellama_jax.checkpoints.rundir import CHECKPOINTS_DIR

log = logging.getLogger(__name__)

ITEMS = ("state", "data_iter", "config")
DAMAGED_TAG = "damaged"  # <step>.damaged-<time>: not a step name for orbax, so never resumed from or deleted

def check_data_iter_format(step_dir: str) -> None:
    """Refuse a data position saved per process by grain's own handler (before data.shards): it restores only
    with the same process count, and is not damage."""
    data_iter = paths.resolve(step_dir) / "data_iter"
    legacy = sorted(p.name for p in data_iter.iterdir()) if data_iter.is_dir() else []
    legacy = [n for n in legacy if re.fullmatch(r"process_\d+-of-\d+\.json", n)]
    if legacy:
        raise CheckpointError(f"{step_dir}/data_iter holds per-process grain states ({', '.join(legacy)}) from an "
                              f"earlier version; this version saves one state for all data shards. Resume it with "
                              f"that version, or start a new workdir with init_from pointing at an export of it")


class _RestoreFailed:
    """What the state handler returns instead of raising (see _StateHandler)."""

    def __init__(self, error: BaseException):
        self.error = error


class _StateHandler(ocp.PyTreeCheckpointHandler):
    """orbax's PyTree handler, except that a failed restore returns the error instead of raising it.

    orbax ends a restore with a barrier of all processes. Damage that only some processes read (each reads its
    own shards) would make those leave the restore early, while the others wait at that barrier until the
    coordination service gives up; returned, the error is raised after the barrier, and every process then
    agrees on it (`_any_process`)."""

    def restore(self, directory, args=None):
        try:
            return super().restore(directory, args=args)
        except Exception as e:  # noqa: BLE001 - re-raised by Checkpointer.restore once every process is past the barrier
            return _RestoreFailed(e)


class Checkpointer:
    """The training checkpoints of one workdir. `cfg` is the run's checkpoint group (train.config
    CheckpointConfig: keep, async_save, every_steps); states are train.state.TrainState-like: they give
    `to_checkpoint()` (the tree stored as `state`) and their class `from_checkpoint(tree)`."""

    def __init__(self, workdir: str, cfg):
        self.cfg = cfg
        self.directory = paths.join(paths.as_str(workdir, what="workdir"), CHECKPOINTS_DIR)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep, enable_async_checkpointing=cfg.async_save, create=True,
            cleanup_tmp_directories=True)
        # The state's handler is ours (above); the other items (ITEMS) get orbax's handler for their args.
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        state_handler = _StateHandler()
        registry.add("state", ocp.args.PyTreeSave, state_handler)
        registry.add("state", ocp.args.PyTreeRestore, state_handler)
        self.manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=registry)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def due(self, step: int) -> bool:
        return self.cfg.every_steps > 0 and step % self.cfg.every_steps == 0

    def save(self, step: int, state, source, config: dict) -> None:
        """Start an (async) save of everything a resume needs; returns once device arrays are copied."""
        args = ocp.args.Composite(state=ocp.args.PyTreeSave(state.to_checkpoint()), data_iter=source.save_args(),
                                  config=ocp.args.JsonSave(config))
        with interrupts_deferred():
            self.manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state, source) -> tuple[Any, dict]:
        """(state on the shardings of `abstract_state`, saved config); the source is repositioned."""
        abstract = abstract_state.to_checkpoint()
        args = ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)),
            data_iter=source.restore_args(), config=ocp.args.JsonRestore())
        step_dir = paths.join(self.directory, str(step))
        check_data_iter_format(step_dir)
        damage = step_damage(step, step_dir)
        if damage is not None:
            raise damage
        quiet_failed_restores()
        try:
            restored = self.manager.restore(step, args=args)
            if isinstance(restored.state, _RestoreFailed):
                raise restored.state.error
        except Exception as e:  # noqa: BLE001 - tensorstore read errors reach us as bare Exception
            damage = damage_of(step, step_dir, e)
            if damage is not None:
                raise damage from e
            raise CheckpointError(f"{step_dir}: cannot restore the train state for this config "
                                  f"(model or optimizer changed?): {type(e).__name__}: {e}") from e
        source.restored(restored.data_iter)
        return type(abstract_state).from_checkpoint(restored.state), restored.config

    def restore_latest(self, abstract_state, source) -> tuple[Any, dict, int] | None:
        """Restore the newest readable step (state, saved config, step), or None for a fresh workdir.

        Damaged newer steps are moved aside (after a readable one is found) and reported loudly; if no step is
        readable this raises CheckpointError naming every step and file, leaving the directory untouched."""
        damaged: list[CheckpointDamaged] = []
        for step in sorted(self.all_steps(), reverse=True):
            error = None
            try:
                state, config = self.restore(step, abstract_state, source)
            except CheckpointDamaged as d:
                error = d
            if _any_process(error is not None):  # every process falls back together
                damaged.append(error or CheckpointDamaged(step, "(another process)", "unreadable on another process"))
                log.error("CHECKPOINT DAMAGED: %s/%d cannot be read (%s); trying the previous step",
                          self.directory, step, damaged[-1])
                continue
            for d in damaged:
                self._set_aside(d.step)
            if damaged:
                log.error("RESUMING FROM AN OLDER CHECKPOINT: step %d of %s; damaged step(s) %s were moved aside "
                          "as <step>.%s-<time> (kept for inspection)", step, self.directory,
                          [d.step for d in damaged], DAMAGED_TAG)
            return state, config, step
        if damaged:
            raise CheckpointError(f"{self.directory}: every checkpoint is damaged, nothing to resume from "
                                  f"(not starting from scratch; move the directory away to do that):\n  "
                                  + "\n  ".join(str(d) for d in damaged))
        aside = self.damaged_dirs()
        if aside:
            raise CheckpointError(f"{self.directory}: no complete checkpoint, only damaged ones set aside earlier "
                                  f"{aside}; not starting from scratch (move the directory away to do that)")
        return None

    def damaged_dirs(self) -> list[str]:
        root = paths.resolve(self.directory)
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir() if f".{DAMAGED_TAG}-" in p.name)

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            dst = paths.move_aside(paths.join(self.directory, str(step)), DAMAGED_TAG)
            log.error("moved damaged checkpoint step %d to %s", step, dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"mellama_set_aside_{step}")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        with interrupts_deferred():
            self.manager.wait_until_finished()
            self.manager.close()


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C (SIGINT) until the block ends, then deliver it. A KeyboardInterrupt inside orbax's save or
    its final wait leaves its commit threads running while Python shuts down: the step is half written and the
    threads print tracebacks ("cannot schedule new futures after shutdown") after the one-line message."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], dtype=np.int32))))
