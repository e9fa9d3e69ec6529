"""Stored records -> public response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from engine.training import HistoryPoint
from service.api.schemas import (
    DatasetPublic,
    HistoryPointPublic,
    JobBaselinePublic,
    JobPublic,
    Metrics,
    ModelPublic,
)
from service.api.sweep_schemas import ConfigurationPublic, SweepProgress, SweepPublic
from service.state.records import (
    METRIC_KEYS,
    ConfigurationRecord,
    DatasetContent,
    DatasetRecord,
    JobRecord,
    ModelRecord,
    SweepRecord,
    utc_now,
)
from service.state.records import (
    Metrics as MetricValues,
)

Public = TypeVar("Public", bound=BaseModel)


class _Overlay:
    """A record's attributes, some replaced by `values`: what `from_attributes` reads."""

    def __init__(self, record: object, values: dict[str, Any]) -> None:
        self._record, self._values = record, values

    def __getattr__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        return getattr(self._record, name)


def from_record(schema: type[Public], record: object, **values: Any) -> Public:
    """`schema` filled from the record's attributes of its field names (properties too, nested
    records into nested schemas), `values` where given instead."""
    return schema.model_validate(_Overlay(record, values), from_attributes=True)


def dataset_public(record: DatasetRecord, points: DatasetContent | None = None) -> DatasetPublic:
    """The dataset's description; with its content, also every point, label and side."""
    if points is None:
        return from_record(DatasetPublic, record)
    data = points.dataset
    side = ["train"] * data.n_samples
    for row in points.split.test_index.tolist():
        side[row] = "test"
    return from_record(
        DatasetPublic,
        record,
        points=data.X.tolist(),
        split=side,
        **(
            {"targets": data.y.tolist()}
            if data.regression
            else {"labels": [data.classes[i] for i in data.y.tolist()]}
        ),
    )


def _metrics(values: dict[str, float | None] | None) -> Metrics | None:
    if values is None or values.get("train_loss") is None:
        return None
    return Metrics.model_validate(values)


def elapsed_seconds(started: datetime | None, finished: datetime | None) -> float | None:
    """Seconds from start to finish (to now while unfinished); None until started."""
    if started is None:
        return None
    return round(((finished or utc_now()) - started).total_seconds(), 3)


def metric_values(metrics: MetricValues | None) -> dict[str, float | None]:
    """The metric fields of a row that reports them flat (None where not recorded; the other
    task's are left out of the response)."""
    values = metrics or {}
    return {key: values.get(key) for key in METRIC_KEYS}


def job_public(job: JobRecord) -> JobPublic:
    baseline = job.baseline
    return from_record(
        JobPublic,
        job,
        epochs=job.hyperparameters.epochs,
        train_size=job.data.train_size,
        test_size=job.data.test_size,
        elapsed_seconds=elapsed_seconds(job.started_at, job.finished_at),
        metrics=_metrics(job.metrics),
        baseline=(
            from_record(JobBaselinePublic, baseline, **metric_values(baseline.metrics))
            if baseline is not None
            else None
        ),
    )


def history_public(points: list[HistoryPoint]) -> list[HistoryPointPublic]:
    return [HistoryPointPublic.model_validate(point.as_dict()) for point in points]


def model_public(record: ModelRecord, aliases: list[str] | None = None) -> ModelPublic:
    return from_record(ModelPublic, record, metrics=_metrics(record.metrics), aliases=aliases or [])


def configuration_public(row: ConfigurationRecord, best: bool) -> ConfigurationPublic:
    return from_record(
        ConfigurationPublic,
        row,
        **metric_values(row.metrics),
        seconds=None if row.seconds is None else round(row.seconds, 3),
        best=best,
    )


def sweep_public(sweep: SweepRecord) -> SweepPublic:
    rows = sweep.configurations
    best_index = sweep.best_index()
    counts = {
        status: sum(row.status == status for row in rows)
        for status in ("succeeded", "failed", "cancelled", "running")
    }
    epochs_total = sum(row.hyperparameters.epochs for row in rows)
    epochs_completed = sum(
        row.hyperparameters.epochs if row.status == "succeeded" else row.epochs_run for row in rows
    )
    progress = SweepProgress(
        completed=sum(row.finished for row in rows),
        total=len(rows),
        **counts,
        epochs_completed=epochs_completed,
        epochs_total=epochs_total,
        fraction=round(epochs_completed / epochs_total, 4) if epochs_total else 0.0,
    )
    return from_record(
        SweepPublic,
        sweep,
        elapsed_seconds=elapsed_seconds(sweep.started_at, sweep.finished_at),
        progress=progress,
        results=[configuration_public(row, row.index == best_index) for row in rows],
        best_index=best_index,
        baseline=configuration_public(sweep.baseline, False) if sweep.baseline else None,
    )
