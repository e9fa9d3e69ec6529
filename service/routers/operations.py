"""Operations: liveness, readiness, Prometheus metrics, service information."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import StateDep
from service.errors import NotReady, problem_responses
from service.schemas import Health, Info, Limits

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
    if not (state.jobs.started and state.executor.ready):
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
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/info", response_model=Info, summary="Service information")
async def info(state: StateDep) -> Info:
    """Version, executor backend, workers and every deployment limit."""
    settings = state.settings
    started = state.jobs.started
    counts = state.executor.counts() if started else {"queued": 0, "running": 0}
    return Info(
        version=package_version(),
        executor_backend=type(state.executor).__name__,
        workers=state.executor.worker_count,
        worker_pids=state.executor.worker_pids() if started else [],
        ready=started and state.executor.ready,
        queued_jobs=counts.get("queued", 0),
        running_jobs=counts.get("running", 0),
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
        ),
    )
