"""Training checkpoints: an orbax CheckpointManager over `<workdir>/checkpoints/<step>/`.

Each step directory is a composite of three items:
    state      {"step", "params", "opt_state"} (PyTree; sharded arrays written by their owners). The frozen
               part of a LoRA run (its base) is not stored; it is reloaded from the config's init_from
    data_iter  the batch source's position (JSON for the synthetic source, grain's per-process files)
    config     the run's full config (JSON): the model group lets `mellama_jax.load(workdir)` and
               `convert.ckpt.load_training_params` rebuild the model without the config file

Saving is asynchronous (training continues while the arrays are written); orbax writes into a temporary
directory and renames it when complete, so a run killed mid-save leaves the previous step as the latest
*complete* checkpoint, which is what a rerun resumes from. Restoring goes through ShapeDtypeStructs that
carry the *current* mesh's shardings, so a checkpoint restores onto a different mesh shape.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mellama_jax.train.config import CheckpointConfig
from mellama_jax.train.state import TrainState

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
ITEMS = ("state", "data_iter", "config")


def restore_args_for(abstract) -> Any:
    """Per-leaf orbax restore args placing every array on the sharding its ShapeDtypeStruct carries."""
    def one(s):
        if getattr(s, "sharding", None) is not None:
            return ocp.ArrayRestoreArgs(sharding=s.sharding, global_shape=s.shape, dtype=s.dtype)
        return ocp.RestoreArgs(restore_type=np.ndarray, dtype=s.dtype)
    return jax.tree.map(one, abstract)


class Checkpointer:
    def __init__(self, workdir: str, cfg: CheckpointConfig):
        self.cfg = cfg
        self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINTS_DIR)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep, enable_async_checkpointing=cfg.async_save, create=True,
            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def due(self, step: int) -> bool:
        return self.cfg.every_steps > 0 and step % self.cfg.every_steps == 0

    def save(self, step: int, state: TrainState, source, config: dict) -> None:
        """Start an (async) save of everything a resume needs; returns once device arrays are copied."""
        args = ocp.args.Composite(state=ocp.args.PyTreeSave(state.to_checkpoint()), data_iter=source.save_args(),
                                  config=ocp.args.JsonSave(config))
        self.manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: TrainState, source) -> tuple[TrainState, dict]:
        """(state on the shardings of `abstract_state`, saved config); the source is repositioned."""
        abstract = abstract_state.to_checkpoint()
        args = ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args_for(abstract)),
            data_iter=source.restore_args(), config=ocp.args.JsonRestore())
        try:
            restored = self.manager.restore(step, args=args)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise RuntimeError(f"{self.directory}/{step}: cannot restore the train state for this config "
                               f"(model or optimizer changed?): {e}") from e
        source.restored(restored.data_iter)
        return TrainState.from_checkpoint(restored.state), restored.config

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class PreemptionWatch:
    """Notices SIGTERM (preemption) so the loop can save and exit at a step all processes agree on.

    One process: a Python SIGTERM handler sets a flag. Several processes: jax.distributed's preemption
    sync service (which catches SIGTERM itself) picks the step, via orbax's `reached_preemption`.
    """

    def __init__(self, manager: ocp.CheckpointManager):
        self.manager = manager
        self._flag = threading.Event()
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            try:
                return bool(self.manager.reached_preemption(step))
            except Exception:  # noqa: BLE001 - no preemption service (not initialised by jax.distributed)
                return False
        return self._flag.is_set()

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def export_model_checkpoint(workdir: str, out_dir: str, *, step: int | None = None,
                            tokenizer_dir: str | None = None, overwrite: bool = False) -> str:
    """Write the trained parameters of `workdir` (latest complete step unless `step`) as a model checkpoint
    directory (model_config.json + params/) that `mellama_jax.load` and the HF exporter read."""
    from mellama_jax.convert import ckpt
    cfg, params, extras = ckpt.load_training_params(workdir, step=step)
    return ckpt.save_model_checkpoint(out_dir, cfg, params, tokenizer_dir=tokenizer_dir or extras["tokenizer_dir"],
                                      lora_cfg=extras["lora_config"], adapters=extras["adapters"],
                                      overwrite=overwrite,
                                      training_info={"step": extras["step"],
                                                     "prompt_template": extras["prompt_template"]})
