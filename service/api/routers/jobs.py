"""/v1/jobs: queue training, follow it (polling, history, server-sent events, pictures of its
parameter snapshots), cancel it."""

from __future__ import annotations

import bisect
from typing import Annotated, TypeVar

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from engine import plotting
from engine.training import HistoryPoint
from service.api import pictures
from service.api.auth import CallerDep
from service.api.deps import PageDep, StateDep, idempotency_key_header, submission
from service.api.problems import answers, problem_responses
from service.api.schemas import (
    JobCreate,
    JobHistory,
    JobPublic,
    JobSnapshots,
    JobsPublic,
    JobStatusName,
    ProgressEvent,
)
from service.api.streams import (
    event_stream_200,
    follow_response,
    last_event_id_header,
    since_query,
)
from service.api.views import history_public, job_public
from service.state.job_kind import JobSnapshot, JobSubmission, kept_snapshots, snapshot_at
from service.state.records import JobRecord

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

EVENTS_DESCRIPTION = """\
Server-sent events. First every point already recorded after `since` (or `Last-Event-ID`), then
one `progress` event per point as it is recorded, then one final `status` event; the stream
ends when the job ends. Comment lines keep an idle connection alive.

    event: progress
    id: 1000
    data: {"job_id": "job_…", "epoch": 1000, "train_loss": 0.31, ...}

    event: status
    data: {"id": "job_…", "status": "succeeded", ...}
"""


Item = TypeVar("Item")


def thin(items: list[Item], max_items: int) -> list[Item]:
    """At most `max_items` items spread evenly, keeping the first and the last."""
    if len(items) <= max_items:
        return items
    keep = np.unique(np.round(np.linspace(0, len(items) - 1, max_items)).astype(np.int64))
    return [items[i] for i in keep.tolist()]


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    summary="Queue a training job",
    responses=answers(
        202,
        "Queued; Location names the job. A retry with the same Idempotency-Key and body "
        "answers the same job.",
        (400, 404, 409, 413, 422, 429, 503),
        location=True,
    ),
)
async def create_job(
    body: JobCreate,
    response: Response,
    state: StateDep,
    caller: CallerDep,
    idempotency_key: str | None = idempotency_key_header("job"),
) -> JobPublic:
    """Check the options against this deployment's limits (each refusal names the limit and
    the value), then queue the job for a worker. An unknown `dataset_id` is a 422, an unknown
    `init_model_id` a 404."""
    request = submission(
        JobSubmission,
        body,
        idempotency_key,
        caller,
        hyperparameters=body.hyperparameters,
        init_model_id=body.init_model_id,
        given=frozenset(body.hyperparameters.model_fields_set),
    )
    job, _created = state.jobs.submit(request)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job)


@router.get("", response_model=JobsPublic, summary="List jobs", responses=problem_responses(422))
async def list_jobs(
    state: StateDep,
    caller: CallerDep,
    page: PageDep,
    status: Annotated[JobStatusName | None, Query(description="Only jobs in this state.")] = None,
) -> JobsPublic:
    """Every job, oldest first, optionally only those in one state."""
    return JobsPublic.model_validate(page.page(state.jobs.select(status, caller), job_public))


@router.get(
    "/{job_id}", response_model=JobPublic, summary="Read a job", responses=problem_responses(404)
)
async def read_job(state: StateDep, caller: CallerDep, job_id: str) -> JobPublic:
    """A job: its status, options, latest metrics, and its model once it succeeded."""
    return job_public(state.jobs.require(job_id, caller))


@router.get(
    "/{job_id}/history",
    response_model=JobHistory,
    summary="Recorded loss and accuracy",
    responses=problem_responses(404, 422),
)
def job_history(
    state: StateDep,
    caller: CallerDep,
    job_id: str,
    since: Annotated[int, Query(ge=0, description="Only points with epoch > since.")] = 0,
    max_points: Annotated[
        int | None,
        Query(
            ge=2,
            le=100_000,
            description="Thin evenly to at most this many points, keeping the first and the last.",
        ),
    ] = None,
) -> JobHistory:
    """The loss and accuracy the job recorded every record_every epochs (and at its last
    epoch), oldest first; while it runs, the points so far."""
    points = state.jobs.snapshot(job_id, since, caller).entries
    if max_points is not None:
        points = thin(points, max_points)
    return JobHistory(job_id=job_id, history=history_public(points))


def _render(snapshot: JobSnapshot) -> list[ServerSentEvent]:
    job = snapshot.record
    snapshot_epochs = [kept.epoch for kept in job.snapshots]

    def latest_snapshot(epoch: int) -> int | None:
        """The latest kept snapshot's epoch when the point of `epoch` was recorded."""
        position = bisect.bisect_right(snapshot_epochs, epoch)
        return snapshot_epochs[position - 1] if position else None

    events = [
        ServerSentEvent(
            data=ProgressEvent.model_validate(
                {
                    **point.as_dict(),
                    "job_id": job.id,
                    "snapshot_epoch": latest_snapshot(point.epoch),
                }
            ).model_dump_json(),
            event="progress",
            id=str(point.epoch),
        )
        for point in snapshot.entries
    ]
    if job.finished:
        events.append(ServerSentEvent(data=job_public(job).model_dump_json(), event="status"))
    return events


@router.get(
    "/{job_id}/events",
    summary="Follow a job live (server-sent events)",
    description=EVENTS_DESCRIPTION,
    response_class=EventSourceResponse,
    responses={
        **event_stream_200(
            "An event stream (see above); `progress` data is a ProgressEvent, "
            "`status` data a JobPublic."
        ),
        **problem_responses(404, 422),
    },
)
async def job_events(
    state: StateDep,
    caller: CallerDep,
    job_id: str,
    since: int | None = since_query("points with epoch"),
    last_event_id: int | None = last_event_id_header("epoch"),
) -> EventSourceResponse:
    return follow_response(
        state.jobs, job_id, since, last_event_id, _render, state.settings, caller
    )


@router.get(
    "/{job_id}/snapshots",
    response_model=JobSnapshots,
    summary="Epochs of the kept parameter snapshots",
    responses=problem_responses(404),
)
async def job_snapshots(state: StateDep, caller: CallerDep, job_id: str) -> JobSnapshots:
    """The epochs at which the job kept a snapshot of its parameters (every snapshot_every
    epochs and the last; at most 100, thinned evenly, the first and the latest kept), oldest
    first; empty while queued or with snapshot_every null."""
    job = state.jobs.require(job_id, caller)
    return JobSnapshots(job_id=job.id, epochs=[kept.epoch for kept in job.snapshots])


SnapshotEpoch = Annotated[
    int | None,
    Query(
        ge=1,
        le=2**31 - 1,
        description="A kept snapshot's epoch (GET /v1/jobs/{job_id}/snapshots); "
        "default: the latest.",
    ),
]


def _planar(state: StateDep, caller: CallerDep, job_id: str) -> JobRecord:
    """The job (404 if none), 409 unless it trains on 2 features."""
    job = state.jobs.require(job_id, caller)
    pictures.require_plane(f"job {job_id}", job.data.n_features)
    return job


@pictures.png_route(
    router,
    "/{job_id}/decision-boundary.png",
    "Draw the decision boundary of a snapshot",
    404,
    409,
    422,
)
async def job_decision_boundary(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    job_id: str,
    epoch: SnapshotEpoch = None,
    width: pictures.Width = 640,
    height: pictures.Height = 480,
    resolution: int = pictures.resolution_query(200, "Grid points per axis."),
    show: pictures.ShowQuery = "all",
) -> Response:
    """Class regions of the job's network at its latest snapshot, or at `epoch`, drawn as its
    model's decision-boundary.png is (the snapshot at the last epoch draws the model's picture,
    unless early stopping restored earlier weights). Running or finished. 409 for a job with
    other than 2 features, a queued one, one with no snapshot yet, and one with
    snapshot_every null; 404 for an epoch with no kept snapshot (the detail names the nearest
    kept ones)."""
    job = _planar(state, caller, job_id)
    snapshot = snapshot_at(job, epoch)
    model = job.data.model(job.hyperparameters, snapshot.weights, snapshot.biases)
    has_dataset = state.store.datasets.get(job.dataset_id) is not None
    key = (job.id, "boundary", snapshot.epoch, width, height, resolution, show, has_dataset)

    def render() -> bytes:
        points = pictures.dataset_points(state.store, job.dataset_id)
        return pictures.boundary_png(
            model, points, width=width, height=height, resolution=resolution, show=show
        )

    stable = epoch is not None or job.finished
    return await pictures.picture_response(
        request,
        state.pictures,
        key,
        render,
        cache_control=pictures.CACHE_CONTROL if stable else pictures.REVALIDATE,
    )


AnimationWidth = Annotated[
    int, Query(ge=plotting.MIN_PIXELS, le=plotting.MAX_ANIMATION_PIXELS, description="Pixels.")
]
AnimationHeight = Annotated[
    int, Query(ge=plotting.MIN_PIXELS, le=plotting.MAX_ANIMATION_PIXELS, description="Pixels.")
]


def frame_title(epoch: int, point: HistoryPoint | None) -> str:
    """`epoch 2,000 · train loss 0.3120 · test loss 0.3301` (the losses of the point of that
    epoch, when the history has it)."""
    parts = [f"epoch {epoch:,}"]
    if point is not None:
        parts.append(f"train loss {point.train_loss:.4f}")
        if point.test_loss is not None:
            parts.append(f"test loss {point.test_loss:.4f}")
    return " · ".join(parts)


@pictures.png_route(
    router,
    "/{job_id}/evolution.gif",
    "Animate the decision boundary over the snapshots",
    404,
    409,
    422,
    media_type=pictures.GIF_MEDIA_TYPE,
    description="A looping GIF, one frame per snapshot drawn.",
)
async def job_evolution(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    job_id: str,
    max_frames: Annotated[
        int,
        Query(
            ge=2,
            le=plotting.MAX_FRAMES,
            description="At most this many frames: the kept snapshots thinned evenly, the "
            "first and the latest kept.",
        ),
    ] = 50,
    width: AnimationWidth = 480,
    height: AnimationHeight = 360,
    resolution: int = pictures.resolution_query(100, "Grid points per axis.", le=300),
    show: pictures.ShowQuery = "all",
) -> Response:
    """The decision boundary at each kept snapshot (running or finished job), each frame
    titled with its epoch and the training and test loss of that epoch, 150 ms a frame and 2 s
    on the last. At most 100 frames of at most 1024 x 1024 pixels. The same 409s as the job's
    decision-boundary.png."""
    job = _planar(state, caller, job_id)
    pictures.require_classifier(
        f"job {job_id}", job.data.task, "decision-boundary.png draws each snapshot's surface"
    )
    snapshots = thin(kept_snapshots(job), max_frames)
    points_by_epoch = {point.epoch: point for point in job.history}
    has_dataset = state.store.datasets.get(job.dataset_id) is not None
    epochs = tuple(kept.epoch for kept in snapshots)
    key = (job.id, "evolution", epochs, width, height, resolution, show, has_dataset)

    frames = [
        (
            job.data.model(job.hyperparameters, kept.weights, kept.biases),
            frame_title(kept.epoch, points_by_epoch.get(kept.epoch)),
        )
        for kept in snapshots
    ]

    def render() -> bytes:
        points = pictures.point_arguments(pictures.dataset_points(state.store, job.dataset_id))
        first, title = frames[0]
        figure = plotting.decision_boundary_figure(
            first,
            **points,
            width=width,
            height=height,
            resolution=resolution,
            show=show,
            title=title,
        )
        return plotting.boundary_animation_gif(figure, frames, resolution=resolution)

    return await pictures.picture_response(
        request,
        state.pictures,
        key,
        render,
        pictures.GIF_MEDIA_TYPE,
        cache_control=pictures.CACHE_CONTROL if job.finished else pictures.REVALIDATE,
    )


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobPublic,
    summary="Cancel a job",
    responses=answers(
        202,
        "Cancel requested; the job reaches `cancelled` within one epoch (a queued job at "
        "once) and registers no model.",
        (404, 409),
    ),
)
async def cancel_job(state: StateDep, caller: CallerDep, job_id: str) -> JobPublic:
    """Ask a queued or running job to stop. A finished job answers 409 with its status."""
    return job_public(state.jobs.cancel(job_id, caller))
