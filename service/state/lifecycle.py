"""One lifecycle for all training work; jobs and sweeps are two kinds of it.

    submit ─► queued ─► running ─► succeeded | failed | cancelled      (finished: never changes)

A kind (`service.state.job_kind`, `service.state.sweep_kind`) supplies only what differs: how
a request becomes a record and executor tasks, what progress and success do to the record, how
a stop ends it, and what its event stream shows. `Lifecycle` does the rest, once: the
Idempotency-Key, the all-or-none submission with rollback, lookups and counts, cancel, executor
events applied to the record in one atomic update each (then its subscribers woken), the start
and finish rules, failures worded for clients, model registration and following a record live.

The dispatcher calls the handlers from the executor's thread; routes call the rest.
"""

from __future__ import annotations

import abc
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

import anyio
import numpy as np

from engine.datasets import Split
from engine.hyperparameters import Hyperparameters
from engine.model import Model, Scaler
from engine.training import HistoryPoint
from service.errors import Conflict, InvalidRequest, NotFound, NotReady, TooManyJobs
from service.execution.dispatcher import Dispatcher
from service.execution.executor import (
    Failure,
    QueueFull,
    Task,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from service.execution.tasks import PreparedSplit, TaskError, TrainingOutcome
from service.logs import get_logger
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.state.callers import EVERYONE, Caller
from service.state.idempotency import IdempotencyClaim
from service.state.records import (
    STATUSES,
    DatasetContent,
    DatasetRecord,
    Metrics,
    ModelContent,
    ModelRecord,
    WorkError,
    WorkRecord,
    WorkStatus,
    new_id,
    objective_for,
    utc_now,
)
from service.state.store import Collection, Store
from service.state.subscribers import Subscribers

logger = logging.getLogger("service.lifecycle")
work_log = get_logger("service.work")

R = TypeVar("R", bound=WorkRecord)
S = TypeVar("S", bound="Submission")

# Runs a piece of work gets: one interrupted by a restart runs again once, then fails.
MAX_ATTEMPTS = 2
# What a caller at its max_active_jobs_per_key is told to wait: about one short job.
QUOTA_RETRY_SECONDS = 5
Entry = TypeVar("Entry")
Rendered = TypeVar("Rendered")


@dataclass(frozen=True)
class Wording:
    """How a kind of work names itself in failures shown to clients. What a kind leaves None
    names the work itself ("the job"): a kind whose parts fail alone names the part."""

    timeout_advice: str  # what to change when it ran longer than job_timeout_seconds
    timed_out: str | None = None  # what ran too long
    lost: str | None = None  # what a worker process stopped unexpectedly while running
    internal: str | None = None  # what an internal error stopped


def refusal_error(error: TaskError) -> WorkError | None:
    """The error of a run the engine refused (it diverged, or its input was invalid); None for
    other kinds of failure."""
    if error.kind is Failure.DIVERGED:
        advice = "" if "learning rate" in error.detail else "; lower the learning_rate"
        return WorkError("diverged", error.detail + advice)
    if error.kind is Failure.INVALID_INPUT:
        return WorkError("invalid_input", error.detail)
    return None


def prepared(content: DatasetContent, scaled_as: Model | None = None) -> PreparedSplit:
    """A dataset's split as a task carries it (no test arrays without a test split); with
    `scaled_as`, its points scaled as that model scales its inputs (the split as it is when the
    two scalers agree)."""
    split, has_test = content.split, content.split.test_index.size > 0
    X_train, X_test = split.X_train, split.X_test
    y_train, y_test, target_scaler = split.y_train, split.y_test, split.target_scaler
    if scaled_as is not None and not same_scaler(scaled_as.scaler, split.scaler):
        X_train, X_test = _scaled(content.dataset.X, split, scaled_as.scaler)
    if scaled_as is not None and not same_scaler(scaled_as.target_scaler, target_scaler):
        # regression: the model's outputs are in its own target units
        target_scaler = scaled_as.target_scaler
        y_train, y_test = _scaled(content.dataset.y, split, target_scaler)
    return PreparedSplit(
        X_train=X_train,
        y_train=y_train,
        X_test=X_test if has_test else None,
        y_test=y_test if has_test else None,
        n_classes=content.dataset.n_outputs,
        objective=objective_for(content.dataset.task, target_scaler),
    )


def _scaled(raw: np.ndarray, split: Split, scaler: Scaler | None) -> tuple[np.ndarray, np.ndarray]:
    """The training and test parts of `raw` (the dataset's X or y), scaled by `scaler`."""
    train, test = raw[split.train_index], raw[split.test_index]
    if scaler is None:
        return train, test
    return scaler.transform(train), scaler.transform(test)


def same_scaler(one: Scaler | None, other: Scaler | None) -> bool:
    if one is None or other is None:
        return one is other
    return np.array_equal(one.mean, other.mean) and np.array_equal(one.scale, other.scale)


@dataclass(frozen=True, kw_only=True)
class Submission:
    """A request to train, as every kind takes it; a kind's subclass adds its options."""

    dataset_id: str
    name: str | None  # None: the dataset's name
    baseline: bool  # also train the logistic-regression baseline
    claim: IdempotencyClaim | None
    caller: Caller = EVERYONE


@dataclass(frozen=True)
class Snapshot(Generic[R, Entry]):
    """A consistent copy of a record and what its stream shows after a cursor."""

    record: R
    entries: list[Entry]
    cursor: int  # where the next snapshot starts


@dataclass(eq=False)
class Lifecycle(abc.ABC, Generic[R, Entry, S]):
    """The lifecycle of one kind of work, its records kept in `collection`, submitted as `S`."""

    noun: ClassVar[str]  # "job", "sweep"
    wording: ClassVar[Wording]

    store: Store
    collection: Collection[R]
    dispatcher: Dispatcher
    settings: Settings
    metrics: ServiceMetrics

    def __post_init__(self) -> None:
        self._keys = self.store.idempotency(self.noun)
        self._subscribers = Subscribers()
        self._recovered: list[tuple[str, list[tuple[str, Task]]]] = []
        self.dispatcher.when_closing(self._subscribers.wake_all)

    # --- what a kind supplies ----------------------------------------------------------------

    @abc.abstractmethod
    def _build(
        self, request: S, dataset: DatasetRecord, content: DatasetContent
    ) -> tuple[R, list[tuple[str, Task]]]:
        """The record `request` makes from the dataset, and its tasks (422 past a limit)."""

    @abc.abstractmethod
    def _accepts(self, record: R, task_id: str) -> bool:
        """Whether an event of task `task_id` may still change `record` (not yet finished)."""

    @abc.abstractmethod
    def _started(self, record: R, task_id: str, event: TaskStarted, now: datetime) -> None: ...

    @abc.abstractmethod
    def _progress(self, record: R, task_id: str, items: Sequence[Any], now: datetime) -> None: ...

    @abc.abstractmethod
    def _succeeded(self, record: R, task_id: str, result: Any, now: datetime) -> None: ...

    @abc.abstractmethod
    def _stopped(self, record: R, task_id: str, error: WorkError | None, now: datetime) -> None:
        """Task `task_id` ended without success: cancelled (`error` None) or failed."""

    @abc.abstractmethod
    def _unfinished_tasks(self, record: R) -> list[str]:
        """The ids of the record's tasks that have not ended (what cancel stops)."""

    @abc.abstractmethod
    def _view(self, record: R, after: int) -> Snapshot[R, Entry]:
        """The snapshot of `record` after cursor `after` (called inside the store's read)."""

    # --- requests ----------------------------------------------------------------------------

    def require_started(self) -> None:
        """503 while the training workers are still starting, or once the service is stopping."""
        if self.dispatcher.closing:
            raise NotReady(
                f"the service is shutting down and takes no new {self.noun}s; retry shortly",
                headers={"Retry-After": "5"},
            )
        if not self.dispatcher.started:
            raise NotReady(
                "the training workers are still starting; retry shortly",
                headers={"Retry-After": "1"},
            )

    def submit(self, request: S) -> tuple[R, bool]:
        """Create the record `request` makes from its dataset and queue its tasks, all or none;
        returns (record, created). A repeated Idempotency-Key (of the same caller) returns its
        record. 429 when the caller has max_active_jobs_per_key queued or running."""
        dataset_id, claim, caller = request.dataset_id, request.claim, request.caller
        self.require_started()
        if claim is not None:  # keys are per caller: names hold no ":"
            claim = replace(claim, key=f"{caller.name or ''}:{claim.key}")
        with self.store.atomic():
            existing = self._keys.replay(claim, self.collection.get)
            if existing is not None:
                return existing, False
            dataset = self.store.datasets.get(dataset_id)
            if dataset is None or not caller.sees(dataset.owner):
                raise InvalidRequest.at(
                    ["body", "dataset_id"], f"dataset {dataset_id} does not exist", "not_found"
                )
            self._check_quota(caller)
            content = self.store.datasets.content(dataset_id)
            if content is None:
                raise InvalidRequest.at(
                    ["body", "dataset_id"], f"dataset {dataset_id} does not exist", "not_found"
                )
            record, tasks = self._build(request, dataset, content)
            record.owner = caller.name
            self.collection.add(record)
            self._keys.reserve(claim)
        queued: list[str] = []
        try:
            # outside atomic(): the executor may deliver events from its thread meanwhile
            handler = functools.partial(self._handle, record.id)
            for task_id, task in tasks:
                timeout = self.settings.job_timeout_seconds
                self.dispatcher.submit(task_id, task, handler, timeout, owner=record.owner)
                queued.append(task_id)
        except BaseException as exc:
            for task_id in queued:
                self.dispatcher.cancel(task_id)
            with self.store.atomic():
                self.collection.remove(record.id)
                self._keys.release(claim)
            if isinstance(exc, RuntimeError):  # the executor is stopping (or failed to start)
                raise NotReady(
                    f"the training workers are not taking {self.noun}s (the service is "
                    "shutting down)",
                    headers={"Retry-After": "5"},
                ) from None
            if isinstance(exc, QueueFull):
                raise TooManyJobs(
                    f"{exc.queued} jobs are already waiting for a worker (max_queued_jobs = "
                    f"{self.settings.max_queued_jobs}); retry after {exc.retry_after_seconds} s",
                    headers={"Retry-After": str(max(1, exc.retry_after_seconds))},
                ) from None
            raise
        with self.store.atomic():
            self.collection.update(record.id, _mark_submitted)
            self._keys.record(claim, record.id)
        return self.require(record.id), True

    def _check_quota(self, caller: Caller) -> None:
        limit = self.settings.max_active_jobs_per_key
        active = sum(
            work.count(lambda r: r.owner == caller.name and not r.finished)
            for work in (self.store.jobs, self.store.sweeps)
        )
        if active >= limit:
            whose = f"key {caller.name!r} has" if caller.name else "there are"
            raise TooManyJobs(
                f"{whose} {active} jobs and sweeps queued or running (max_active_jobs_per_key "
                f"= {limit}); retry once one has finished",
                headers={"Retry-After": str(QUOTA_RETRY_SECONDS)},
            )

    def require(self, record_id: str, caller: Caller = EVERYONE) -> R:
        """A snapshot of the record; 404 for an id that names no submitted record (or one of
        another caller)."""
        record = self.collection.get(record_id)
        if record is None or not record.submitted or not caller.sees(record.owner):
            raise NotFound(f"{self.noun} {record_id} does not exist")
        return record

    def select(self, status: WorkStatus | None = None, caller: Caller = EVERYONE) -> list[R]:
        return self.collection.select(
            lambda record: (
                record.submitted
                and (status is None or record.status == status)
                and caller.sees(record.owner)
            )
        )

    def counts_by_status(self) -> dict[str, int]:
        def in_status(status: WorkStatus) -> Callable[[R], bool]:
            return lambda record: record.submitted and record.status == status

        return {status: self.collection.count(in_status(status)) for status in STATUSES}

    def uses_dataset(self, dataset_id: str) -> list[str]:
        """Ids of queued or running work that trains on `dataset_id`."""
        return [
            record.id
            for record in self.collection.select(
                lambda record: record.dataset_id == dataset_id and not record.finished
            )
        ]

    def open_streams(self) -> int:
        return self._subscribers.count()

    def cancel(self, record_id: str, caller: Caller = EVERYONE) -> R:
        """Ask queued or running work to stop (409 once it has finished)."""
        self.require(record_id, caller)

        def request(record: R) -> list[str]:
            if record.finished:
                raise Conflict(
                    f"{self.noun} {record_id} is already {record.status}; only queued or "
                    f"running {self.noun}s can be cancelled"
                )
            record.cancel_requested = True
            return self._unfinished_tasks(record)

        for task_id in self.collection.update(record_id, request) or []:
            self.dispatcher.cancel(task_id)
        return self.require(record_id)

    # --- executor events (the executor's thread) ---------------------------------------------

    def _handle(self, record_id: str, event: TaskEvent) -> None:
        try:
            with self.store.atomic():
                self.collection.update(record_id, lambda record: self._apply(record, event))
        except Exception:  # never let bookkeeping kill the executor's thread
            logger.exception("could not apply %r", event)
        self._subscribers.wake(record_id)

    def _apply(self, record: R, event: TaskEvent) -> None:
        task_id = event.task_id
        if record.finished or not self._accepts(record, task_id):
            return
        if self._stopped_by_shutdown(record, event):
            return  # a durable store runs it again at the next start (see resume)
        now = utc_now()
        if isinstance(event, TaskStarted):
            self._started(record, task_id, event, now)
        elif isinstance(event, TaskProgress):
            self._progress(record, task_id, event.items, now)
        elif isinstance(event, TaskSucceeded):
            self._succeeded(record, task_id, event.result, now)
        elif isinstance(event, TaskCancelled):
            self._stopped(record, task_id, None, now)
        else:
            assert isinstance(event, TaskFailed)
            failed = event.kind is not Failure.CANCELLED
            error = self.failure(TaskError(event.kind, event.detail)) if failed else None
            self._stopped(record, task_id, error, now)

    def _stopped_by_shutdown(self, record: R, event: TaskEvent) -> bool:
        stopped = isinstance(event, TaskCancelled) or (
            isinstance(event, TaskFailed) and event.kind is Failure.CANCELLED
        )
        return (
            stopped
            and self.store.durable
            and self.dispatcher.closing
            and not record.cancel_requested
        )

    # --- after a restart -----------------------------------------------------------------

    @abc.abstractmethod
    def _restart(self, record: R, content: DatasetContent, now: datetime) -> list[tuple[str, Task]]:
        """Queue the unfinished parts of `record` again, from their start; returns its tasks."""

    def recover(self) -> None:
        """At start-up, before anything is served: make the work a previous run accepted and
        did not finish queued again. Work that was running runs again from its start once
        (`attempt` 2); interrupted a second time, it fails with `interrupted`. Nothing stays
        `running`. The tasks go to the workers in `submit_recovered` once they are up."""
        now = utc_now()
        for record in self.collection.select(lambda record: not record.finished):
            if not record.submitted:  # the process stopped while accepting it
                self.collection.remove(record.id)
                continue
            try:
                content = self.store.datasets.content(record.dataset_id)
            except Conflict:  # its dataset's content is damaged
                content = None

            def requeue(live: R, content: DatasetContent | None = content) -> list[Any]:
                return self._requeue(live, content, now)

            tasks = self.collection.update(record.id, requeue)
            if tasks:
                self._recovered.append((record.id, tasks))

    def _requeue(
        self, record: R, content: DatasetContent | None, now: datetime
    ) -> list[tuple[str, Task]]:
        interrupted = record.status == "running"
        error: WorkError | None = None
        if record.cancel_requested:
            pass  # it ends cancelled
        elif content is None:
            error = WorkError(
                "interrupted",
                f"the service restarted and dataset {record.dataset_id} could not be read; "
                f"create it again and submit the {self.noun} again",
            )
        elif interrupted and record.attempt >= MAX_ATTEMPTS:
            error = WorkError(
                "interrupted",
                f"the service stopped while this {self.noun} ran, {MAX_ATTEMPTS} times; submit "
                "it again",
            )
        else:
            record.attempt += interrupted
            self._transition(record, "queued", "restarted" if interrupted else "requeued")
            return self._restart(record, content, now)
        for task_id in self._unfinished_tasks(record):
            self._stopped(record, task_id, error, now)
        return []

    def submit_recovered(self) -> None:
        """Hand the recovered work's tasks to the workers (call once they are up)."""
        recovered, self._recovered = self._recovered, []
        for record_id, tasks in recovered:
            handler = functools.partial(self._handle, record_id)
            try:
                owner = self.collection.read(record_id, lambda record: record.owner)
                for task_id, task in tasks:
                    timeout = self.settings.job_timeout_seconds
                    self.dispatcher.submit(
                        task_id, task, handler, timeout, owner=owner, bounded=False
                    )
            except (QueueFull, RuntimeError) as exc:
                error = WorkError(
                    "interrupted",
                    f"the service restarted and could not queue this {self.noun} again "
                    f"({exc}); submit it again",
                )

                def fail(record: R, error: WorkError = error) -> None:
                    for task_id in self._unfinished_tasks(record):
                        self.dispatcher.cancel(task_id)
                        self._stopped(record, task_id, error, utc_now())

                self.collection.update(record_id, fail)

    # --- the rules every kind follows ------------------------------------------------------

    def start(self, record: WorkRecord, now: datetime) -> None:
        if record.status == "queued":
            self._transition(record, "running", None)
            record.status = "running"
            record.started_at = record.started_at or now

    def finish(self, record: WorkRecord, status: WorkStatus, now: datetime) -> None:
        error: WorkError | None = getattr(record, "error", None)
        reason = error.type if error is not None else getattr(record, "stop_reason", None)
        if status == "cancelled":
            reason = "cancel requested" if record.cancel_requested else "service stopping"
        self._transition(record, status, reason)
        record.status = status
        record.finished_at = now
        if record.started_at is None and status != "cancelled":
            record.started_at = now

    def _transition(self, record: WorkRecord, to: WorkStatus, reason: str | None) -> None:
        work_log.info(
            "work",
            kind=self.noun,
            id=record.id,
            key=record.owner,
            attempt=record.attempt,
            **{"from": record.status, "to": to},
            reason=reason,
        )

    def failure(self, error: TaskError) -> WorkError:
        """A failed task's (or configuration's) error as clients see it."""
        refused = refusal_error(error)
        if refused is not None:
            return refused
        words, work = self.wording, f"the {self.noun}"
        if error.kind is Failure.TIMEOUT:
            return WorkError(
                "timeout",
                f"{words.timed_out or work} ran longer than job_timeout_seconds = "
                f"{self.settings.job_timeout_seconds:g}; {words.timeout_advice}",
            )
        if error.kind is Failure.WORKER_LOST:
            lost = words.lost or f"the worker process running {work}"
            return WorkError(
                "worker_lost",
                f"{lost} stopped unexpectedly (killed or out of memory: {error.detail}); "
                f"submit {work} again",
            )
        logger.error("a %s failed with %s: %s", self.noun, error.kind.value, error.detail)
        return WorkError("internal", f"an internal error stopped {words.internal or work}")

    def register_model(
        self,
        record: WorkRecord,
        name: str,
        hp: Hyperparameters,
        trained: TrainingOutcome,
        metrics: Metrics | None,
        history: Sequence[HistoryPoint],
        *,
        job_id: str | None = None,
        sweep_id: str | None = None,
        continued_from: str | None = None,
    ) -> str:
        """Register a network the record trained with `hp` (continuing the training of model
        `continued_from`, if given); returns the model's id."""
        model = replace(
            record.data.model(hp, trained.weights, trained.biases),
            optimizer_state=trained.optimizer_state,
            continued_from=continued_from,
        )
        content = ModelContent(model, tuple(history))
        model_record = ModelRecord.describe(
            content,
            id=new_id("mdl"),
            name=name,
            created_at=utc_now(),
            metrics=metrics,
            job_id=job_id,
            dataset_id=record.dataset_id,
            sweep_id=sweep_id,
            owner=record.owner,
        )
        self.store.models.add(model_record, content)
        return model_record.id

    # --- following ---------------------------------------------------------------------------

    def snapshot(self, record_id: str, after: int, caller: Caller = EVERYONE) -> Snapshot[R, Entry]:
        """The record (a copy) and its stream's entries after cursor `after`."""
        self.require(record_id, caller)
        snapshot = self.collection.read(record_id, lambda record: self._view(record, after))
        if snapshot is None:
            raise NotFound(f"{self.noun} {record_id} does not exist")
        return snapshot

    def follow(
        self,
        record_id: str,
        after: int,
        render: Callable[[Snapshot[R, Entry]], list[Rendered]],
        stopping: anyio.Event,
        caller: Caller = EVERYONE,
    ) -> AsyncIterator[Rendered]:
        """Rendered events for the entries after `after`, as they happen; the stream ends after
        the work finishes, when the service closes, or when `stopping` is set (the server is
        shutting down)."""
        self.require(record_id, caller)
        cursor = after

        def step() -> tuple[list[Rendered], bool]:
            nonlocal cursor
            snapshot = self.snapshot(record_id, cursor)
            cursor = snapshot.cursor
            return render(snapshot), snapshot.record.finished

        return self._subscribers.follow(record_id, step, stopping, lambda: self.dispatcher.closing)


def delete_unused_dataset(
    store: Store, dataset_id: str, kinds: Sequence[Lifecycle[Any, Any, Any]], caller: Caller
) -> None:
    """Forget a dataset in one atomic step: 404 if there is none (for this caller), 409 while
    queued or running work of any kind trains on it."""
    with store.atomic():
        dataset = store.datasets.get(dataset_id)
        if dataset is None or not caller.sees(dataset.owner):
            raise NotFound(f"dataset {dataset_id} does not exist")
        busy = [record_id for kind in kinds for record_id in kind.uses_dataset(dataset_id)]
        if busy:
            raise Conflict(
                f"dataset {dataset_id} is used by {len(busy)} queued or running job(s) or "
                f"sweep(s) ({', '.join(busy[:5])}); cancel them or wait until they finish"
            )
        store.datasets.remove(dataset_id)


def _mark_submitted(record: WorkRecord) -> None:
    record.submitted = True
