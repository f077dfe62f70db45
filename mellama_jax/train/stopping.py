"""Stopping a run early without losing it: Ctrl-C and preemption notices save a checkpoint, then exit.

* Ctrl-C (SIGINT, one process): the loop finishes the step it is in, saves it, and the command exits with
  status 130 ("interrupted"). A second Ctrl-C exits at once (the handler is put back after the first).
* SIGTERM (a preemption notice: Cloud TPU, GCE spot, SLURM's --signal) saves the step in progress if the save
  fits the notice: `checkpoint.preemption_deadline_s` after the signal (default 25 s, inside a 30 s notice).
  A save is started only if the time since the notice plus the longest save seen in this run still fits;
  otherwise the save in flight (if any) is finished and nothing new is written. The command then exits with
  `EXIT_PREEMPTED` (75, EX_TEMPFAIL: "try again"), which launchers tell from a failure and rerun on.
  With several processes, jax.distributed's preemption sync service (PreemptionWatch) picks one step for all.
"""
from __future__ import annotations

import logging
import signal
import threading
import time

import jax

from mellama_jax.train.preemption import PreemptionWatch

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: the run stopped for a preemption notice; rerun it to resume
INTERRUPT, PREEMPT = "interrupt", "preempt"


class StopSignals:
    """Ctrl-C and SIGTERM as stop requests the loop polls at step boundaries (`requested(n)`)."""

    def __init__(self, manager, deadline_s: float):
        self.deadline_s = deadline_s
        self.reason: str | None = None
        self.noticed_at: float | None = None
        self.longest_save_s = 0.0
        self._watch = None
        self._previous: dict[int, object] = {}
        single = jax.process_count() == 1 and threading.current_thread() is threading.main_thread()
        if single:
            self._take(signal.SIGTERM, self._on_sigterm)
            if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
                self._take(signal.SIGINT, self._on_sigint)
        else:  # several processes: the preemption service agrees on the step; Ctrl-C keeps its default
            self._watch = PreemptionWatch(manager)

    def _take(self, signum: int, handler) -> None:
        self._previous[signum] = signal.signal(signum, handler)

    def _on_sigint(self, signum, frame) -> None:
        self.reason = self.reason or INTERRUPT
        signal.signal(signal.SIGINT, self._previous.pop(signal.SIGINT))  # a second Ctrl-C exits at once
        log.warning("Ctrl-C: saving the current step, then exiting (Ctrl-C again to exit at once)")

    def _on_sigterm(self, signum, frame) -> None:
        if self.noticed_at is None:
            self.noticed_at = time.monotonic()
        self.reason = PREEMPT

    def requested(self, step: int) -> str | None:
        """INTERRUPT, PREEMPT or None at this step boundary (with several processes: the agreed step)."""
        if self._watch is not None and self.reason is None and self._watch.reached(step):
            self.reason, self.noticed_at = PREEMPT, time.monotonic()
        return self.reason

    def save_fits(self) -> bool:
        """Whether a new save can still end within the preemption deadline (always, for Ctrl-C)."""
        if self.reason != PREEMPT or self.noticed_at is None:
            return True
        return time.monotonic() - self.noticed_at + self.longest_save_s <= self.deadline_s

    def timed_save(self, save) -> None:
        start = time.monotonic()
        save()
        self.longest_save_s = max(self.longest_save_s, time.monotonic() - start)

    def close(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        if self._watch is not None:
            self._watch.close()
