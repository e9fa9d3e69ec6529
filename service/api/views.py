"""Stored records -> public response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.training import HistoryPoint
from service.api.schemas import (
    DatasetPublic,
    HistoryPointPublic,
    JobBaselinePublic,
    JobErrorPublic,
    JobPublic,
    Metrics,
    ModelPublic,
)
from service.api.sweep_schemas import ConfigurationPublic, SweepProgress, SweepPublic
from service.state.records import (
    ConfigurationRecord,
    DatasetContent,
    DatasetRecord,
    JobBaseline,
    JobRecord,
    ModelRecord,
    SweepRecord,
    WorkError,
    utc_now,
)


def dataset_public(record: DatasetRecord, points: DatasetContent | None = None) -> DatasetPublic:
    """The dataset's description; with its content, also every point, label and side."""
    extra: dict[str, Any] = {}
    if points is not None:
        data = points.dataset
        side = ["train"] * data.n_samples
        for row in points.split.test_index.tolist():
            side[row] = "test"
        extra = {
            "points": data.X.tolist(),
            "labels": [data.classes[i] for i in data.y.tolist()],
            "split": side,
        }
    return DatasetPublic(
        id=record.id,
        name=record.name,
        kind=record.kind,
        n_samples=record.n_samples,
        n_features=record.n_features,
        n_classes=record.n_classes,
        classes=list(record.classes),
        class_counts=list(record.class_counts),
        feature_names=list(record.feature_names),
        train_size=record.train_size,
        test_size=record.test_size,
        test_fraction=record.test_fraction,
        standardize=record.standardize,
        seed=record.seed,
        parameters=record.parameters,
        created_at=record.created_at,
        **extra,
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


def error_public(error: WorkError | None) -> JobErrorPublic | None:
    return JobErrorPublic(type=error.type, detail=error.detail) if error else None


def job_public(job: JobRecord) -> JobPublic:
    return JobPublic(
        id=job.id,
        name=job.name,
        status=job.status,
        dataset_id=job.dataset_id,
        hyperparameters=job.hyperparameters,
        epoch=job.epoch,
        epochs=job.hyperparameters.epochs,
        train_size=job.data.train_size,
        test_size=job.data.test_size,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        elapsed_seconds=elapsed_seconds(job.started_at, job.finished_at),
        metrics=_metrics(job.metrics),
        model_id=job.model_id,
        error=error_public(job.error),
        stop_reason=job.stop_reason,
        cancel_requested=job.cancel_requested,
        attempt=job.attempt,
        baseline=_baseline_public(job.baseline) if job.baseline else None,
    )


def _baseline_public(baseline: JobBaseline) -> JobBaselinePublic:
    metrics = baseline.metrics or {}
    return JobBaselinePublic(
        model_id=baseline.model_id,
        train_loss=metrics.get("train_loss"),
        train_accuracy=metrics.get("train_accuracy"),
        test_loss=metrics.get("test_loss"),
        test_accuracy=metrics.get("test_accuracy"),
        epochs_run=baseline.epochs_run,
        error=error_public(baseline.error),
    )


def history_public(points: list[HistoryPoint]) -> list[HistoryPointPublic]:
    return [HistoryPointPublic.model_validate(point.as_dict()) for point in points]


def model_public(record: ModelRecord, aliases: list[str] | None = None) -> ModelPublic:
    return ModelPublic(
        id=record.id,
        name=record.name,
        job_id=record.job_id,
        sweep_id=record.sweep_id,
        dataset_id=record.dataset_id,
        hyperparameters=record.hyperparameters,
        metrics=_metrics(record.metrics),
        n_parameters=record.n_parameters,
        n_features=record.n_features,
        feature_names=list(record.feature_names),
        classes=list(record.classes),
        architecture=list(record.architecture),
        activation=record.activation,
        has_history=record.has_history,
        created_at=record.created_at,
        aliases=aliases or [],
    )


def configuration_public(row: ConfigurationRecord, best: bool) -> ConfigurationPublic:
    metrics = row.metrics or {}
    return ConfigurationPublic(
        index=row.index,
        hyperparameters=row.hyperparameters,
        varied=row.varied,
        status=row.status,
        model_id=row.model_id,
        train_loss=metrics.get("train_loss"),
        train_accuracy=metrics.get("train_accuracy"),
        test_loss=metrics.get("test_loss"),
        test_accuracy=metrics.get("test_accuracy"),
        epochs_run=row.epochs_run,
        seconds=None if row.seconds is None else round(row.seconds, 3),
        stop_reason=row.stop_reason,
        error=error_public(row.error),
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
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        cancelled=counts["cancelled"],
        running=counts["running"],
        epochs_completed=epochs_completed,
        epochs_total=epochs_total,
        fraction=round(epochs_completed / epochs_total, 4) if epochs_total else 0.0,
    )
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        dataset_id=sweep.dataset_id,
        base=sweep.base,
        grid=sweep.grid,
        created_at=sweep.created_at,
        started_at=sweep.started_at,
        finished_at=sweep.finished_at,
        elapsed_seconds=elapsed_seconds(sweep.started_at, sweep.finished_at),
        progress=progress,
        results=[configuration_public(row, row.index == best_index) for row in rows],
        best_index=best_index,
        baseline=configuration_public(sweep.baseline, False) if sweep.baseline else None,
        cancel_requested=sweep.cancel_requested,
        attempt=sweep.attempt,
    )
