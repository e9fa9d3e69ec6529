"""Typed responses of the scratchnet service, as the client receives them.

Each class has the name, fields and field types of the component of the same name in the
service's published OpenAPI document (`/openapi.json`); tests/test_client_types.py compares the
two schemas, field by field, so they cannot drift apart. Training options are the engine's own
`Hyperparameters` (one definition), and dataset kinds the engine's `Kind`.

These models parse, they do not police: unknown fields a newer service adds are ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, JsonValue, StrictInt, StrictStr, model_serializer

from engine.datasets import Kind as DatasetKind
from engine.hyperparameters import Hyperparameters, Task
from engine.training import StopReason

__all__ = [
    "ClusterWorker",
    "ConfigurationPublic",
    "DatasetKind",
    "DatasetPublic",
    "DatasetsPublic",
    "Health",
    "HistoryPointPublic",
    "Hyperparameters",
    "Info",
    "JobBaselinePublic",
    "JobErrorPublic",
    "JobHistory",
    "JobPublic",
    "JobSnapshots",
    "JobsPublic",
    "Limits",
    "Metrics",
    "ModelPublic",
    "ModelsPublic",
    "Prediction",
    "Problem",
    "ProgressEvent",
    "Readiness",
    "SweepPointEvent",
    "SweepProgress",
    "SweepPublic",
    "SweepResultEvent",
    "SweepsPublic",
    "ValidationIssue",
]

Label = StrictInt | StrictStr
JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[JobStatusName, ...] = ("succeeded", "failed", "cancelled")


class Response(BaseModel):
    """Base of every response: frozen, and tolerant of fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="ignore")


# --- errors ------------------------------------------------------------------------------------


class ValidationIssue(Response):
    """One invalid value of a request: where (`loc`), what (`msg`) and its kind (`type`)."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(Response):
    """An RFC 9457 problem detail, the body of every error response."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ValidationIssue] | None = None


# --- datasets ----------------------------------------------------------------------------------


class DatasetPublic(Response):
    """A dataset and its train/test split (`points`, `labels`, `split` with include_points)."""

    id: str
    name: str
    kind: DatasetKind
    n_samples: int
    n_features: int
    task: Task = "classification"
    n_classes: int
    classes: list[Label]
    class_counts: list[int]
    feature_names: list[str]
    train_size: int
    test_size: int
    test_fraction: float
    standardize: bool
    seed: int
    parameters: dict[str, int | float]
    created_at: datetime
    points: list[list[float]] | None = None
    labels: list[Label] | None = None
    targets: list[list[float]] | None = None
    split: list[Literal["train", "test"]] | None = None
    target_names: list[str] = []


class DatasetsPublic(Response):
    """A page of datasets, oldest first."""

    items: list[DatasetPublic]
    total: int
    limit: int
    offset: int


# --- jobs --------------------------------------------------------------------------------------


class TaskMetrics(Response):
    """The metrics beside the losses: accuracies for classification, mse, mae and r2 for
    regression (the other task's are None; test ones None without a test split)."""

    train_accuracy: float | None = None
    test_accuracy: float | None = None
    train_mse: float | None = None
    test_mse: float | None = None
    train_mae: float | None = None
    test_mae: float | None = None
    train_r2: float | None = None
    test_r2: float | None = None

    # No return annotation: pydantic then keeps the fields in the JSON schema.
    @model_serializer(mode="wrap")
    def _metrics_after_losses(self, handler):  # type: ignore[no-untyped-def]
        """Fields in the service's order: the metrics after the losses (a subclass's fields
        come after the base's, so `epoch` would otherwise follow them)."""
        body = handler(self)
        names = [name for name in TaskMetrics.model_fields if name in body]
        metrics = {name: body.pop(name) for name in names}
        ordered = {}
        for name, value in body.items():
            ordered[name] = value
            if name == "test_loss":
                ordered |= metrics
        return ordered if "test_loss" in body else body | metrics

    @property
    def regression(self) -> bool:
        """Whether these are a regression's metrics."""
        return self.train_mse is not None or self.test_mse is not None

    @property
    def score_name(self) -> str:
        """What `score` gives: accuracy, or r2 for regression."""
        return "r2" if self.regression else "accuracy"

    def score(self, which: Literal["train", "test"]) -> float | None:
        """A split's accuracy, or its r2 for regression."""
        value: float | None = getattr(self, f"{which}_{self.score_name}")
        return value


class Metrics(TaskMetrics):
    """Loss and the task's metrics on each split (test ones None without a test split)."""

    train_loss: float
    test_loss: float | None


class HistoryPointPublic(TaskMetrics):
    """One recorded epoch."""

    epoch: int
    train_loss: float
    test_loss: float | None
    learning_rate: float


class ProgressEvent(HistoryPointPublic):
    """A job's `progress` event: one recorded epoch."""

    job_id: str
    snapshot_epoch: int | None = None  # the latest parameter snapshot's, when it was recorded


class JobErrorPublic(Response):
    """Why a job (or a configuration of a sweep) failed."""

    type: Literal[
        "diverged",
        "timeout",
        "worker_lost",
        "invalid_input",
        "interrupted",
        "insufficient_storage",
        "internal",
    ]
    detail: str


class JobBaselinePublic(TaskMetrics):
    """The baseline a job trained beside its network (logistic or linear regression)."""

    model_id: str | None
    train_loss: float | None
    test_loss: float | None
    epochs_run: int
    error: JobErrorPublic | None


class JobPublic(Response):
    """A training job; `succeeded`, `failed` and `cancelled` are final."""

    id: str
    name: str
    status: JobStatusName
    dataset_id: str
    hyperparameters: Hyperparameters
    epoch: int
    epochs: int
    train_size: int
    test_size: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None
    metrics: Metrics | None
    model_id: str | None
    error: JobErrorPublic | None
    stop_reason: StopReason | None
    cancel_requested: bool
    attempt: int
    baseline: JobBaselinePublic | None = None
    snapshot_epoch: int | None = None  # the latest parameter snapshot's epoch
    init_model_id: str | None = None
    initial_epoch: int = 0

    @property
    def finished(self) -> bool:
        """Whether the job reached a final state."""
        return self.status in FINISHED


class JobsPublic(Response):
    """A page of jobs, oldest first."""

    items: list[JobPublic]
    total: int
    limit: int
    offset: int


class JobSnapshots(Response):
    """The epochs of a job's kept parameter snapshots, oldest first."""

    job_id: str
    epochs: list[int]


class JobHistory(Response):
    """Recorded points of a job, oldest first."""

    job_id: str
    history: list[HistoryPointPublic]


# --- models ------------------------------------------------------------------------------------


class ModelPublic(Response):
    """A trained network, ready to predict."""

    id: str
    name: str
    job_id: str | None
    sweep_id: str | None = None
    dataset_id: str | None
    hyperparameters: Hyperparameters
    metrics: Metrics | None
    n_parameters: int
    n_features: int
    feature_names: list[str]
    classes: list[Label]
    task: Task = "classification"
    target_names: list[str] = []
    architecture: list[int]
    activation: str
    has_history: bool
    created_at: datetime
    aliases: list[str] = []
    continued_from: str | None = None


class ModelsPublic(Response):
    """A page of models, oldest first."""

    items: list[ModelPublic]
    total: int
    limit: int
    offset: int


class Prediction(Response):
    """A classifier's most probable class of each point and every class's probability; a
    regression model's predicted values (the other fields None)."""

    classes: list[Label] | None = None
    probabilities: list[list[float]] | None = None
    values: list[list[float]] | None = None


# --- sweeps ------------------------------------------------------------------------------------


class ConfigurationPublic(TaskMetrics):
    """One configuration of a sweep (or its baseline, `index` None) and how it did."""

    index: int | None
    hyperparameters: Hyperparameters
    varied: dict[str, JsonValue]
    status: JobStatusName
    model_id: str | None
    train_loss: float | None
    test_loss: float | None
    epochs_run: int
    seconds: float | None
    stop_reason: StopReason | None
    error: JobErrorPublic | None
    best: bool


class SweepProgress(Response):
    """How far a sweep's configurations are (the baseline not counted)."""

    completed: int
    total: int
    succeeded: int
    failed: int
    cancelled: int
    running: int
    epochs_completed: int
    epochs_total: int
    fraction: float


class SweepPublic(Response):
    """A sweep; `succeeded`, `failed` and `cancelled` are final."""

    id: str
    name: str
    status: JobStatusName
    dataset_id: str
    base: Hyperparameters
    grid: dict[str, list[JsonValue]]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_seconds: float | None
    progress: SweepProgress
    results: list[ConfigurationPublic]
    best_index: int | None
    baseline: ConfigurationPublic | None
    cancel_requested: bool
    attempt: int

    @property
    def finished(self) -> bool:
        """Whether the sweep reached a final state."""
        return self.status in FINISHED

    @property
    def best(self) -> ConfigurationPublic | None:
        """The best configuration's row, once one succeeded."""
        return None if self.best_index is None else self.results[self.best_index]


class SweepsPublic(Response):
    """A page of sweeps, oldest first."""

    items: list[SweepPublic]
    total: int
    limit: int
    offset: int


class SweepPointEvent(HistoryPointPublic):
    """A sweep's `progress` event: one configuration (`index`; None for the baseline)
    recorded a history point."""

    sweep_id: str
    index: int | None


class SweepResultEvent(ConfigurationPublic):
    """A sweep's `result` event: one configuration ended."""

    sweep_id: str


# --- operations --------------------------------------------------------------------------------


class Health(Response):
    """The service answers (from /readyz: and its workers are up)."""

    status: Literal["ok"] = "ok"


class ClusterWorker(Response):
    """One worker of the Dask cluster training runs on."""

    name: str
    pid: int
    resources: dict[str, float]


class Readiness(Health):
    """Every training worker is up (the cluster's workers, on a Dask cluster)."""

    cluster: list[ClusterWorker] | None


class Limits(Response):
    """Deployment limits checked on top of the hyperparameter bounds."""

    max_hidden_layers: int
    max_units_per_layer: int
    max_samples: int
    max_epochs: int
    max_work: float
    predict_max_points: int
    max_request_bytes: int
    max_queued_jobs: int
    job_timeout_seconds: float
    page_size_max: int
    max_stored_bytes: int
    max_active_jobs_per_key: int
    rate_limit: str
    rate_limit_burst: int
    request_timeout_seconds: float
    keys_required: bool


class Info(Response):
    """What the service is and how it is configured."""

    version: str
    executor_backend: str
    workers: int
    worker_pids: list[int]
    ready: bool
    queued_jobs: int
    running_jobs: int
    store_backend: Literal["memory", "sqlite"]
    stored_bytes: int
    limits: Limits
    cluster: list[ClusterWorker] | None
