"""The one checkpoint error, and the damage report the restore paths fall back on."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, damaged or does not match its config (the message names the
    directory, step and file). A ValueError: the CLIs print it as one line (cli.USER_ERRORS), no traceback."""


class CheckpointDamaged(CheckpointError):
    """A step's stored files cannot be read; `where` names the file (or the array inside a file).

    Callers that can fall back to an older step catch it; one that asked for this step gets it as the error."""

    def __init__(self, step: int, where: str, detail: str):
        super().__init__(f"step {step}: {where}: {detail}")
        self.step, self.where, self.detail = step, where, detail
