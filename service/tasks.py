"""The training task that runs inside a worker process.

Importing this module must stay cheap (a worker imports it to unpickle a task): it touches only
the engine and NumPy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.hyperparameters import Hyperparameters


@dataclass(frozen=True)
class TrainingOutcome:
    """What a finished training run sends back to the service (picklable, no engine types)."""

    weights: list[np.ndarray]  # (fan_in, fan_out) per layer
    biases: list[np.ndarray]  # (fan_out,) per layer
    history: list[dict[str, Any]]
    epochs_run: int
    stop_reason: str
    best_epoch: int | None
    metrics: dict[str, float | None]
    baseline: TrainingOutcome | None = None  # the baseline's run, when asked for and trained
    baseline_error: tuple[str, str] | None = None  # (error type, detail) when it failed


@dataclass(frozen=True)
class TrainingTask:
    """Train on a prepared split; progress items are history points as dicts."""

    hyperparameters: Hyperparameters
    X_train: np.ndarray  # (n_train, n_features), already standardized when asked
    y_train: np.ndarray  # (n_train,) class indices
    X_test: np.ndarray | None  # (n_test, n_features) or None without a test split
    y_test: np.ndarray | None  # (n_test,)
    n_classes: int
    baseline: Hyperparameters | None = None  # also trained, after the network, without progress

    def run(self, report: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        from engine.errors import InvalidInput, TrainingDiverged
        from engine.training import train

        result = train(
            self.hyperparameters,
            self.X_train,
            self.y_train,
            self.n_classes,
            self.X_test,
            self.y_test,
            on_record=lambda point: report(point.as_dict()),
            should_stop=should_stop,
        )
        outcome = _outcome(result)
        if self.baseline is None:
            return outcome
        try:
            baseline = train(
                self.baseline,
                self.X_train,
                self.y_train,
                self.n_classes,
                self.X_test,
                self.y_test,
                should_stop=should_stop,
            )
        except (TrainingDiverged, InvalidInput) as exc:  # the baseline fails alone
            return replace(outcome, baseline_error=(type(exc).__name__, str(exc)))
        return replace(outcome, baseline=_outcome(baseline))


def _outcome(result: Any) -> TrainingOutcome:
    """A TrainResult as a TrainingOutcome."""
    return TrainingOutcome(
        weights=list(result.weights),
        biases=list(result.biases),
        history=[point.as_dict() for point in result.history],
        epochs_run=int(result.epochs_run),
        stop_reason=str(result.stop_reason),
        best_epoch=None if result.best_epoch is None else int(result.best_epoch),
        metrics=dict(result.final_metrics()),
    )
