"""Errors the engine raises. The service maps each to one HTTP problem type.

EngineError
├── InvalidInput        data or arguments the engine cannot use (bad shape, NaN, one class)
├── ModelFormatError    a serialized model that is malformed, foreign or of another version
├── TrainingDiverged    the loss or a weight became non-finite, or the loss exploded
├── TrainingCancelled   the caller asked training to stop
└── DeadlinePassed      a computation ran past the deadline its caller set (see `deadline`)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class InvalidInput(EngineError, ValueError):
    """Input the engine cannot use; the message says what was wrong and what to do."""


class ModelFormatError(EngineError, ValueError):
    """A serialized model that cannot be loaded."""


class TrainingDiverged(EngineError):
    """Training produced a non-finite or exploding loss at `epoch`."""

    def __init__(self, epoch: int, detail: str) -> None:
        self.epoch = epoch
        self.detail = detail
        super().__init__(f"training diverged at epoch {epoch}: {detail}")


class TrainingCancelled(EngineError):
    """Training stopped because the caller's `should_stop` returned True."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        super().__init__(f"training cancelled at epoch {epoch}")


class DeadlinePassed(EngineError):
    """A prediction (or a picture's) ran longer than its caller allowed; nothing was kept."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the computation took longer than {seconds:g} s and was abandoned")


_deadline: ContextVar[tuple[float, float] | None] = ContextVar("deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Long computations started inside (in this context, or a thread that copies it, as
    anyio's to_thread does) raise DeadlinePassed at their next check once `seconds` passed."""
    token = _deadline.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def check_deadline() -> None:
    """Raise DeadlinePassed if the current deadline has passed."""
    current = _deadline.get()
    if current is not None and time.monotonic() > current[0]:
        raise DeadlinePassed(current[1])
