"""Noticing a preemption (SIGTERM) so the loop saves and exits at a step every process agrees on."""
from __future__ import annotations

import signal
import threading

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


class PreemptionWatchError(RuntimeError):
    """The preemption watch cannot tell whether the run is being preempted."""


class PreemptionWatch:
    """Notices SIGTERM (preemption) so the loop can save and exit at a step all processes agree on.

    One process: a Python SIGTERM handler sets a flag. Several processes: jax.distributed's preemption
    sync service (which catches SIGTERM itself) picks the step; if that service fails, `reached` raises.
    """

    def __init__(self, manager: ocp.CheckpointManager):
        self.manager = manager
        self._flag = threading.Event()
        self._previous = None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())

    def reached(self, step: int) -> bool:
        """True at the step all processes agreed to stop at. A failing preemption service is an error, not
        "no preemption": returning False would silently stop the saves a preempted pod depends on."""
        if jax.process_count() > 1:
            try:
                # jax's call, not orbax's CheckpointManager.reached_preemption, which returns False when the
                # service is missing; jax's own returns False without jax.distributed, hence the check.
                if not jax.distributed.is_initialized():
                    raise RuntimeError("jax.distributed is not initialised")
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except Exception as e:  # noqa: BLE001 - re-raised with what it means for the run
                raise PreemptionWatchError(
                    f"step {step}: the preemption sync service failed ({type(e).__name__}: {e}); a preemption "
                    f"would not be saved. jax.distributed.initialize must run before training (it starts the "
                    f"service) on every process") from e
        return self._flag.is_set()

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


