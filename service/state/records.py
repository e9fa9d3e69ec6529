"""What the service keeps: datasets, models, jobs and sweeps, as records.

Jobs and sweeps reference a dataset by id and copy what their models need from it
(`TrainingData`), so they never read the dataset again; models reference their job or sweep and
dataset by id and keep what they need to predict, so a model outlives its dataset. Dataset and
model records never change after creation. Job and sweep records (`WorkRecord`) change only
through their lifecycle (`service.state.lifecycle`), by `Collection.update`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

import numpy as np
from pydantic import Field, JsonValue, PlainSerializer, PlainValidator

from engine.datasets import Dataset, Kind, Split
from engine.features import n_features_for
from engine.hyperparameters import Hyperparameters, Task
from engine.model import Label, Model, Scaler
from engine.training import (
    REGRESSION_KEYS,
    HistoryPoint,
    Objective,
    ParameterSnapshot,
    StopReason,
    final_metrics,
)

WorkStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[WorkStatus, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED: frozenset[WorkStatus] = frozenset({"succeeded", "failed", "cancelled"})
ErrorType = Literal[
    "diverged",
    "timeout",
    "worker_lost",
    "invalid_input",
    "interrupted",
    "insufficient_storage",
    "internal",
]
# train_loss, test_loss and the task's: train_accuracy, test_accuracy (classification) or
# train_mse, test_mse, train_mae, test_mae, train_r2, test_r2 (regression)
Metrics = dict[str, float | None]
METRIC_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", *REGRESSION_KEYS)

BASELINE_LABEL = "logistic regression"
BASELINE_LABELS: dict[Task, str] = {
    "classification": BASELINE_LABEL,
    "regression": "linear regression",
}

__all__ = ["HistoryPoint", "StopReason"]  # re-exported: the one history point type


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """An opaque id such as `ds_5f0c2a9e81d34b7a`."""
    return f"{prefix}_{secrets.token_hex(8)}"


def metrics_of(point: HistoryPoint | Metrics) -> Metrics:
    """The losses and the task's metrics of a history point (or of final metrics)."""
    if isinstance(point, HistoryPoint):
        return final_metrics(point)
    return {key: point[key] for key in METRIC_KEYS if key in point}


def objective_for(task: Task, target_scaler: Scaler | None) -> Objective:
    """What training fits: classes, or targets whose errors are reported in their original
    units (the target scaler's scale)."""
    if task == "classification":
        return Objective()
    scale = None if target_scaler is None else tuple(target_scaler.scale.tolist())
    return Objective("regression", scale)


def append_point(history: list[HistoryPoint], point: HistoryPoint) -> bool:
    """Append a point newer than the last; False (nothing appended) for a repeated epoch."""
    if history and point.epoch <= history[-1].epoch:
        return False
    history.append(point)
    return True


def nbytes(*arrays: np.ndarray | None) -> int:
    """Bytes the arrays hold (what counts against max_stored_bytes)."""
    return sum(int(array.nbytes) for array in arrays if array is not None)


@dataclass(frozen=True)
class DatasetContent:
    """A dataset's points and its split: what training and pictures read, loaded on demand."""

    dataset: Dataset
    split: Split

    @property
    def nbytes(self) -> int:
        split = self.split
        scalers = [s for s in (split.scaler, split.target_scaler) if s is not None]
        return nbytes(
            self.dataset.X,
            self.dataset.y,
            split.X_train,
            split.y_train,
            split.X_test,
            split.y_test,
            split.train_index,
            split.test_index,
            *(array for s in scalers for array in (s.mean, s.scale)),
        )


@dataclass(frozen=True)
class DatasetRecord:
    """What is known of a dataset without loading its points."""

    id: str
    name: str
    kind: Kind
    parameters: dict[str, int | float]  # generator parameters actually used
    test_fraction: float
    standardize: bool
    seed: int
    created_at: datetime
    n_samples: int
    n_features: int
    classes: tuple[Label, ...]  # () for regression
    class_counts: tuple[int, ...]
    feature_names: tuple[str, ...]
    train_size: int
    test_size: int
    nbytes: int  # of its content
    owner: str | None = None  # the name of the API key that created it
    task: Task = "classification"
    target_names: tuple[str, ...] = ()  # regression: one per target column

    @classmethod
    def describe(cls, content: DatasetContent, **given: Any) -> DatasetRecord:
        """The record of `content`, with what it cannot tell (`given`: id, name, kind,
        parameters, test_fraction, standardize, seed, created_at, owner) as given."""
        data, split = content.dataset, content.split
        return cls(
            **given,
            n_samples=data.n_samples,
            n_features=data.n_features,
            classes=data.classes,
            class_counts=tuple(data.class_counts.values()),
            feature_names=data.feature_names,
            train_size=int(split.train_index.size),
            test_size=int(split.test_index.size),
            nbytes=content.nbytes,
            task=data.task,
            target_names=data.target_names,
        )

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        """A network's output width for this data: classes, or regression targets."""
        return len(self.target_names) if self.task == "regression" else self.n_classes

    def snapshot(self) -> DatasetRecord:
        return self


def _scaler_values(scaler: Scaler | None) -> dict[str, list[float]] | None:
    if scaler is None:
        return None
    return {"mean": scaler.mean.tolist(), "scale": scaler.scale.tolist()}


def _scaler_of(value: object) -> Scaler | None:
    if value is None or isinstance(value, Scaler):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"a scaler is mean and scale lists, got {type(value).__name__}")
    mean = np.array(value["mean"], dtype=np.float64)
    scale = np.array(value["scale"], dtype=np.float64)
    return Scaler(mean=mean, scale=scale)


# A Scaler as stored records write it: its mean and scale as JSON numbers (exact round trip).
StoredScaler = Annotated[Scaler | None, PlainValidator(_scaler_of), PlainSerializer(_scaler_values)]


@dataclass(frozen=True)
class TrainingData:
    """What training work copies from its dataset: sizes, and what its models need."""

    n_features: int
    n_classes: int  # the output width: classes, or regression targets
    train_size: int
    test_size: int
    classes: tuple[Label, ...]
    feature_names: tuple[str, ...]
    scaler: StoredScaler
    task: Task = "classification"
    target_names: tuple[str, ...] = ()
    target_scaler: StoredScaler = None  # regression with standardize

    @classmethod
    def of(cls, record: DatasetRecord, content: DatasetContent) -> TrainingData:
        """The dataset's fields of these names, its output width (classes or regression
        targets) and its split's scalers."""
        own = ("scaler", "target_scaler", "n_classes")
        copied = {f.name: getattr(record, f.name) for f in fields(cls) if f.name not in own}
        split = content.split
        return cls(
            **copied,
            n_classes=record.n_outputs,
            scaler=split.scaler,
            target_scaler=split.target_scaler,
        )

    @property
    def objective(self) -> Objective:
        return objective_for(self.task, self.target_scaler)

    @property
    def baseline_label(self) -> str:
        return BASELINE_LABELS[self.task]

    def model(
        self, hp: Hyperparameters, weights: list[np.ndarray], biases: list[np.ndarray]
    ) -> Model:
        """A network trained on this data with `hp` (its weights and biases), as a Model."""
        return Model(
            weights=list(weights),
            biases=list(biases),
            activation=hp.activation,
            classes=self.classes,
            hyperparameters=hp,
            scaler=self.scaler,
            feature_names=self.feature_names,
            task=self.task,
            target_names=self.target_names,
            target_scaler=self.target_scaler,
        )


@dataclass(frozen=True)
class WorkError:
    type: ErrorType
    detail: str


@dataclass(kw_only=True)
class WorkRecord:
    """What jobs and sweeps share: accepted, queued, running, then finished for good."""

    id: str
    name: str
    dataset_id: str
    created_at: datetime
    data: TrainingData
    status: WorkStatus = "queued"
    submitted: bool = False  # False until the executor accepted it: hidden from lists
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    owner: str | None = None  # the name of the API key that submitted it
    attempt: int = 1  # runs started: a durable store runs interrupted work again once

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def snapshot(self) -> Self:
        """A copy that later changes to this record do not reach."""
        raise NotImplementedError

    def histories(self) -> dict[str, list[HistoryPoint]]:
        """Its history lists by series name (what a store keeps apart from the record)."""
        raise NotImplementedError

    def with_histories(self, histories: dict[str, list[HistoryPoint]]) -> Self:
        """A copy with these history lists (missing series empty)."""
        raise NotImplementedError

    def parameter_snapshots(self) -> list[ParameterSnapshot]:
        """Its parameter snapshots, oldest first (what a store keeps apart from the record)."""
        return []

    def with_parameter_snapshots(self, snapshots: list[ParameterSnapshot]) -> Self:
        """A copy with these snapshots (work that keeps none ignores them)."""
        return self


@dataclass(frozen=True)
class JobBaseline:
    """The softmax (logistic) regression a job trained beside its network when asked: the same
    options with hidden_layers [], on the same split."""

    model_id: str | None  # None when it failed
    metrics: Metrics | None
    epochs_run: int
    error: WorkError | None


# A job keeps at most MAX_SNAPSHOTS parameter snapshots and at most MAX_SNAPSHOT_BYTES of them:
# 100 frames make a smooth animation, and 4 MiB holds 100 snapshots of any network up to ~5,000
# parameters ([64, 64] on 2 features) while keeping a big network's job to a few of its copies
# (at least the latest). The history, kept whole, gives each snapshot's losses.
MAX_SNAPSHOTS = 100
MAX_SNAPSHOT_BYTES = 4 * 2**20


def snapshot_limit(snapshot_nbytes: int) -> int:
    """How many snapshots of this size a job keeps: 1..MAX_SNAPSHOTS."""
    return max(1, min(MAX_SNAPSHOTS, MAX_SNAPSHOT_BYTES // max(1, snapshot_nbytes)))


def keep_snapshot(snapshots: list[ParameterSnapshot], new: ParameterSnapshot) -> None:
    """Add `new` (the latest) to `snapshots` and thin them evenly to the job's limit, in place.

    Of the snapshots numbered 0..k (k = new.index), those kept are the multiples of a stride
    (the smallest power of two that keeps the count within the limit) and the latest, so the
    first is always kept and the spacing stays even however long the job runs."""
    limit = snapshot_limit(new.nbytes)
    if limit == 1:
        snapshots[:] = [new]
        return
    stride = _stride(new.index, limit)
    if snapshots and _stride(snapshots[-1].index, limit) == stride:
        # the stride is the one the kept ones were thinned to (a job's snapshots are of one
        # network, so of one size and one limit): only the previous latest may be off it (a
        # job's hundreds of snapshots mostly take this way, without a copy)
        if snapshots[-1].index % stride:
            snapshots.pop()
        snapshots.append(new)
        return
    snapshots[:] = [kept for kept in snapshots if kept.index % stride == 0] + [new]


def _stride(k: int, limit: int) -> int:
    """The smallest power of two whose multiples up to k, with k, are at most `limit`."""
    stride = 1
    while k // stride + 1 + (k % stride != 0) > limit:
        stride *= 2
    return stride


def _snapshots_of(value: object) -> list[ParameterSnapshot]:
    return value if isinstance(value, list) else []


# Snapshots stay out of a record's JSON: a store keeps their arrays apart (as histories).
StoredSnapshots = Annotated[
    list[ParameterSnapshot], PlainValidator(_snapshots_of), Field(exclude=True)
]


@dataclass(kw_only=True)
class JobRecord(WorkRecord):
    """A training job."""

    hyperparameters: Hyperparameters
    epoch: int = 0
    history: list[HistoryPoint] = field(default_factory=list)
    metrics: Metrics | None = None
    model_id: str | None = None
    error: WorkError | None = None
    stop_reason: StopReason | None = None
    worker_pid: int | None = None
    baseline_requested: bool = False
    baseline: JobBaseline | None = None  # set when the job succeeded and a baseline was asked for
    snapshots: StoredSnapshots = field(default_factory=list)  # oldest first, see keep_snapshot
    init_model_id: str | None = None  # the model whose training it continues
    initial_epoch: int = 0  # that model's epochs: the history counts on from there

    @property
    def snapshot_epoch(self) -> int | None:
        """The epoch of the latest snapshot (None before the first)."""
        return self.snapshots[-1].epoch if self.snapshots else None

    def snapshot(self) -> JobRecord:
        return replace(self, history=list(self.history), snapshots=list(self.snapshots))

    def histories(self) -> dict[str, list[HistoryPoint]]:
        return {"job": self.history}

    def with_histories(self, histories: dict[str, list[HistoryPoint]]) -> JobRecord:
        return replace(self, history=list(histories.get("job", [])))

    def parameter_snapshots(self) -> list[ParameterSnapshot]:
        return self.snapshots

    def with_parameter_snapshots(self, snapshots: list[ParameterSnapshot]) -> JobRecord:
        return replace(self, snapshots=list(snapshots))


@dataclass
class ConfigurationRecord:
    """One configuration of a sweep (or its baseline)."""

    index: int | None  # position in the grid; None for the baseline
    hyperparameters: Hyperparameters
    varied: dict[str, JsonValue]  # the grid values that set it apart
    share: str = ""  # the task that trains it
    status: WorkStatus = "queued"
    history: list[HistoryPoint] = field(default_factory=list)
    metrics: Metrics | None = None
    epochs_run: int = 0
    seconds: float | None = None
    model_id: str | None = None
    error: WorkError | None = None
    stop_reason: StopReason | None = None
    baseline_label: str = BASELINE_LABEL  # the baseline's name (linear regression for regression)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def label(self) -> str:
        """What sets it apart, for titles and legends: `hidden_layers=[3], l2=0.01`."""
        if self.index is None:
            return self.baseline_label
        return ", ".join(f"{key}={json.dumps(value)}" for key, value in self.varied.items())

    def snapshot(self) -> ConfigurationRecord:
        return replace(self, history=list(self.history))


# (kind, configuration, position in its history): one event of a sweep's stream, in order
StreamEntry = tuple[Literal["point", "result"], int | None, int]


@dataclass(kw_only=True)
class SweepRecord(WorkRecord):
    """A sweep: a grid of configurations trained together."""

    base: Hyperparameters
    grid: dict[str, list[JsonValue]]
    configurations: list[ConfigurationRecord]
    baseline: ConfigurationRecord | None
    shares: dict[str, bool] = field(default_factory=dict)  # task id -> ended
    stream: list[StreamEntry] = field(default_factory=list)

    def snapshot(self) -> SweepRecord:
        return replace(
            self,
            configurations=[row.snapshot() for row in self.configurations],
            baseline=self.baseline.snapshot() if self.baseline else None,
            shares=dict(self.shares),
            stream=list(self.stream),
        )

    def histories(self) -> dict[str, list[HistoryPoint]]:
        return {_series(row.index): row.history for row in self.rows()}

    def with_histories(self, histories: dict[str, list[HistoryPoint]]) -> SweepRecord:
        def filled(row: ConfigurationRecord) -> ConfigurationRecord:
            return replace(row, history=list(histories.get(_series(row.index), [])))

        return replace(
            self,
            configurations=[filled(row) for row in self.configurations],
            baseline=filled(self.baseline) if self.baseline else None,
        )

    def rows(self) -> list[ConfigurationRecord]:
        """The grid's configurations, then the baseline if any."""
        return self.configurations + ([self.baseline] if self.baseline is not None else [])

    def row(self, index: int | None) -> ConfigurationRecord:
        if index is None:
            assert self.baseline is not None
            return self.baseline
        return self.configurations[index]

    def best_index(self) -> int | None:
        """The succeeded configuration with the lowest test loss (training loss without a test
        split); the first such on ties."""
        which = "test_loss" if self.data.test_size else "train_loss"
        best: tuple[float, int] | None = None
        for row in self.configurations:
            value = (row.metrics or {}).get(which)
            if row.status != "succeeded" or value is None or row.index is None:
                continue
            if best is None or value < best[0]:
                best = (float(value), row.index)
        return None if best is None else best[1]


def _series(index: int | None) -> str:
    return "baseline" if index is None else str(index)


@dataclass(frozen=True)
class ModelContent:
    """A model's weights (with what it needs to predict) and its training history."""

    model: Model
    history: tuple[HistoryPoint, ...]  # empty for an imported model

    @property
    def nbytes(self) -> int:
        model = self.model
        arrays = [*model.weights, *model.biases]
        for scaler in (model.scaler, model.target_scaler):
            if scaler is not None:
                arrays += [scaler.mean, scaler.scale]
        if model.optimizer_state is not None:
            arrays += model.optimizer_state.arrays
        return nbytes(*arrays) + HISTORY_POINT_BYTES * len(self.history)


# A history point's share of max_stored_bytes: its numbers (epoch, rate, two losses and up to six
# metrics), as a float64 row of the store's history array holds them.
HISTORY_POINT_BYTES = 8 * 12


@dataclass(frozen=True)
class ModelRecord:
    """What is known of a model without loading its weights."""

    id: str
    name: str
    job_id: str | None  # None for an imported model or a sweep's
    dataset_id: str | None
    sweep_id: str | None  # the sweep that trained it (then job_id is None)
    metrics: Metrics | None
    created_at: datetime
    hyperparameters: Hyperparameters
    activation: str
    architecture: tuple[int, ...]  # layer widths, input to output
    n_parameters: int
    classes: tuple[Label, ...]
    feature_names: tuple[str, ...]
    has_history: bool
    nbytes: int  # of its content
    owner: str | None = None  # the API key that imported it, or submitted its job or sweep
    task: Task = "classification"
    target_names: tuple[str, ...] = ()
    continued_from: str | None = None  # the model whose training it continued

    @classmethod
    def describe(
        cls,
        content: ModelContent,
        *,
        id: str,
        name: str,
        created_at: datetime,
        metrics: Metrics | None = None,
        job_id: str | None = None,
        dataset_id: str | None = None,
        sweep_id: str | None = None,
        owner: str | None = None,
    ) -> ModelRecord:
        model = content.model
        return cls(
            id=id,
            name=name,
            job_id=job_id,
            dataset_id=dataset_id,
            sweep_id=sweep_id,
            metrics=metrics,
            created_at=created_at,
            hyperparameters=model.hyperparameters,
            activation=model.activation,
            architecture=tuple(model.architecture),
            n_parameters=model.n_parameters,
            classes=model.classes,
            feature_names=model.feature_names,
            has_history=bool(content.history),
            nbytes=content.nbytes,
            owner=owner,
            task=model.task,
            target_names=model.target_names,
            continued_from=model.continued_from,
        )

    @property
    def n_features(self) -> int:
        """Raw values per input point (the first layer takes the input map's columns)."""
        n_features = n_features_for(self.hyperparameters.input_features, self.architecture[0])
        assert n_features is not None, "a stored model's map fits its first layer"
        return n_features

    def snapshot(self) -> ModelRecord:
        return self
