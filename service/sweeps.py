"""Sweep bookkeeping: the grid, limits, submission as worker tasks, executor events -> sweep
state, models, cancellation and the notifications that drive event streams.

A sweep's configurations are split between the workers (`engine.packed.partition` balances
the estimated time and decides which configurations train packed together); each share is one
executor task, id `<sweep id>.<share>`, run by `service.sweep_tasks.SweepTask`. The executor's
events reach `SweepManager.on_event` (JobManager routes task ids starting with `swp_` here);
every change happens under the registry lock, then wakes the sweep's subscribers.

Status. A sweep is `running` once any share started. When every share has ended it is
`cancelled` if a cancel was asked for (finished configurations keep their results and models),
otherwise `succeeded` if at least one configuration succeeded, else `failed`. Configurations
fail alone (diverged, invalid); a share that fails as a whole (timeout, worker lost) fails its
unfinished configurations.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import anyio
from pydantic import JsonValue, ValidationError

from engine.hyperparameters import Hyperparameters
from engine.model import Label, Model, Scaler
from engine.packed import DataShape, partition
from service.errors import Conflict, InvalidRequest, LimitExceeded, NotFound, NotReady
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
from service.jobs import (
    JobManager,
    check_limits,
    metrics_of,
    n_parameters,
    queue_full,
    refusal_error,
    stop_reason,
)
from service.registry import (
    FINISHED,
    DatasetRecord,
    HistoryPoint,
    JobError,
    JobStatus,
    ModelRecord,
    Registry,
    StopReason,
    Store,
    new_id,
    utc_now,
)
from service.settings import Settings
from service.streams import Subscribers
from service.sweep_schemas import SweepCreate
from service.sweep_tasks import ConfigurationIndex, SweepTask

logger = logging.getLogger("service.sweeps")

TASK_PREFIX = "swp_"
BASELINE_LABEL = "logistic regression"

Grid = dict[str, list[JsonValue]]  # hyperparameter name -> the values to try


@dataclass
class ConfigurationRecord:
    """One configuration of a sweep (or its baseline). Changes only under the registry lock."""

    index: ConfigurationIndex
    hyperparameters: Hyperparameters
    varied: dict[str, JsonValue]
    share: str = ""  # the task that trains it
    status: JobStatus = "queued"
    history: list[HistoryPoint] = field(default_factory=list)
    metrics: dict[str, float | None] | None = None
    epochs_run: int = 0
    seconds: float | None = None
    model_id: str | None = None
    error: JobError | None = None
    stop_reason: StopReason | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def label(self) -> str:
        """What sets it apart, for titles and legends: `hidden_layers=[3], l2=0.01`."""
        if self.index is None:
            return BASELINE_LABEL
        return ", ".join(f"{key}={json.dumps(value)}" for key, value in self.varied.items())


# (kind, configuration, position in its history): one event of a sweep's stream, in order
StreamEntry = tuple[Literal["point", "result"], ConfigurationIndex, int]


@dataclass
class SweepRecord:
    """A sweep. Mutable fields change only under the registry lock."""

    id: str
    name: str
    dataset_id: str
    base: Hyperparameters
    grid: Grid
    created_at: datetime
    n_features: int
    train_size: int
    test_size: int
    classes: tuple[Label, ...]
    feature_names: tuple[str, ...]
    scaler: Scaler | None
    configurations: list[ConfigurationRecord]
    baseline: ConfigurationRecord | None
    status: JobStatus = "queued"
    submitted: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    shares: dict[str, bool] = field(default_factory=dict)  # task id -> ended
    stream: list[StreamEntry] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def rows(self) -> list[ConfigurationRecord]:
        """The grid's configurations, then the baseline if any."""
        return self.configurations + ([self.baseline] if self.baseline is not None else [])

    def row(self, index: ConfigurationIndex) -> ConfigurationRecord:
        if index is None:
            assert self.baseline is not None
            return self.baseline
        return self.configurations[index]

    def best_index(self) -> int | None:
        """The succeeded configuration with the lowest test loss (training loss without a test
        split); the first such on ties."""
        which = "test_loss" if self.test_size else "train_loss"
        best: tuple[float, int] | None = None
        for row in self.configurations:
            if row.status == "succeeded" and row.metrics and row.metrics.get(which) is not None:
                value = float(row.metrics[which])  # type: ignore[arg-type]
                if best is None or value < best[0]:
                    best = (value, int(row.index))  # type: ignore[arg-type]
        return None if best is None else best[1]


@dataclass(frozen=True)
class SweepSnapshot:
    """A consistent copy of a sweep and the stream entries after a cursor, with the data each
    entry shows (points, or rows copied at the time)."""

    sweep: SweepRecord
    entries: list[tuple[int, StreamEntry, HistoryPoint | ConfigurationRecord]]


# -- the grid ------------------------------------------------------------------------------------


def _issue(exc: ValidationError, key: str) -> str:
    """The message pydantic gave for field `key`."""
    for error in exc.errors():
        if error.get("loc", ())[:1] == (key,):
            return str(error.get("msg", "invalid value"))
    return "; ".join(str(error.get("msg")) for error in exc.errors()) or "invalid value"


def expand_grid(
    base: Hyperparameters, grid: Grid, limit: int
) -> tuple[list[tuple[Hyperparameters, dict[str, JsonValue]]], Grid]:
    """Every configuration of the grid (keys in order, the last varying fastest) with the values
    that set it apart, and the grid's values as validated (`1` -> 1.0 for a float). 422 naming
    the key and value for an unknown key, an empty list, a repeated or invalid value, or more
    than `limit` configurations."""
    fields = Hyperparameters.model_fields
    shared = base.model_dump()
    validated: dict[str, list[JsonValue]] = {}
    for key, values in grid.items():
        where: list[str | int] = ["body", "grid", key]
        if key not in fields:
            raise InvalidRequest.at(
                where,
                f"{key!r} is not a hyperparameter; choose from {', '.join(sorted(fields))}",
                "unknown_hyperparameter",
            )
        if not values:
            raise InvalidRequest.at(where, "give at least one value to try", "too_short")
        seen: dict[str, int] = {}
        validated[key] = []
        for position, value in enumerate(values):
            try:
                checked = Hyperparameters.model_validate({**shared, key: value})
            except ValidationError as exc:
                raise InvalidRequest.at(
                    [*where, position], f"value {json.dumps(value)}: {_issue(exc, key)}"
                ) from None
            plain = checked.model_dump(mode="json")[key]
            canonical = json.dumps(plain, sort_keys=True)
            if canonical in seen:
                raise InvalidRequest.at(
                    [*where, position],
                    f"value {json.dumps(value)} repeats value {seen[canonical]}; each value once",
                    "duplicate_value",
                )
            seen[canonical] = position
            validated[key].append(plain)
    sizes = [len(values) for values in validated.values()]
    count = math.prod(sizes)
    if count > limit:
        raise LimitExceeded.at(
            ["body", "grid"],
            f"the grid asks for {count} configurations ({' x '.join(map(str, sizes))}), more "
            f"than max_sweep_configurations = {limit}; try fewer values",
            "limit_exceeded",
        )
    configurations = []
    keys = list(validated)
    for combination in itertools.product(*validated.values()):
        varied = dict(zip(keys, combination, strict=True))
        try:
            hp = Hyperparameters.model_validate({**shared, **varied})
        except ValidationError as exc:  # a rule across fields
            raise InvalidRequest.at(
                ["body", "grid"],
                f"configuration {json.dumps(varied)} is invalid: {_issue(exc, keys[0])}",
            ) from None
        configurations.append((hp, varied))
    return configurations, validated


def _check_configuration(
    hp: Hyperparameters,
    varied: dict[str, JsonValue],
    grid: Grid,
    dataset: DatasetRecord,
    settings: Settings,
) -> None:
    """A job's limits, for one configuration; the 422 names the grid value (or base field)."""
    try:
        check_limits(hp, dataset, settings)
    except InvalidRequest as exc:
        issue = exc.errors[0] if exc.errors else None
        field_name = str(issue.loc[2]) if issue is not None and len(issue.loc) > 2 else ""
        if field_name in varied:
            position = grid[field_name].index(varied[field_name])
            where: list[str | int] = ["body", "grid", field_name, position]
            name = f"configuration {json.dumps(varied)}"
        elif varied:
            where, name = ["body", "base", field_name], f"configuration {json.dumps(varied)}"
        else:
            where, name = ["body", "baseline"], "the baseline"
        message = issue.msg if issue is not None else exc.detail
        kind = issue.type if issue is not None else "value_error"
        raise type(exc).at(where, f"{name}: {message}", kind) from None


def _work(hp: Hyperparameters, dataset: DatasetRecord) -> int:
    widths = [dataset.dataset.n_features, *hp.hidden_layers, dataset.dataset.n_classes]
    return dataset.train_size * n_parameters(widths) * hp.epochs


def _error_of(kind: str, detail: str, settings: Settings) -> JobError:
    """A failed configuration's (or share's) error, as jobs report them."""
    refused = refusal_error(kind, detail)
    if refused is not None:
        return refused
    if kind == "timeout":
        return JobError(
            "timeout",
            f"the sweep's share ran longer than job_timeout_seconds = "
            f"{settings.job_timeout_seconds:g}; use fewer epochs or configurations",
        )
    if kind == "worker_lost":
        return JobError(
            "worker_lost",
            "the worker process training this configuration stopped unexpectedly (killed or out "
            "of memory); submit the sweep again",
        )
    logger.error("a sweep share failed with %s: %s", kind, detail)
    return JobError("internal", "an internal error stopped the configuration")


class SweepManager:
    """Owns sweep state transitions; routes and the executor listener go through it."""

    def __init__(
        self, registry: Registry, executor: Executor, settings: Settings, jobs: JobManager
    ) -> None:
        self.registry = registry
        self.executor = executor
        self.settings = settings
        self.jobs = jobs  # knows whether the workers started, and when the service closes
        self.sweeps: Store[SweepRecord] = Store(registry.lock)
        self._idempotency = IdempotencyKeys("sweep")
        self._subscribers = Subscribers(registry.lock)

    # --- requests ----------------------------------------------------------------------------

    def submit(self, body: SweepCreate, idempotency_key: str | None) -> tuple[SweepRecord, bool]:
        """Check the grid and limits, then queue the sweep's shares; returns (sweep, created).
        A repeated Idempotency-Key with the same body returns its sweep."""
        self.jobs.require_started()
        body_fingerprint = fingerprint(body)
        registry = self.registry
        with registry.lock:
            existing = self._idempotency.replay(idempotency_key, body_fingerprint, self.sweeps.get)
            if existing is not None:
                return existing, False
            dataset = registry.datasets.get(body.dataset_id)
            if dataset is None:
                raise InvalidRequest.at(
                    ["body", "dataset_id"], f"dataset {body.dataset_id} does not exist", "not_found"
                )
            sweep = self._new_sweep(body, dataset)
            self.sweeps.add(sweep.id, sweep)
            self._idempotency.reserve(idempotency_key, body_fingerprint)
        try:
            self._queue(sweep, dataset)
        except BaseException:
            with registry.lock:
                self.sweeps.remove(sweep.id)
                self._idempotency.release(idempotency_key)
            raise
        with registry.lock:
            sweep.submitted = True
            self._idempotency.record(idempotency_key, body_fingerprint, sweep.id)
        return sweep, True

    def _new_sweep(self, body: SweepCreate, dataset: DatasetRecord) -> SweepRecord:
        settings = self.settings
        expanded, grid = expand_grid(body.base, body.grid, settings.max_sweep_configurations)
        rows = [
            ConfigurationRecord(index=i, hyperparameters=hp, varied=varied)
            for i, (hp, varied) in enumerate(expanded)
        ]
        baseline = None
        if body.baseline:
            baseline_hp = body.base.model_copy(update={"hidden_layers": []})
            baseline = ConfigurationRecord(index=None, hyperparameters=baseline_hp, varied={})
        work = 0
        for row in rows + ([baseline] if baseline else []):
            _check_configuration(row.hyperparameters, row.varied, grid, dataset, settings)
            work += _work(row.hyperparameters, dataset)
        if work > settings.max_work:
            raise LimitExceeded.at(
                ["body", "grid"],
                f"this sweep needs {work:.3g} units of work in all (training points x parameters "
                f"x epochs, summed over its {len(rows)} configurations"
                f"{' and the baseline' if baseline else ''}), over max_work = "
                f"{settings.max_work:.3g}; use fewer configurations, epochs or units",
                "limit_exceeded",
            )
        data = dataset.dataset
        return SweepRecord(
            id=new_id("swp"),
            name=body.name or dataset.name,
            dataset_id=dataset.id,
            base=body.base,
            grid=grid,
            created_at=utc_now(),
            n_features=data.n_features,
            train_size=dataset.train_size,
            test_size=dataset.test_size,
            classes=data.classes,
            feature_names=data.feature_names,
            scaler=dataset.split.scaler,
            configurations=rows,
            baseline=baseline,
        )

    def _queue(self, sweep: SweepRecord, dataset: DatasetRecord) -> None:
        """One task per worker share; all or none are queued."""
        rows = sweep.rows()
        shape = DataShape(
            sweep.train_size, sweep.test_size, sweep.n_features, dataset.dataset.n_classes
        )
        parts = max(1, min(self.executor.worker_count, len(rows)))
        shares = partition([row.hyperparameters for row in rows], shape, parts)
        split = dataset.split
        has_test = dataset.test_size > 0
        tasks: list[tuple[str, SweepTask]] = []
        for number, packs in enumerate(shares):
            members = sorted(i for pack in packs for i in pack)
            position = {i: p for p, i in enumerate(members)}
            task_id = f"{sweep.id}.{number}"
            for i in members:
                rows[i].share = task_id
            task = SweepTask(
                configurations=tuple((rows[i].index, rows[i].hyperparameters) for i in members),
                packs=tuple(tuple(position[i] for i in pack) for pack in packs),
                X_train=split.X_train,
                y_train=split.y_train,
                X_test=split.X_test if has_test else None,
                y_test=split.y_test if has_test else None,
                n_classes=dataset.dataset.n_classes,
            )
            tasks.append((task_id, task))
        with self.registry.lock:
            sweep.shares = {task_id: False for task_id, _task in tasks}
        queued: list[str] = []
        try:
            for task_id, task in tasks:
                self.executor.submit(
                    task_id, task, deadline_seconds=self.settings.job_timeout_seconds
                )
                queued.append(task_id)
        except QueueFull as exc:
            for task_id in queued:
                self.executor.cancel(task_id)
            raise queue_full(exc, self.settings) from None
        except BaseException as exc:
            for task_id in queued:
                self.executor.cancel(task_id)
            if isinstance(exc, RuntimeError):  # the executor is stopping (or failed to start)
                raise NotReady(
                    "the training workers are not taking work (the service is shutting down)",
                    headers={"Retry-After": "5"},
                ) from None
            raise

    def require(self, sweep_id: str) -> SweepRecord:
        sweep = self.sweeps.get(sweep_id)
        if sweep is None or not sweep.submitted:
            raise NotFound(f"sweep {sweep_id} does not exist")
        return sweep

    def select(self, status: str | None = None) -> list[SweepRecord]:
        return self.sweeps.select(
            lambda sweep: sweep.submitted and (status is None or sweep.status == status)
        )

    def cancel(self, sweep_id: str) -> SweepRecord:
        """Stop the unfinished configurations; finished ones keep their results and models."""
        with self.registry.lock:
            sweep = self.require(sweep_id)
            if sweep.finished:
                raise Conflict(
                    f"sweep {sweep_id} is already {sweep.status}; only queued or running sweeps "
                    "can be cancelled"
                )
            sweep.cancel_requested = True
            running = [task_id for task_id, ended in sweep.shares.items() if not ended]
        for task_id in running:
            self.executor.cancel(task_id)
        return sweep

    def uses_dataset(self, dataset_id: str) -> list[str]:
        """Ids of queued or running sweeps that train on `dataset_id`."""
        return [
            sweep.id
            for sweep in self.sweeps.select(
                lambda sweep: sweep.dataset_id == dataset_id and not sweep.finished
            )
        ]

    def counts_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "running", "succeeded", "failed", "cancelled"), 0)
        with self.registry.lock:
            for sweep in self.select():
                counts[sweep.status] += 1
        return counts

    # --- executor events (executor thread) --------------------------------------------------

    def on_event(self, event: TaskEvent) -> None:
        sweep_id = event.task_id.rpartition(".")[0]
        try:
            self._apply(sweep_id, event)
        except Exception:  # never let bookkeeping kill the executor's thread
            logger.exception("could not apply %r", event)
        self._subscribers.wake(sweep_id)

    def _apply(self, sweep_id: str, event: TaskEvent) -> None:
        with self.registry.lock:
            sweep = self.sweeps.get(sweep_id)
            if sweep is None or sweep.finished or sweep.shares.get(event.task_id) is not False:
                return
            now = utc_now()
            if isinstance(event, TaskStarted | TaskProgress):
                self._start(sweep, event.task_id, now)
            if isinstance(event, TaskProgress):
                for item in event.items:
                    if isinstance(item, dict):
                        self._progress(sweep, item)
                return
            if isinstance(event, TaskStarted):
                return
            if isinstance(event, TaskSucceeded):
                leftover: tuple[JobStatus, JobError | None] = (
                    "failed",
                    JobError("internal", "the configuration ended without a result"),
                )
            elif isinstance(event, TaskCancelled) or (
                isinstance(event, TaskFailed) and event.error_type == "TrainingCancelled"
            ):
                leftover = ("cancelled", None)
            else:
                assert isinstance(event, TaskFailed)
                leftover = ("failed", _error_of(event.error_type, event.detail, self.settings))
            for row in sweep.rows():
                if row.share == event.task_id and not row.finished:
                    self._end_row(sweep, row, leftover[0], leftover[1])
            sweep.shares[event.task_id] = True
            if all(sweep.shares.values()):
                self._finish(sweep, now)

    @staticmethod
    def _start(sweep: SweepRecord, task_id: str, now: datetime) -> None:
        if sweep.status == "queued":
            sweep.status = "running"
            sweep.started_at = now
        for row in sweep.rows():
            if row.share == task_id and row.status == "queued":
                row.status = "running"

    def _progress(self, sweep: SweepRecord, item: dict[str, Any]) -> None:
        index = item.get("index")
        if index is not None and not 0 <= index < len(sweep.configurations):
            return
        if index is None and sweep.baseline is None:
            return
        row = sweep.row(index)
        if row.finished:
            return
        if item.get("kind") == "point":
            point = {key: value for key, value in item.items() if key not in ("kind", "index")}
            if row.history and point["epoch"] <= row.history[-1]["epoch"]:
                return
            row.history.append(point)
            row.epochs_run = int(point["epoch"])
            row.metrics = metrics_of(point)
            sweep.stream.append(("point", index, len(row.history) - 1))
            return
        if item.get("kind") != "finished":
            return
        row.seconds = item.get("seconds")
        row.epochs_run = int(item.get("epochs_run") or row.epochs_run)
        if item.get("status") == "succeeded":
            row.metrics = dict(item["metrics"])
            row.stop_reason = stop_reason(item.get("stop_reason"))
            row.model_id = self._register_model(sweep, row, item)
            self._end_row(sweep, row, "succeeded", None)
        else:
            error = _error_of(
                str(item.get("error_type")), str(item.get("error_detail")), self.settings
            )
            self._end_row(sweep, row, "failed", error)

    def _register_model(
        self, sweep: SweepRecord, row: ConfigurationRecord, item: dict[str, Any]
    ) -> str:
        hp = row.hyperparameters
        model = Model(
            weights=list(item["weights"]),
            biases=list(item["biases"]),
            activation=hp.activation,
            classes=sweep.classes,
            hyperparameters=hp,
            scaler=sweep.scaler,
            feature_names=sweep.feature_names,
        )
        record = ModelRecord(
            id=new_id("mdl"),
            name=f"{sweep.name}: {row.label}",
            model=model,
            job_id=None,
            dataset_id=sweep.dataset_id,
            metrics=row.metrics,
            history=tuple(row.history),
            created_at=utc_now(),
            sweep_id=sweep.id,
        )
        self.registry.models.add(record.id, record)
        return record.id

    @staticmethod
    def _end_row(
        sweep: SweepRecord, row: ConfigurationRecord, status: JobStatus, error: JobError | None
    ) -> None:
        row.status = status
        row.error = error
        sweep.stream.append(("result", row.index, len(row.history)))

    @staticmethod
    def _finish(sweep: SweepRecord, now: datetime) -> None:
        if sweep.cancel_requested and any(r.status == "cancelled" for r in sweep.rows()):
            sweep.status = "cancelled"
        elif any(row.status == "succeeded" for row in sweep.configurations):
            sweep.status = "succeeded"
        elif sweep.cancel_requested:
            sweep.status = "cancelled"
        else:
            sweep.status = "failed"
        sweep.finished_at = now
        if sweep.started_at is None and sweep.status != "cancelled":
            sweep.started_at = now

    # --- subscriptions -----------------------------------------------------------------------

    def wake_all(self) -> None:
        """Wake every event stream (the service is closing)."""
        self._subscribers.wake_all()

    def open_streams(self) -> int:
        return self._subscribers.count()

    def snapshot(self, sweep_id: str, after: int = 0) -> SweepSnapshot:
        """The sweep (a copy) and its stream entries numbered > after (numbers start at 1)."""
        with self.registry.lock:
            sweep = self.require(sweep_id)
            entries: list[tuple[int, StreamEntry, HistoryPoint | ConfigurationRecord]] = []
            for number in range(after + 1, len(sweep.stream) + 1):
                entry = sweep.stream[number - 1]
                kind, index, position = entry
                row = sweep.row(index)
                shown = row.history[position] if kind == "point" else replace(row, history=[])
                entries.append((number, entry, shown))
            copy = replace(
                sweep,
                configurations=[replace(row, history=[]) for row in sweep.configurations],
                baseline=replace(sweep.baseline, history=[]) if sweep.baseline else None,
                shares=dict(sweep.shares),
                stream=[],
            )
        return SweepSnapshot(sweep=copy, entries=entries)

    def histories(self, sweep_id: str) -> list[tuple[ConfigurationRecord, list[HistoryPoint]]]:
        """Every row (a copy) with a copy of its history."""
        with self.registry.lock:
            sweep = self.require(sweep_id)
            return [(replace(row, history=[]), list(row.history)) for row in sweep.rows()]

    def follow(
        self,
        sweep_id: str,
        after: int,
        render: Callable[[SweepSnapshot], list[Any]],
        stopping: anyio.Event,
    ) -> AsyncIterator[Any]:
        """Rendered events for stream entries after `after`, as they happen; the stream ends
        after the sweep finishes, or when `stopping` is set (the server is shutting down)."""
        self.require(sweep_id)
        cursor = after

        def step() -> tuple[list[Any], bool]:
            nonlocal cursor
            snapshot = self.snapshot(sweep_id, cursor)
            if snapshot.entries:
                cursor = snapshot.entries[-1][0]
            return render(snapshot), snapshot.sweep.finished

        return self._subscribers.follow(sweep_id, step, stopping, lambda: self.jobs.closing)
