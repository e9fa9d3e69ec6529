"""Jobs: one network trained by one task (and its logistic-regression baseline, when asked).

A job is the work kind of `service.state.lifecycle` whose task id is the job's id; its stream
is its history, one entry per recorded epoch (the cursor is the last epoch sent). Its task's
parameter snapshots are kept on the record, thinned to a bound (`records.keep_snapshot`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from engine.hyperparameters import Hyperparameters
from engine.training import HistoryPoint, ParameterSnapshot
from service.errors import Conflict, InsufficientStorage, NotFound
from service.execution.executor import Task, TaskStarted
from service.execution.tasks import TrainingOutcome, TrainingTask
from service.state.lifecycle import Lifecycle, Snapshot, Submission, Wording, prepared
from service.state.limits import check_limits
from service.state.records import (
    DatasetContent,
    DatasetRecord,
    JobBaseline,
    JobRecord,
    TrainingData,
    WorkError,
    append_point,
    keep_snapshot,
    metrics_of,
    new_id,
    utc_now,
)

JobSnapshot = Snapshot[JobRecord, HistoryPoint]


def kept_snapshots(job: JobRecord) -> list[ParameterSnapshot]:
    """The job's snapshots, oldest first; 409 (saying why) when it has none."""
    if job.snapshots:
        return job.snapshots
    every = job.hyperparameters.snapshot_every
    if every is None:
        raise Conflict(
            f"job {job.id} keeps no snapshots: its snapshot_every is null; submit it again with "
            "snapshot_every set to see it learn"
        )
    first = f"the first comes with the history point at epoch {every} or the last one"
    if job.status == "queued":
        raise Conflict(f"job {job.id} is queued: it has no snapshot until it trains ({first})")
    if job.status == "running":
        raise Conflict(f"job {job.id} has no snapshot yet ({first}); it is at epoch {job.epoch}")
    raise Conflict(f"job {job.id} {job.status} before its first snapshot ({first})")


def snapshot_at(job: JobRecord, epoch: int | None) -> ParameterSnapshot:
    """The job's snapshot at `epoch` (None: the latest); 409 when it has none, 404 for an epoch
    it keeps none of, naming the nearest kept epochs."""
    snapshots = kept_snapshots(job)
    if epoch is None:
        return snapshots[-1]
    for snapshot in snapshots:
        if snapshot.epoch == epoch:
            return snapshot
    before = [s.epoch for s in snapshots if s.epoch < epoch]
    after = [s.epoch for s in snapshots if s.epoch > epoch]
    nearest = " and ".join(str(e) for e in (before[-1:] + after[:1]))
    raise NotFound(
        f"job {job.id} has no snapshot at epoch {epoch}; the nearest kept epochs are {nearest} "
        f"(GET /v1/jobs/{job.id}/snapshots lists them all)"
    )


@dataclass(frozen=True, kw_only=True)
class JobSubmission(Submission):
    hyperparameters: Hyperparameters


def baseline_of(hp: Hyperparameters) -> Hyperparameters:
    """The baseline of a network's options: the same with no hidden layer."""
    return hp.model_copy(update={"hidden_layers": []})


class JobLifecycle(Lifecycle[JobRecord, HistoryPoint, JobSubmission]):
    noun = "job"
    wording = Wording(timeout_advice="use fewer epochs or a smaller network")

    def _build(
        self, request: JobSubmission, dataset: DatasetRecord, content: DatasetContent
    ) -> tuple[JobRecord, list[tuple[str, Task]]]:
        """Check the options against the limits; the job and its one task."""
        hp, data = request.hyperparameters, TrainingData.of(dataset, content)
        check_limits(hp, data, dataset.id, self.settings)
        job = JobRecord(
            id=new_id("job"),
            name=request.name or dataset.name,
            dataset_id=dataset.id,
            created_at=utc_now(),
            data=data,
            hyperparameters=hp,
            baseline_requested=request.baseline,
        )
        return job, [(job.id, self._task(hp, content, request.baseline))]

    # --- executor events ---------------------------------------------------------------------

    def _accepts(self, record: JobRecord, task_id: str) -> bool:
        return task_id == record.id

    def _unfinished_tasks(self, record: JobRecord) -> list[str]:
        return [record.id]

    def _started(self, job: JobRecord, task_id: str, event: TaskStarted, now: datetime) -> None:
        self.start(job, now)
        job.worker_pid = event.worker_pid

    def _progress(self, job: JobRecord, task_id: str, items: Sequence[Any], now: datetime) -> None:
        self._record(job, [item for item in items if isinstance(item, HistoryPoint)])
        for item in items:
            if isinstance(item, ParameterSnapshot) and (
                job.snapshot_epoch is None or item.epoch > job.snapshot_epoch
            ):
                keep_snapshot(job.snapshots, item)
        self.start(job, now)  # progress implies the task started

    def _record(self, job: JobRecord, points: Sequence[HistoryPoint]) -> None:
        for point in points:
            if append_point(job.history, point):
                self.metrics.epochs_trained.inc(max(0, point.epoch - job.epoch))
                job.epoch = point.epoch
                job.metrics = metrics_of(point)

    def _succeeded(self, job: JobRecord, task_id: str, result: Any, now: datetime) -> None:
        outcome: TrainingOutcome = result
        self._record(job, outcome.history)
        job.history = list(outcome.history) or job.history  # the authoritative history
        self.metrics.epochs_trained.inc(max(0, outcome.epochs_run - job.epoch))
        job.epoch = outcome.epochs_run
        job.metrics = metrics_of(outcome.metrics)
        job.stop_reason = outcome.stop_reason
        hp = job.hyperparameters
        try:
            job.model_id = self.register_model(
                job, job.name, hp, outcome, job.metrics, job.history, job_id=job.id
            )
        except InsufficientStorage as exc:
            job.error = WorkError("insufficient_storage", exc.detail)
            self.finish(job, "failed", now)
            return
        if job.baseline_requested:
            job.baseline = self._baseline(job, outcome)
        self.finish(job, "succeeded", now)

    def _baseline(self, job: JobRecord, outcome: TrainingOutcome) -> JobBaseline:
        """Register the baseline's model (or keep why it failed)."""
        baseline = outcome.baseline
        if baseline is None:
            refused = outcome.baseline_error and self.failure(outcome.baseline_error)
            error = refused or WorkError("internal", "the baseline was not trained")
            return JobBaseline(model_id=None, metrics=None, epochs_run=0, error=error)
        metrics = metrics_of(baseline.metrics)
        hp = baseline_of(job.hyperparameters)
        name = f"{job.name}: {job.data.baseline_label}"
        try:
            model_id = self.register_model(
                job, name, hp, baseline, metrics, baseline.history, job_id=job.id
            )
        except InsufficientStorage as exc:
            error = WorkError("insufficient_storage", exc.detail)
            return JobBaseline(None, metrics, baseline.epochs_run, error)
        return JobBaseline(model_id, metrics, baseline.epochs_run, None)

    def _stopped(
        self, job: JobRecord, task_id: str, error: WorkError | None, now: datetime
    ) -> None:
        job.error = error
        self.finish(job, "cancelled" if error is None else "failed", now)

    def _restart(
        self, job: JobRecord, content: DatasetContent, now: datetime
    ) -> list[tuple[str, Task]]:
        """From its start: no history, no snapshot, no epoch; the same seed trains the same
        model."""
        job.status, job.started_at, job.worker_pid = "queued", None, None
        job.epoch, job.history, job.metrics, job.snapshots = 0, [], None, []
        return [(job.id, self._task(job.hyperparameters, content, job.baseline_requested))]

    def _task(self, hp: Hyperparameters, content: DatasetContent, baseline: bool) -> TrainingTask:
        return TrainingTask(hp, prepared(content), baseline=baseline_of(hp) if baseline else None)

    # --- following ---------------------------------------------------------------------------

    def _view(self, job: JobRecord, after: int) -> JobSnapshot:
        """The job without its history (its snapshots' list copied: the arrays are never
        changed), and the points with epoch > after."""
        points = [point for point in job.history if point.epoch > after]
        cursor = points[-1].epoch if points else after
        record = replace(job, history=[], snapshots=list(job.snapshots))
        return Snapshot(record=record, entries=points, cursor=cursor)
