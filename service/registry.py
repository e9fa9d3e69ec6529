"""The in-memory registry: datasets, jobs and models, guarded by one re-entrant lock.

Jobs reference a dataset by id; models reference their job and dataset by id and keep what they
need to predict, so a model outlives its dataset. Dataset and model records never change after
creation; job records change only through `service.jobs`, under `Registry.lock`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from engine.datasets import Dataset, Kind, Split
from engine.hyperparameters import Hyperparameters
from engine.model import Label, Model, Scaler

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[JobStatus] = frozenset({"succeeded", "failed", "cancelled"})
ErrorType = Literal["diverged", "timeout", "worker_lost", "invalid_input", "internal"]
StopReason = Literal["completed", "early_stopping", "time_budget"]

# One history point: epoch, train_loss, train_accuracy, test_loss, test_accuracy, learning_rate.
HistoryPoint = dict[str, Any]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """An opaque id such as `ds_5f0c2a9e81d34b7a`."""
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    name: str
    kind: Kind
    dataset: Dataset
    split: Split
    parameters: dict[str, int | float]  # generator parameters actually used
    test_fraction: float
    standardize: bool
    seed: int
    created_at: datetime

    @property
    def train_size(self) -> int:
        return int(self.split.train_index.size)

    @property
    def test_size(self) -> int:
        return int(self.split.test_index.size)


@dataclass(frozen=True)
class JobError:
    type: ErrorType
    detail: str


@dataclass(frozen=True)
class JobBaseline:
    """The softmax (logistic) regression a job trained beside its network when asked: the same
    options with hidden_layers [], on the same split."""

    model_id: str | None  # None when it failed
    metrics: dict[str, float | None] | None
    epochs_run: int
    error: JobError | None


@dataclass
class JobRecord:
    """A training job. Mutable fields change only under the registry lock."""

    id: str
    name: str
    dataset_id: str
    hyperparameters: Hyperparameters
    created_at: datetime
    train_size: int
    test_size: int
    # what the model needs from the dataset, kept so the job never reads the dataset again
    classes: tuple[Label, ...]
    feature_names: tuple[str, ...]
    scaler: Scaler | None
    status: JobStatus = "queued"
    submitted: bool = False  # False until the executor accepted it: hidden from lists
    started_at: datetime | None = None
    finished_at: datetime | None = None
    epoch: int = 0
    history: list[HistoryPoint] = field(default_factory=list)
    metrics: dict[str, float | None] | None = None
    model_id: str | None = None
    error: JobError | None = None
    stop_reason: StopReason | None = None
    cancel_requested: bool = False
    worker_pid: int | None = None
    baseline_requested: bool = False
    baseline: JobBaseline | None = None  # set when the job succeeded and a baseline was asked for

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class ModelRecord:
    id: str
    name: str
    model: Model
    job_id: str | None  # None for an imported model
    dataset_id: str | None
    metrics: dict[str, float | None] | None
    history: tuple[HistoryPoint, ...]  # empty for an imported model
    created_at: datetime
    sweep_id: str | None = None  # the sweep that trained it (then job_id is None)


T = TypeVar("T")


class Store(Generic[T]):
    """Records by id in insertion order. Callers hold the registry lock for compound steps."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._items: dict[str, T] = {}

    def add(self, item_id: str, item: T) -> None:
        with self._lock:
            self._items[item_id] = item

    def get(self, item_id: str) -> T | None:
        with self._lock:
            return self._items.get(item_id)

    def remove(self, item_id: str) -> T | None:
        with self._lock:
            return self._items.pop(item_id, None)

    def select(self, keep: Callable[[T], bool] | None = None) -> list[T]:
        with self._lock:
            return [item for item in self._items.values() if keep is None or keep(item)]

    def __iter__(self) -> Iterator[T]:
        return iter(self.select())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class Registry:
    """All in-memory state of one service instance."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.datasets: Store[DatasetRecord] = Store(self.lock)
        self.jobs: Store[JobRecord] = Store(self.lock)
        self.models: Store[ModelRecord] = Store(self.lock)
