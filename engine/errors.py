"""Errors the engine raises. The service maps each to one HTTP problem type.

EngineError
├── InvalidInput        data or arguments the engine cannot use (bad shape, NaN, one class)
├── ModelFormatError    a serialized model that is malformed, foreign or of another version
├── TrainingDiverged    the loss or a weight became non-finite, or the loss exploded
└── TrainingCancelled   the caller asked training to stop
"""

from __future__ import annotations


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
