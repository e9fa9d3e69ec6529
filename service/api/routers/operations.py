"""Operations: liveness, readiness, Prometheus metrics, service information."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.auth import authenticate, authenticate_docs
from service.api.deps import ServiceState, StateDep
from service.api.problems import problem_responses
from service.api.schemas import ClusterWorker, Health, Info, Limits, Readiness
from service.api.views import from_record
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


def cluster_of(state: ServiceState) -> list[ClusterWorker] | None:
    """The Dask cluster's workers as the executor sees them; None for local workers."""
    workers = state.dispatcher.executor.cluster() if state.dispatcher.started else None
    if workers is None:
        return None
    return [ClusterWorker(name=w.name, pid=w.pid, resources=w.resources) for w in workers]


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses=problem_responses(503),
)
async def readyz(state: StateDep) -> Readiness:
    """200 once every training worker is up (on a Dask cluster: its workers, with their
    resources); 503 while they start (or restart), or when a cluster's workers cannot be
    used (the detail says why: a worker's scratchnet or NumPy version differs, say)."""
    if not state.dispatcher.ready:
        raise NotReady(state.dispatcher.not_ready_reason(), headers={"Retry-After": "1"})
    return Readiness(cluster=cluster_of(state))


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    dependencies=[Depends(authenticate_docs)],
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


@router.get(
    "/v1/info",
    response_model=Info,
    summary="Service information",
    dependencies=[Depends(authenticate)],
)
async def info(state: StateDep) -> Info:
    """Version, executor backend, workers (on a Dask cluster: which, with their resources)
    and every deployment limit."""
    settings = state.settings
    dispatcher = state.dispatcher
    counts = dispatcher.counts()
    return Info(
        version=package_version(),
        executor_backend=type(dispatcher.executor).__name__,
        workers=dispatcher.executor.worker_count,
        worker_pids=dispatcher.worker_pids(),
        ready=dispatcher.ready,
        cluster=cluster_of(state),
        queued_jobs=counts["queued"],
        running_jobs=counts["running"],
        store_backend=state.store.backend,
        stored_bytes=state.store.stored_bytes,
        limits=from_record(
            Limits,
            settings,
            max_stored_bytes=state.store.max_stored_bytes,
            keys_required=state.keys.enabled,
        ),
    )
