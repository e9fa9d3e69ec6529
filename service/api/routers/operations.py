"""Operations: liveness, readiness, Prometheus metrics, service information."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import StateDep
from service.api.problems import problem_responses
from service.api.schemas import Health, Info, Limits
from service.errors import NotReady

router = APIRouter(tags=["operations"])


def package_version() -> str:
    try:
        return version("scratchnet")
    except PackageNotFoundError:
        return "0+unknown"


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process answers. Cheap: touches nothing."""
    return Health()


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness",
    responses=problem_responses(503),
)
async def readyz(state: StateDep) -> Health:
    """200 once every training worker is up; 503 while they start (or restart)."""
    if not state.dispatcher.ready:
        raise NotReady("the training workers are not all up", headers={"Retry-After": "1"})
    return Health()


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format.",
        }
    },
)
async def metrics(state: StateDep) -> Response:
    """Request counts and durations by route template, jobs by status, queue depth, workers
    and open event streams, in the Prometheus text format."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/info", response_model=Info, summary="Service information")
async def info(state: StateDep) -> Info:
    """Version, executor backend, workers and every deployment limit."""
    settings = state.settings
    dispatcher = state.dispatcher
    counts = dispatcher.counts()
    return Info(
        version=package_version(),
        executor_backend=type(dispatcher.executor).__name__,
        workers=dispatcher.executor.worker_count,
        worker_pids=dispatcher.worker_pids(),
        ready=dispatcher.ready,
        queued_jobs=counts["queued"],
        running_jobs=counts["running"],
        store_backend=state.store.backend,
        stored_bytes=state.store.stored_bytes,
        limits=Limits(
            max_hidden_layers=settings.max_hidden_layers,
            max_units_per_layer=settings.max_units_per_layer,
            max_samples=settings.max_samples,
            max_epochs=settings.max_epochs,
            max_work=settings.max_work,
            predict_max_points=settings.predict_max_points,
            max_request_bytes=settings.max_request_bytes,
            max_queued_jobs=settings.max_queued_jobs,
            job_timeout_seconds=settings.job_timeout_seconds,
            page_size_max=settings.page_size_max,
            max_stored_bytes=state.store.max_stored_bytes,
        ),
    )
