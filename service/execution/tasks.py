"""The tasks a worker runs, and the typed values they send back.

Importing this module must stay cheap (a worker imports it to unpickle a task): it touches only
the engine and NumPy. Every value crossing between service and worker is a frozen dataclass:

    TrainingTask  progress: HistoryPoint (one per recorded epoch)
                            ParameterSnapshot (before its epoch's point, every snapshot_every)
                            (a continued run's epochs count on from its initial model's)
                  result:   TrainingOutcome (the network's, with its baseline's when asked for)
    SweepTask     progress: ConfigurationPoint   a configuration recorded a history point
                            ConfigurationEnded   a configuration succeeded or failed
                  result:   tuple of (index, status) per configuration, cancelled ones included

Every ended configuration is reported as it ends, so a cancelled share's finished work is not
lost. A sweep configuration's `index` is its position in the sweep (None for the baseline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from engine.hyperparameters import Hyperparameters
from engine.optimizers import OptimizerState
from engine.training import (
    CLASSIFICATION,
    HistoryPoint,
    Initial,
    Objective,
    ParameterSnapshot,
    StopReason,
)
from service.execution.executor import Failure, failure_of

if TYPE_CHECKING:
    from engine.packed import ConfigurationOutcome
    from engine.training import TrainResult

ConfigurationIndex = int | None  # None: the baseline
Metrics = dict[str, float | None]  # the losses and the task's metrics (see engine.training)


@dataclass(frozen=True)
class TaskError:
    """Why a run the engine refused failed (it diverged, its input was invalid)."""

    kind: Failure
    detail: str

    @classmethod
    def of(cls, exc: BaseException) -> TaskError:
        return cls(failure_of(exc), str(exc))


@dataclass(frozen=True)
class TrainingOutcome:
    """One trained network, as it comes back from a worker."""

    weights: list[np.ndarray]  # (fan_in, fan_out) per layer
    biases: list[np.ndarray]  # (fan_out,) per layer
    history: list[HistoryPoint]
    epochs_run: int
    stop_reason: StopReason
    best_epoch: int | None
    metrics: Metrics
    baseline: TrainingOutcome | None = None  # the baseline's run, when asked for and trained
    baseline_error: TaskError | None = None  # why the baseline failed, when it did
    optimizer_state: OptimizerState | None = None  # what a continued run would go on from

    @classmethod
    def of(cls, result: TrainResult, initial_epoch: int = 0) -> TrainingOutcome:
        """The run's outcome, its epochs counted on from `initial_epoch`."""
        best = result.best_epoch
        return cls(
            weights=list(result.weights),
            biases=list(result.biases),
            history=[shifted(point, initial_epoch) for point in result.history],
            epochs_run=initial_epoch + int(result.epochs_run),
            stop_reason=result.stop_reason,
            best_epoch=None if best is None else initial_epoch + int(best),
            metrics=dict(result.final_metrics()),
            optimizer_state=result.optimizer_state,
        )


Epoched = TypeVar("Epoched", HistoryPoint, ParameterSnapshot)


def shifted(item: Epoched, epochs: int) -> Epoched:
    """The point (or snapshot) with its epoch counted on from `epochs` earlier ones."""
    return replace(item, epoch=item.epoch + epochs) if epochs else item


@dataclass(frozen=True)
class PreparedSplit:
    """A dataset's split as training takes it."""

    X_train: np.ndarray  # (n_train, n_features), already standardized when asked
    y_train: np.ndarray  # (n_train,) class indices; regression (n_train, n_targets) targets
    X_test: np.ndarray | None  # (n_test, n_features) or None without a test split
    y_test: np.ndarray | None  # (n_test,); regression (n_test, n_targets)
    n_classes: int  # the output width: classes, or regression targets
    objective: Objective = CLASSIFICATION


@dataclass(frozen=True)
class TrainingTask:
    """Train one network on a prepared split (and its baseline after it, without progress);
    with `initial`, on from a model's weights whose training ran `initial_epoch` epochs."""

    hyperparameters: Hyperparameters
    data: PreparedSplit
    baseline: Hyperparameters | None = None
    initial: Initial | None = None
    initial_epoch: int = 0

    def run(
        self, report: Callable[[Any], None], should_stop: Callable[[], bool]
    ) -> TrainingOutcome:
        from engine.errors import InvalidInput, TrainingDiverged
        from engine.training import train

        data = self.data
        splits = (data.X_train, data.y_train, data.n_classes, data.X_test, data.y_test)
        objective = data.objective
        offset = self.initial_epoch

        def record(point: HistoryPoint) -> None:
            report(shifted(point, offset))

        def snapshot(taken: ParameterSnapshot) -> None:
            report(shifted(taken, offset))

        result = train(
            self.hyperparameters,
            *splits,
            on_record=record,
            on_snapshot=snapshot,
            should_stop=should_stop,
            objective=objective,
            initial=self.initial,
        )
        outcome = TrainingOutcome.of(result, offset)
        if self.baseline is None:
            return outcome
        try:
            baseline = train(self.baseline, *splits, should_stop=should_stop, objective=objective)
        except (TrainingDiverged, InvalidInput) as exc:  # the baseline fails alone
            return replace(outcome, baseline_error=TaskError.of(exc))
        return replace(outcome, baseline=TrainingOutcome.of(baseline))


@dataclass(frozen=True)
class ConfigurationPoint:
    index: ConfigurationIndex
    point: HistoryPoint


@dataclass(frozen=True)
class ConfigurationEnded:
    """A configuration that succeeded (`trained` set) or failed (`error` set)."""

    index: ConfigurationIndex
    status: Literal["succeeded", "failed"]
    epochs_run: int
    seconds: float
    trained: TrainingOutcome | None
    error: TaskError | None

    @classmethod
    def of(cls, index: ConfigurationIndex, outcome: ConfigurationOutcome) -> ConfigurationEnded:
        result, error = outcome.result, outcome.error
        epochs_run = outcome.history[-1].epoch if outcome.history else 0
        if error is not None:
            epochs_run = int(getattr(error, "epoch", epochs_run))
        return cls(
            index=index,
            status="succeeded" if outcome.status == "succeeded" else "failed",
            epochs_run=int(result.epochs_run) if result is not None else epochs_run,
            seconds=float(outcome.seconds),
            trained=TrainingOutcome.of(result) if result is not None else None,
            error=TaskError.of(error) if error is not None else None,
        )


@dataclass(frozen=True)
class SweepTask:
    """Train some of a sweep's configurations on a prepared split, packed as `packs` says."""

    configurations: tuple[tuple[ConfigurationIndex, Hyperparameters], ...]
    packs: tuple[tuple[int, ...], ...]  # positions into `configurations`
    data: PreparedSplit

    def run(
        self, report: Callable[[Any], None], should_stop: Callable[[], bool]
    ) -> tuple[tuple[ConfigurationIndex, str], ...]:
        from engine.packed import train_many

        names = [index for index, _hp in self.configurations]
        data = self.data

        def on_record(position: int, point: HistoryPoint) -> None:
            report(ConfigurationPoint(names[position], point))

        def on_finish(outcome: ConfigurationOutcome) -> None:
            if outcome.status != "cancelled":  # a cancelled one ends with its share's event
                report(ConfigurationEnded.of(names[outcome.index], outcome))

        outcomes = train_many(
            [hp for _index, hp in self.configurations],
            data.X_train,
            data.y_train,
            data.n_classes,
            data.X_test,
            data.y_test,
            packs=[list(pack) for pack in self.packs],
            on_record=on_record,
            on_finish=on_finish,
            should_stop=should_stop,
            objective=data.objective,
        )
        return tuple((names[o.index], o.status) for o in outcomes)
