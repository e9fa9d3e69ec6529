"""Job bookkeeping: limits, submission, cancellation, executor events -> job state, and the
notifications that drive event streams.

The executor calls `JobManager.on_event` from its own thread; every change to a job happens under
the registry lock and then wakes the job's subscribers on their event loops. A finished job
(succeeded, failed, cancelled) never changes again.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from engine.hyperparameters import Hyperparameters
from engine.model import Model
from service.errors import (
    Conflict,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    NotReady,
    TooManyJobs,
)
from service.executor import (
    Executor,
    QueueFull,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from service.idempotency import IdempotencyKeys, fingerprint
from service.metrics import ServiceMetrics
from service.registry import (
    DatasetRecord,
    HistoryPoint,
    JobBaseline,
    JobError,
    JobRecord,
    JobStatus,
    ModelRecord,
    Registry,
    StopReason,
    new_id,
    utc_now,
)
from service.schemas import JobCreate
from service.settings import Settings
from service.streams import Subscribers
from service.tasks import TrainingOutcome, TrainingTask

logger = logging.getLogger("service.jobs")

METRIC_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
HP = ("body", "hyperparameters")


def n_parameters(widths: list[int]) -> int:
    """Weights and biases of a dense network with layer `widths`, input to output."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(widths))


def check_limits(hp: Hyperparameters, dataset: DatasetRecord, settings: Settings) -> None:
    """Refuse, before queuing, a job this deployment will not run (422 naming the limit)."""
    layers = hp.hidden_layers
    if len(layers) > settings.max_hidden_layers:
        raise LimitExceeded.at(
            [*HP, "hidden_layers"],
            f"{len(layers)} hidden layers exceed max_hidden_layers = {settings.max_hidden_layers}",
            "limit_exceeded",
        )
    for index, units in enumerate(layers):
        if units > settings.max_units_per_layer:
            raise LimitExceeded.at(
                [*HP, "hidden_layers", index],
                f"{units} units exceed max_units_per_layer = {settings.max_units_per_layer}",
                "limit_exceeded",
            )
    if hp.epochs > settings.max_epochs:
        raise LimitExceeded.at(
            [*HP, "epochs"],
            f"{hp.epochs} epochs exceed max_epochs = {settings.max_epochs}",
            "limit_exceeded",
        )
    if hp.batch_size is not None and hp.batch_size > dataset.train_size:
        raise InvalidRequest.at(
            [*HP, "batch_size"],
            f"batch_size {hp.batch_size} is larger than the training split "
            f"({dataset.train_size} points); use at most {dataset.train_size} or null for "
            "full batch",
        )
    if hp.early_stopping and dataset.test_size == 0:
        raise InvalidRequest.at(
            [*HP, "early_stopping"],
            f"early_stopping needs a test split but dataset {dataset.id} has test_fraction 0; "
            "create the dataset with test_fraction > 0 or turn early_stopping off",
        )
    widths = [dataset.dataset.n_features, *layers, dataset.dataset.n_classes]
    work = dataset.train_size * n_parameters(widths) * hp.epochs
    if work > settings.max_work:
        raise LimitExceeded.at(
            [*HP, "epochs"],
            f"this job needs {work:.3g} units of work (training points {dataset.train_size} x "
            f"parameters {n_parameters(widths)} x epochs {hp.epochs}), over max_work = "
            f"{settings.max_work:.3g}; use fewer epochs, fewer or smaller layers, or less data",
            "limit_exceeded",
        )


def queue_full(exc: QueueFull, settings: Settings) -> TooManyJobs:
    """The 429 for work the executor's queue has no room for."""
    return TooManyJobs(
        f"{exc.queued} jobs are already waiting for a worker (max_queued_jobs = "
        f"{settings.max_queued_jobs}); retry after {exc.retry_after_seconds} s",
        headers={"Retry-After": str(max(1, exc.retry_after_seconds))},
    )


def metrics_of(point: dict[str, Any]) -> dict[str, float | None]:
    """The loss and accuracy values of a history point (or final metrics)."""
    return {key: point.get(key) for key in METRIC_KEYS}


def refusal_error(kind: str, detail: str) -> JobError | None:
    """The error of a run the engine refused (it diverged, or its input was invalid); None for
    other kinds of failure."""
    if kind == "TrainingDiverged":
        advice = "" if "learning rate" in detail else "; lower the learning_rate"
        return JobError("diverged", detail + advice)
    if kind == "InvalidInput":
        return JobError("invalid_input", detail)
    return None


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's public state plus history points after a cursor."""

    job: JobRecord
    new_points: list[HistoryPoint]


class JobManager:
    """Owns job state transitions; routes and the executor listener go through it."""

    def __init__(
        self, registry: Registry, executor: Executor, settings: Settings, metrics: ServiceMetrics
    ) -> None:
        self.registry = registry
        self.executor = executor
        self.settings = settings
        self.metrics = metrics
        self.started = False
        self.closing = False
        self._idempotency = IdempotencyKeys("job")
        self._subscribers = Subscribers(registry.lock)
        self._routes: dict[str, Callable[[TaskEvent], None]] = {}  # task id prefix -> listener

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the executor's workers (blocking: call from a thread)."""
        self.executor.start(self.on_event)
        self.started = True

    def close(self) -> None:
        """End every event stream; then stop the workers (blocking: call from a thread)."""
        self.closing = True
        self._subscribers.wake_all()
        self.executor.shutdown()

    # --- requests ----------------------------------------------------------------------------

    def require_started(self) -> None:
        """503 while the training workers are still starting."""
        if not self.started:
            raise NotReady(
                "the training workers are still starting; retry shortly",
                headers={"Retry-After": "1"},
            )

    def submit(self, body: JobCreate, idempotency_key: str | None) -> tuple[JobRecord, bool]:
        """Queue a job; returns (job, created). A repeated Idempotency-Key returns its job."""
        self.require_started()
        body_fingerprint = fingerprint(body)
        registry = self.registry
        with registry.lock:
            existing = self._idempotency.replay(
                idempotency_key, body_fingerprint, registry.jobs.get
            )
            if existing is not None:
                return existing, False
            dataset = registry.datasets.get(body.dataset_id)
            if dataset is None:
                raise InvalidRequest.at(
                    ["body", "dataset_id"],
                    f"dataset {body.dataset_id} does not exist",
                    "not_found",
                )
            hp = body.hyperparameters
            check_limits(hp, dataset, self.settings)
            job = JobRecord(
                id=new_id("job"),
                name=body.name or dataset.name,
                dataset_id=dataset.id,
                hyperparameters=hp,
                created_at=utc_now(),
                train_size=dataset.train_size,
                test_size=dataset.test_size,
                classes=dataset.dataset.classes,
                feature_names=dataset.dataset.feature_names,
                scaler=dataset.split.scaler,
                baseline_requested=body.baseline,
            )
            registry.jobs.add(job.id, job)
            self._idempotency.reserve(idempotency_key, body_fingerprint)
        split = dataset.split
        task = TrainingTask(
            hyperparameters=hp,
            X_train=split.X_train,
            y_train=split.y_train,
            X_test=split.X_test if dataset.test_size else None,
            y_test=split.y_test if dataset.test_size else None,
            n_classes=dataset.dataset.n_classes,
            baseline=hp.model_copy(update={"hidden_layers": []}) if body.baseline else None,
        )
        try:
            # outside the lock: the executor may call on_event from its thread meanwhile
            self.executor.submit(job.id, task, deadline_seconds=self.settings.job_timeout_seconds)
        except BaseException as exc:
            with registry.lock:
                registry.jobs.remove(job.id)
                self._idempotency.release(idempotency_key)
            if isinstance(exc, RuntimeError):  # the executor is stopping (or failed to start)
                raise NotReady(
                    "the training workers are not taking jobs (the service is shutting down)",
                    headers={"Retry-After": "5"},
                ) from None
            if isinstance(exc, QueueFull):
                raise queue_full(exc, self.settings) from None
            raise
        with registry.lock:
            job.submitted = True
            self._idempotency.record(idempotency_key, body_fingerprint, job.id)
        return job, True

    def require(self, job_id: str) -> JobRecord:
        job = self.registry.jobs.get(job_id)
        if job is None or not job.submitted:
            raise NotFound(f"job {job_id} does not exist")
        return job

    def cancel(self, job_id: str) -> JobRecord:
        with self.registry.lock:
            job = self.require(job_id)
            if job.finished:
                raise Conflict(
                    f"job {job_id} is already {job.status}; only queued or running "
                    "jobs can be cancelled"
                )
            job.cancel_requested = True
        self.executor.cancel(job_id)
        return job

    def counts_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "running", "succeeded", "failed", "cancelled"), 0)
        with self.registry.lock:
            for job in self.registry.jobs.select(lambda job: job.submitted):
                counts[job.status] += 1
        return counts

    def open_streams(self) -> int:
        """Event streams following a job now."""
        return self._subscribers.count()

    def uses_dataset(self, dataset_id: str) -> list[str]:
        """Ids of queued or running jobs that train on `dataset_id`."""
        return [
            job.id
            for job in self.registry.jobs.select(
                lambda job: job.dataset_id == dataset_id and not job.finished
            )
        ]

    # --- executor events (executor thread) --------------------------------------------------

    def route_events(self, prefix: str, listener: Callable[[TaskEvent], None]) -> None:
        """Hand the events of tasks whose id starts with `prefix` (other kinds of work, such as
        sweeps) to `listener` instead of treating them as jobs. Call before start()."""
        self._routes[prefix] = listener

    def on_event(self, event: TaskEvent) -> None:
        for prefix, listener in self._routes.items():
            if event.task_id.startswith(prefix):
                listener(event)
                return
        try:
            self._apply(event)
        except Exception:  # never let bookkeeping kill the executor's thread
            logger.exception("could not apply %r", event)
        self._subscribers.wake(event.task_id)

    def _apply(self, event: TaskEvent) -> None:
        with self.registry.lock:
            job = self.registry.jobs.get(event.task_id)
            if job is None or job.finished:
                return
            now = utc_now()
            if isinstance(event, TaskStarted):
                job.status = "running"
                job.started_at = now
                job.worker_pid = event.worker_pid
            elif isinstance(event, TaskProgress):
                self._record(job, [item for item in event.items if isinstance(item, dict)])
                if job.status == "queued":  # progress implies the task started
                    job.status, job.started_at = "running", job.started_at or now
            elif isinstance(event, TaskSucceeded):
                self._succeed(job, event.result)
            elif isinstance(event, TaskCancelled):
                self._finish(job, "cancelled")
            elif isinstance(event, TaskFailed):
                if event.error_type == "TrainingCancelled":
                    self._finish(job, "cancelled")
                else:
                    job.error = self._error(job, event)
                    self._finish(job, "failed")

    def _record(self, job: JobRecord, points: list[HistoryPoint]) -> None:
        for point in points:
            epoch = int(point["epoch"])
            if job.history and epoch <= job.history[-1]["epoch"]:
                continue
            job.history.append(point)
            self.metrics.epochs_trained.inc(max(0, epoch - job.epoch))
            job.epoch = epoch
            job.metrics = metrics_of(point)

    def _succeed(self, job: JobRecord, outcome: TrainingOutcome) -> None:
        self._record(job, outcome.history)
        job.history = list(outcome.history) or job.history
        self.metrics.epochs_trained.inc(max(0, outcome.epochs_run - job.epoch))
        job.epoch = outcome.epochs_run
        job.metrics = metrics_of(outcome.metrics)
        job.stop_reason = stop_reason(outcome.stop_reason)
        job.model_id = self._register_model(
            job, job.name, job.hyperparameters, outcome, job.metrics, job.history
        )
        if job.baseline_requested:
            job.baseline = self._baseline(job, outcome)
        self._finish(job, "succeeded")

    def _baseline(self, job: JobRecord, outcome: TrainingOutcome) -> JobBaseline:
        """Register the baseline's model (or keep why it failed)."""
        if outcome.baseline is None:
            kind, detail = outcome.baseline_error or ("internal", "it was not trained")
            error = JobError("diverged" if kind == "TrainingDiverged" else "invalid_input", detail)
            return JobBaseline(model_id=None, metrics=None, epochs_run=0, error=error)
        baseline = outcome.baseline
        hp = job.hyperparameters.model_copy(update={"hidden_layers": []})
        metrics = metrics_of(baseline.metrics)
        name = f"{job.name}: logistic regression"
        model_id = self._register_model(job, name, hp, baseline, metrics, baseline.history)
        return JobBaseline(model_id, metrics, baseline.epochs_run, None)

    def _register_model(
        self,
        job: JobRecord,
        name: str,
        hp: Hyperparameters,
        trained: TrainingOutcome,
        metrics: dict[str, float | None],
        history: list[HistoryPoint],
    ) -> str:
        """Register the network `job` trained with `hp` (the job's, or its baseline's); returns
        the model's id."""
        model = Model(
            weights=list(trained.weights),
            biases=list(trained.biases),
            activation=hp.activation,
            classes=job.classes,
            hyperparameters=hp,
            scaler=job.scaler,
            feature_names=job.feature_names,
        )
        record = ModelRecord(
            id=new_id("mdl"),
            name=name,
            model=model,
            job_id=job.id,
            dataset_id=job.dataset_id,
            metrics=metrics,
            history=tuple(history),
            created_at=utc_now(),
        )
        self.registry.models.add(record.id, record)
        return record.id

    def _error(self, job: JobRecord, event: TaskFailed) -> JobError:
        kind = event.error_type
        refused = refusal_error(kind, event.detail)
        if refused is not None:
            return refused
        if kind == "timeout":
            return JobError(
                "timeout",
                f"the job ran longer than job_timeout_seconds = "
                f"{self.settings.job_timeout_seconds:g}; use fewer epochs or a smaller network",
            )
        if kind == "worker_lost":
            return JobError(
                "worker_lost",
                "the worker process running the job stopped unexpectedly (killed or out of "
                "memory); submit the job again",
            )
        logger.error("job %s failed with %s: %s", job.id, kind, event.detail)
        return JobError("internal", "an internal error stopped the job")

    @staticmethod
    def _finish(job: JobRecord, status: JobStatus) -> None:
        job.status = status
        job.finished_at = utc_now()
        if job.started_at is None and status != "cancelled":
            job.started_at = job.finished_at

    # --- subscriptions -----------------------------------------------------------------------

    def snapshot(self, job_id: str, after_epoch: int) -> JobSnapshot:
        """The job (a copy) and its history points with epoch > after_epoch."""
        with self.registry.lock:
            job = self.require(job_id)
            points = [point for point in job.history if point["epoch"] > after_epoch]
            copy = JobRecord(**{**job.__dict__, "history": []})
        return JobSnapshot(job=copy, new_points=points)

    def follow(
        self,
        job_id: str,
        after_epoch: int,
        render: Callable[[JobSnapshot], list[Any]],
        stopping: anyio.Event,
    ) -> AsyncIterator[Any]:
        """Rendered events for points after `after_epoch`, as they are recorded; the stream ends
        after the job finishes, or when `stopping` is set (the server is shutting down)."""
        self.require(job_id)
        cursor = after_epoch

        def step() -> tuple[list[Any], bool]:
            nonlocal cursor
            snapshot = self.snapshot(job_id, cursor)
            if snapshot.new_points:
                cursor = snapshot.new_points[-1]["epoch"]
            return render(snapshot), snapshot.job.finished

        return self._subscribers.follow(job_id, step, stopping, lambda: self.closing)


def stop_reason(value: str | None) -> StopReason | None:
    if value in ("completed", "early_stopping", "time_budget"):
        return value  # type: ignore[return-value]
    return None
