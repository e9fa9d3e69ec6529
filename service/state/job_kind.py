"""Jobs: one network trained by one task (and its logistic-regression baseline, when asked).

A job is the work kind of `service.state.lifecycle` whose task id is the job's id; its stream
is its history, one entry per recorded epoch (the cursor is the last epoch sent). Its task's
parameter snapshots are kept on the record, thinned to a bound (`records.keep_snapshot`).

Continued training. A job with `init_model_id` trains on from that model: its weights, its
optimizer state when the model kept one (models trained by jobs do; a different optimizer
starts afresh), its scalers (the dataset is scaled as the model scales its inputs and, for
regression, its targets) and its architecture. Options the request leaves out are the model's
own, so `{"epochs": 100}` goes on training as before for 100 more epochs; options that shape
the network (ARCHITECTURE) must equal the model's. History epochs count on from the model's
last recorded epoch (`initial_epoch`); a schedule and early stopping start again with the job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from engine.hyperparameters import Hyperparameters
from engine.training import HistoryPoint, Initial, ParameterSnapshot
from service.errors import Conflict, InsufficientStorage, InvalidRequest, NotFound
from service.execution.executor import Task, TaskStarted
from service.execution.tasks import TrainingOutcome, TrainingTask
from service.state.callers import Caller
from service.state.lifecycle import Lifecycle, Snapshot, Submission, Wording, prepared
from service.state.limits import check_limits
from service.state.records import (
    DatasetContent,
    DatasetRecord,
    JobBaseline,
    JobRecord,
    ModelContent,
    ModelRecord,
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
    init_model_id: str | None = None  # the model to continue (an id or the caller's alias)
    given: frozenset[str] = frozenset()  # the options the request set (for init_model_id)


def baseline_of(hp: Hyperparameters) -> Hyperparameters:
    """The baseline of a network's options: the same with no hidden layer."""
    return hp.model_copy(update={"hidden_layers": []})


# The options that decide the network's shape and number type: a continued job keeps the model's.
ARCHITECTURE = ("hidden_layers", "activation", "input_features", "dtype")
HP = ("body", "hyperparameters")


@dataclass(frozen=True)
class Continued:
    """The model a job continues: its record and content, and the epochs it trained."""

    record: ModelRecord
    content: ModelContent
    initial_epoch: int  # its last recorded epoch: the job's history counts on from there

    @classmethod
    def of(cls, record: ModelRecord, content: ModelContent) -> Continued:
        history = content.history
        return cls(record, content, history[-1].epoch if history else 0)

    @property
    def initial(self) -> Initial:
        model = self.content.model
        return Initial(list(model.weights), list(model.biases), model.optimizer_state)

    def options(self, given: Hyperparameters, fields_set: Iterable[str]) -> Hyperparameters:
        """The model's options with the given ones; a 422 naming the first given option that
        would change the architecture."""
        parent = self.record.hyperparameters
        named = set(fields_set)
        for name in ARCHITECTURE:
            if name in named and getattr(given, name) != getattr(parent, name):
                raise InvalidRequest.at(
                    [*HP, name],
                    f"model {self.record.id} has {name} {json.dumps(getattr(parent, name))}; "
                    f"a continued job keeps the model's architecture: leave {name} out or give "
                    f"{json.dumps(getattr(parent, name))}",
                )
        return Hyperparameters(**{**parent.model_dump(), **given.model_dump(include=named)})

    def check_fits(self, dataset: DatasetRecord) -> None:
        """A 422 on dataset_id unless the dataset has the model's features and classes."""
        model = self.record
        if dataset.n_features != model.n_features:
            raise InvalidRequest.at(
                ["body", "dataset_id"],
                f"dataset {dataset.id} has {dataset.n_features} features but model {model.id} "
                f"takes {model.n_features}; continue on a dataset of the model's features",
            )
        if dataset.classes != model.classes:
            raise InvalidRequest.at(
                ["body", "dataset_id"],
                f"dataset {dataset.id} has classes {json.dumps(list(dataset.classes))} but "
                f"model {model.id} predicts {json.dumps(list(model.classes))}; continue on a "
                "dataset of the same classes",
            )


class JobLifecycle(Lifecycle[JobRecord, HistoryPoint, JobSubmission]):
    noun = "job"
    wording = Wording(timeout_advice="use fewer epochs or a smaller network")

    def _build(
        self, request: JobSubmission, dataset: DatasetRecord, content: DatasetContent
    ) -> tuple[JobRecord, list[tuple[str, Task]]]:
        """Check the options against the limits; the job and its one task. With
        `init_model_id` (a model id or alias of the caller's; 404 otherwise) the job continues
        that model, from the options `given` (the rest are the model's)."""
        continued = None
        hp, data = request.hyperparameters, TrainingData.of(dataset, content)
        if request.init_model_id is not None:
            continued = self._continued(request.init_model_id, request.caller)
            if request.baseline:
                raise InvalidRequest.at(
                    ["body", "baseline"],
                    "a continued job trains no baseline (it has another architecture); submit "
                    "the baseline as a job of its own",
                )
            hp = continued.options(hp, request.given)
            continued.check_fits(dataset)
            parent = continued.content.model
            data = replace(data, scaler=parent.scaler, target_scaler=parent.target_scaler)
        check_limits(hp, data, dataset.id, self.settings)
        job = JobRecord(
            id=new_id("job"),
            name=request.name or dataset.name,
            dataset_id=dataset.id,
            created_at=utc_now(),
            data=data,
            hyperparameters=hp,
            baseline_requested=request.baseline,
            init_model_id=continued.record.id if continued else None,
            initial_epoch=continued.initial_epoch if continued else 0,
        )
        job.epoch = job.initial_epoch
        return job, [(job.id, self._task(hp, content, request.baseline, continued))]

    def _continued(self, model_ref: str, caller: Caller) -> Continued:
        """The model a job continues; NotFound (404) as for any model the caller cannot see."""
        record = self.store.find_model(model_ref, caller)
        content = self.store.models.content(record.id) if record is not None else None
        if record is None or content is None:
            raise NotFound(f"model {model_ref} does not exist")
        return Continued.of(record, content)

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
                job,
                job.name,
                hp,
                outcome,
                job.metrics,
                job.history,
                job_id=job.id,
                continued_from=job.init_model_id,
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
        model (from the same model, for a continued job: failed when that model is gone)."""
        continued = None
        if job.init_model_id is not None:
            record = self.store.models.get(job.init_model_id)
            model = self.store.models.content(job.init_model_id) if record else None
            if record is None or model is None:
                detail = (
                    f"the service restarted and model {job.init_model_id}, which this job "
                    "continues, no longer exists; submit the job again from another model"
                )
                self._stopped(job, job.id, WorkError("interrupted", detail), now)
                return []
            continued = Continued.of(record, model)
        job.status, job.started_at, job.worker_pid = "queued", None, None
        job.epoch, job.history, job.metrics, job.snapshots = job.initial_epoch, [], None, []
        return [
            (job.id, self._task(job.hyperparameters, content, job.baseline_requested, continued))
        ]

    def _task(
        self,
        hp: Hyperparameters,
        content: DatasetContent,
        baseline: bool,
        continued: Continued | None = None,
    ) -> TrainingTask:
        if continued is None:
            return TrainingTask(
                hp, prepared(content), baseline=baseline_of(hp) if baseline else None
            )
        data = prepared(content, scaled_as=continued.content.model)
        return TrainingTask(
            hp, data, initial=continued.initial, initial_epoch=continued.initial_epoch
        )

    # --- following ---------------------------------------------------------------------------

    def _view(self, job: JobRecord, after: int) -> JobSnapshot:
        """The job without its history (its snapshots' list copied: the arrays are never
        changed), and the points with epoch > after."""
        points = [point for point in job.history if point.epoch > after]
        cursor = points[-1].epoch if points else after
        record = replace(job, history=[], snapshots=list(job.snapshots))
        return Snapshot(record=record, entries=points, cursor=cursor)
