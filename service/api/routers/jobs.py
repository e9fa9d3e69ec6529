"""/v1/jobs: queue training, follow it (polling, history, server-sent events), cancel it."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from engine.training import HistoryPoint
from service.api.auth import CallerDep
from service.api.deps import PageDep, StateDep, idempotency_key_header, submission
from service.api.problems import answers, problem_responses
from service.api.schemas import (
    JobCreate,
    JobHistory,
    JobPublic,
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
from service.state.job_kind import JobSnapshot, JobSubmission

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


def thin(points: list[HistoryPoint], max_points: int) -> list[HistoryPoint]:
    """At most `max_points` points spread evenly, keeping the first and the last."""
    if len(points) <= max_points:
        return points
    keep = np.unique(np.round(np.linspace(0, len(points) - 1, max_points)).astype(np.int64))
    return [points[i] for i in keep.tolist()]


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    summary="Queue a training job",
    responses=answers(
        202,
        "Queued; Location names the job. A retry with the same Idempotency-Key and body "
        "answers the same job.",
        (400, 409, 413, 422, 429, 503),
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
    the value), then queue the job for a worker. An unknown `dataset_id` is a 422."""
    request = submission(
        JobSubmission, body, idempotency_key, caller, hyperparameters=body.hyperparameters
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
    events = [
        ServerSentEvent(
            data=ProgressEvent.model_validate(
                {**point.as_dict(), "job_id": job.id}
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
