"""Registry records -> public response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.registry import (
    DatasetRecord,
    JobBaseline,
    JobError,
    JobRecord,
    ModelRecord,
    utc_now,
)
from service.schemas import (
    DatasetPublic,
    HistoryPointPublic,
    JobBaselinePublic,
    JobErrorPublic,
    JobPublic,
    Metrics,
    ModelPublic,
)


def dataset_public(record: DatasetRecord, *, include_points: bool = False) -> DatasetPublic:
    data = record.dataset
    extra: dict[str, Any] = {}
    if include_points:
        side = ["train"] * data.n_samples
        for row in record.split.test_index.tolist():
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
        n_samples=data.n_samples,
        n_features=data.n_features,
        n_classes=data.n_classes,
        classes=list(data.classes),
        class_counts=list(data.class_counts.values()),
        feature_names=list(data.feature_names),
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


def error_public(error: JobError | None) -> JobErrorPublic | None:
    return JobErrorPublic(type=error.type, detail=error.detail) if error else None


def job_public(job: JobRecord) -> JobPublic:
    """Call under the registry lock (or on a snapshot copy)."""
    return JobPublic(
        id=job.id,
        name=job.name,
        status=job.status,
        dataset_id=job.dataset_id,
        hyperparameters=job.hyperparameters,
        epoch=job.epoch,
        epochs=job.hyperparameters.epochs,
        train_size=job.train_size,
        test_size=job.test_size,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        elapsed_seconds=elapsed_seconds(job.started_at, job.finished_at),
        metrics=_metrics(job.metrics),
        model_id=job.model_id,
        error=error_public(job.error),
        stop_reason=job.stop_reason,
        cancel_requested=job.cancel_requested,
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


def history_public(points: list[dict[str, Any]]) -> list[HistoryPointPublic]:
    return [HistoryPointPublic.model_validate(point) for point in points]


def model_public(record: ModelRecord) -> ModelPublic:
    model = record.model
    return ModelPublic(
        id=record.id,
        name=record.name,
        job_id=record.job_id,
        sweep_id=record.sweep_id,
        dataset_id=record.dataset_id,
        hyperparameters=model.hyperparameters,
        metrics=_metrics(record.metrics),
        n_parameters=model.n_parameters,
        n_features=model.n_features,
        feature_names=list(model.feature_names),
        classes=list(model.classes),
        architecture=model.architecture,
        activation=model.activation,
        has_history=bool(record.history),
        created_at=record.created_at,
    )
