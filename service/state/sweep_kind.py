"""Sweeps: a grid of configurations, split into one task per worker share.

A sweep's configurations are split between the workers (`engine.packed.partition` balances
the estimated time and decides which configurations train packed together); each share is one
executor task, id `<sweep id>.<share>`, run by `service.execution.tasks.SweepTask`. A sweep is
the work kind of `service.state.lifecycle` with several tasks; its stream numbers, from 1, every
history point a configuration records and every configuration that ends.

Status. A sweep is `running` once any share started. When every share has ended it is
`cancelled` if a cancel was asked for (finished configurations keep their results and models),
otherwise `succeeded` if at least one configuration succeeded, else `failed`. Configurations
fail alone (diverged, invalid); a share that fails as a whole (timeout, worker lost) fails its
unfinished configurations.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import JsonValue, ValidationError

from engine.hyperparameters import Hyperparameters
from engine.packed import DataShape, partition
from engine.training import HistoryPoint
from service.errors import InsufficientStorage, InvalidRequest, LimitExceeded
from service.execution.executor import Task, TaskStarted
from service.execution.tasks import (
    ConfigurationEnded,
    ConfigurationPoint,
    PreparedSplit,
    SweepTask,
)
from service.settings import Settings
from service.state.callers import EVERYONE, Caller
from service.state.job_kind import baseline_of
from service.state.lifecycle import Lifecycle, Snapshot, Submission, Wording, prepared
from service.state.limits import check_configuration, check_sweep_work, work_units
from service.state.records import (
    ConfigurationRecord,
    DatasetContent,
    DatasetRecord,
    StreamEntry,
    SweepRecord,
    TrainingData,
    WorkError,
    WorkStatus,
    append_point,
    metrics_of,
    new_id,
    utc_now,
)

Grid = dict[str, list[JsonValue]]  # hyperparameter name -> the values to try
# (number, stream entry, what it shows: the point, or the row as it was when it ended)
SweepEntry = tuple[int, StreamEntry, HistoryPoint | ConfigurationRecord]
SweepSnapshot = Snapshot[SweepRecord, SweepEntry]


@dataclass(frozen=True, kw_only=True)
class SweepSubmission(Submission):
    base: Hyperparameters  # what every configuration shares
    grid: Grid


NO_RESULT = WorkError("internal", "the configuration ended without a result")


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


def check_sweep(sweep: SweepRecord, settings: Settings) -> None:
    """Every configuration (and the baseline) within a job's limits, their work summed within
    max_work; the 422 names the grid value."""
    work = 0
    for row in sweep.rows():
        hp = row.hyperparameters
        check_configuration(hp, row.varied, sweep.grid, sweep.data, sweep.dataset_id, settings)
        work += work_units(hp, sweep.data)
    check_sweep_work(work, len(sweep.configurations), sweep.baseline is not None, settings)


# -- the lifecycle -------------------------------------------------------------------------------


class SweepLifecycle(Lifecycle[SweepRecord, SweepEntry, SweepSubmission]):
    noun = "sweep"
    wording = Wording(
        timeout_advice="use fewer epochs or configurations",
        timed_out="the sweep's share",
        lost="the worker process training this configuration",
        internal="the configuration",
    )

    def _build(
        self, request: SweepSubmission, dataset: DatasetRecord, content: DatasetContent
    ) -> tuple[SweepRecord, list[tuple[str, Task]]]:
        """Check the grid and limits; the sweep and one task per worker share."""
        data = TrainingData.of(dataset, content)
        sweep = self._new_sweep(dataset, data, request.base, request.grid, request.name)
        if request.baseline:
            sweep.baseline = ConfigurationRecord(
                None, baseline_of(request.base), varied={}, baseline_label=data.baseline_label
            )
        check_sweep(sweep, self.settings)
        return sweep, self._tasks(sweep, sweep.rows(), prepared(content))

    def _new_sweep(
        self,
        dataset: DatasetRecord,
        data: TrainingData,
        base: Hyperparameters,
        grid: Grid,
        name: str | None,
    ) -> SweepRecord:
        expanded, validated = expand_grid(base, grid, self.settings.max_sweep_configurations)
        return SweepRecord(
            id=new_id("swp"),
            name=name or dataset.name,
            dataset_id=dataset.id,
            created_at=utc_now(),
            data=data,
            base=base,
            grid=validated,
            configurations=[
                ConfigurationRecord(index=i, hyperparameters=hp, varied=varied)
                for i, (hp, varied) in enumerate(expanded)
            ],
            baseline=None,
        )

    def _tasks(
        self, sweep: SweepRecord, rows: list[ConfigurationRecord], split: PreparedSplit
    ) -> list[tuple[str, Task]]:
        """One task per worker share of `rows` (each row learns its share's task id)."""
        data = sweep.data
        shape = DataShape(data.train_size, data.test_size, data.n_features, data.n_classes)
        parts = max(1, min(self.dispatcher.executor.worker_count, len(rows)))
        shares = partition([row.hyperparameters for row in rows], shape, parts)
        first = len(sweep.shares)  # shares of an earlier attempt keep their numbers
        tasks: list[tuple[str, Task]] = []
        for number, packs in enumerate(shares, start=first):
            members = sorted(i for pack in packs for i in pack)
            position = {i: p for p, i in enumerate(members)}
            task_id = f"{sweep.id}.{number}"
            for i in members:
                rows[i].share = task_id
            task = SweepTask(
                configurations=tuple((rows[i].index, rows[i].hyperparameters) for i in members),
                packs=tuple(tuple(position[i] for i in pack) for pack in packs),
                data=split,
            )
            tasks.append((task_id, task))
        sweep.shares.update({task_id: False for task_id, _task in tasks})
        return tasks

    # --- executor events ---------------------------------------------------------------------

    def _accepts(self, sweep: SweepRecord, task_id: str) -> bool:
        return sweep.shares.get(task_id) is False

    def _unfinished_tasks(self, sweep: SweepRecord) -> list[str]:
        return [task_id for task_id, ended in sweep.shares.items() if not ended]

    def _started(self, sweep: SweepRecord, task_id: str, event: TaskStarted, now: datetime) -> None:
        self._start_share(sweep, task_id, now)

    def _start_share(self, sweep: SweepRecord, task_id: str, now: datetime) -> None:
        self.start(sweep, now)
        for row in sweep.rows():
            if row.share == task_id and row.status == "queued":
                row.status = "running"

    def _progress(
        self, sweep: SweepRecord, task_id: str, items: Sequence[Any], now: datetime
    ) -> None:
        self._start_share(sweep, task_id, now)
        for item in items:
            if not isinstance(item, ConfigurationPoint | ConfigurationEnded):
                continue
            index = item.index
            if index is None and sweep.baseline is None:
                continue
            if index is not None and not 0 <= index < len(sweep.configurations):
                continue
            row = sweep.row(index)
            if row.finished:
                continue
            if isinstance(item, ConfigurationPoint):
                if append_point(row.history, item.point):
                    row.epochs_run = item.point.epoch
                    row.metrics = metrics_of(item.point)
                    sweep.stream.append(("point", index, len(row.history) - 1))
            else:
                self._configuration_ended(sweep, row, item)

    def _configuration_ended(
        self, sweep: SweepRecord, row: ConfigurationRecord, ended: ConfigurationEnded
    ) -> None:
        row.seconds = ended.seconds
        row.epochs_run = ended.epochs_run or row.epochs_run
        trained = ended.trained
        if ended.status == "succeeded" and trained is not None:
            row.metrics = dict(trained.metrics)
            row.stop_reason = trained.stop_reason
            try:
                row.model_id = self.register_model(
                    sweep,
                    f"{sweep.name}: {row.label}",
                    row.hyperparameters,
                    trained,
                    row.metrics,
                    row.history,
                    sweep_id=sweep.id,
                )
            except InsufficientStorage as exc:
                self._end_row(sweep, row, "failed", WorkError("insufficient_storage", exc.detail))
                return
            self._end_row(sweep, row, "succeeded", None)
        else:
            error = self.failure(ended.error) if ended.error is not None else NO_RESULT
            self._end_row(sweep, row, "failed", error)

    def _succeeded(self, sweep: SweepRecord, task_id: str, result: Any, now: datetime) -> None:
        self._end_share(sweep, task_id, "failed", NO_RESULT, now)

    def _stopped(
        self, sweep: SweepRecord, task_id: str, error: WorkError | None, now: datetime
    ) -> None:
        self._end_share(sweep, task_id, "cancelled" if error is None else "failed", error, now)

    def _end_share(
        self,
        sweep: SweepRecord,
        task_id: str,
        leftover: WorkStatus,
        error: WorkError | None,
        now: datetime,
    ) -> None:
        """The share's task ended: its unfinished rows end as `leftover`; the sweep finishes
        once every share has ended."""
        for row in sweep.rows():
            if row.share == task_id and not row.finished:
                self._end_row(sweep, row, leftover, error)
        sweep.shares[task_id] = True
        if all(sweep.shares.values()):
            self.finish(sweep, _final_status(sweep), now)

    @staticmethod
    def _end_row(
        sweep: SweepRecord, row: ConfigurationRecord, status: WorkStatus, error: WorkError | None
    ) -> None:
        row.status = status
        row.error = error
        sweep.stream.append(("result", row.index, len(row.history)))

    def _restart(
        self, sweep: SweepRecord, content: DatasetContent, now: datetime
    ) -> list[tuple[str, Task]]:
        """Finished configurations keep their results; the rest train again, from their start,
        in new shares (their recorded points stay: the same seed records the same ones)."""
        unfinished = [row for row in sweep.rows() if not row.finished]
        for row in unfinished:
            row.status = "queued"
        sweep.shares = dict.fromkeys(sweep.shares, True)
        if not any(row.finished for row in sweep.rows()):
            sweep.status, sweep.started_at = "queued", None
        return self._tasks(sweep, unfinished, prepared(content))

    # --- following ---------------------------------------------------------------------------

    def _view(self, sweep: SweepRecord, after: int) -> SweepSnapshot:
        """The sweep (rows without histories) and its stream entries numbered > after."""
        entries: list[SweepEntry] = []
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
        return Snapshot(record=copy, entries=entries, cursor=len(sweep.stream))

    def histories(
        self, sweep_id: str, caller: Caller = EVERYONE
    ) -> list[tuple[ConfigurationRecord, list[HistoryPoint]]]:
        """Every row (a copy) with a copy of its history."""
        sweep = self.require(sweep_id, caller)
        return [(replace(row, history=[]), row.history) for row in sweep.rows()]


def _final_status(sweep: SweepRecord) -> WorkStatus:
    if sweep.cancel_requested and any(r.status == "cancelled" for r in sweep.rows()):
        return "cancelled"
    if any(row.status == "succeeded" for row in sweep.configurations):
        return "succeeded"
    if sweep.cancel_requested or any(r.status == "cancelled" for r in sweep.rows()):
        return "cancelled"  # asked to, or stopped by the service shutting down
    return "failed"
