"""The application factory: the store, the dispatcher and the work lifecycles, wired to the
routers, error handlers, middleware, OpenAPI document and offline docs, with a lifespan.

The lifespan starts the executor's workers in a background thread (so /healthz answers and
/readyz says 503 while they boot) and, on shutdown, ends event streams and stops the workers,
which cancels the work still queued or running (a durable store keeps it to run again); each job
and sweep so stopped is logged with its status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api import problems
from service.api.auth import KeyRing
from service.api.deps import ServiceState
from service.api.middleware import BodySizeLimitMiddleware, MetricsMiddleware
from service.api.openapi import install_docs, openapi_document
from service.api.pictures import PictureCache
from service.api.playground import install_playground
from service.api.ratelimit import RateLimitMiddleware
from service.api.routers import datasets, inference, jobs, models, operations, sweeps
from service.execution.dispatcher import Dispatcher
from service.execution.executor import Executor
from service.logs import CorrelationIdMiddleware, request_id_middleware
from service.metrics import ServiceMetrics, StateReading
from service.settings import Settings
from service.state.job_kind import JobLifecycle
from service.state.records import FINISHED
from service.state.store import Store, open_store
from service.state.sweep_kind import SweepLifecycle

logger = logging.getLogger("service")

DESCRIPTION = """\
Train small neural networks over HTTP.

Create a **dataset**, queue a training **job** on it, follow the job (polling, history or
server-sent events) and use the **model** it registers: predict, draw its decision boundary and
loss curve, export and import it. A **sweep** trains a grid of hyperparameters together and
compares them side by side. Give a model an **alias** to call it by a stable name. Every /v1
error is an RFC 9457 `application/problem+json`; /v2 speaks the Open Inference Protocol.
"""


def create_app(
    settings: Settings | None = None,
    executor: Executor | None = None,
    store: Store | None = None,
) -> FastAPI:
    """A new app with its own store (default: in memory) and executor (default: as
    `settings.executor` says, worker processes on this machine or a Dask cluster)."""
    settings = settings or Settings()
    if executor is None and settings.executor is not None:
        from service.execution.dask_executor import DaskExecutor

        executor = DaskExecutor(settings.executor, settings.max_queued_jobs)
    if executor is None:
        from service.execution.process_pool import LocalProcessExecutor

        executor = LocalProcessExecutor(
            settings.workers,
            settings.max_queued_jobs,
            preload=(
                "numpy",
                "engine",
                "engine.training",
                "engine.packed",
                "service.execution.tasks",
            ),
        )
    store = store or open_store(settings)
    metrics = ServiceMetrics()
    dispatcher = Dispatcher(executor, settings.max_queued_jobs)
    job_lifecycle = JobLifecycle(store, store.jobs, dispatcher, settings, metrics)
    sweep_lifecycle = SweepLifecycle(store, store.sweeps, dispatcher, settings, metrics)

    def read_state() -> StateReading:
        counts = dispatcher.counts()
        return StateReading(
            jobs_by_status=job_lifecycle.counts_by_status(),
            queued=counts["queued"],
            running=counts["running"],
            workers=len(dispatcher.worker_pids()),
            event_streams=job_lifecycle.open_streams() + sweep_lifecycle.open_streams(),
            stored_bytes=store.stored_bytes,
            max_stored_bytes=store.max_stored_bytes,
        )

    metrics.watch_state(read_state)
    state = ServiceState(
        settings=settings,
        store=store,
        dispatcher=dispatcher,
        jobs=job_lifecycle,
        sweeps=sweep_lifecycle,
        pictures=PictureCache(settings.picture_cache_size),
        metrics=metrics,
        keys=KeyRing(settings),
    )

    lifecycles = (job_lifecycle, sweep_lifecycle)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for lifecycle in lifecycles:
            lifecycle.recover()

        def start() -> None:
            try:
                dispatcher.start()
            except Exception:
                logger.exception("the training workers did not start")
                return
            for lifecycle in lifecycles:
                lifecycle.submit_recovered()

        starter = threading.Thread(target=start, name="scratchnet-start", daemon=True)
        starter.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(starter.join)
            unfinished = [
                (lifecycle, record.id)
                for lifecycle in (job_lifecycle, sweep_lifecycle)
                for record in lifecycle.select()
                if not record.finished
            ]
            await anyio.to_thread.run_sync(dispatcher.close)
            for lifecycle, record_id in unfinished:
                status = lifecycle.require(record_id).status
                later = "" if status in FINISHED else ", to run again at the next start"
                logger.info("shutdown: %s %s %s%s", lifecycle.noun, record_id, status, later)
            store.close()

    app = FastAPI(
        title="scratchnet",
        version=operations.package_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by service.api.openapi, behind SCRATCHNET_PROTECT_DOCS
        openapi_tags=[
            {"name": "datasets", "description": "Points to learn from, split for testing."},
            {"name": "jobs", "description": "Training runs in worker processes."},
            {"name": "models", "description": "Trained networks."},
            {
                "name": "sweeps",
                "description": "Grids of configurations trained together, side by side.",
            },
            {"name": "operations", "description": "Health, readiness, metrics, info."},
            {
                "name": "inference",
                "description": "The Open Inference Protocol (KServe v2): models by id or "
                'alias for KServe, Triton and Seldon clients; errors as `{"error": ...}`.',
            },
        ],
    )
    app.state.scratchnet = state
    problems.install(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(
        RateLimitMiddleware,
        keys=state.keys,
        rate=settings.rate_limit,
        burst=settings.rate_limit_burst,
        metrics=metrics,
    )
    if origins := settings.cors_origin_list():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location", "Retry-After", "ETag", "X-Request-ID"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(CorrelationIdMiddleware, **request_id_middleware())
    # Routes are matched in order: the busiest (predict, job polling) first. The routes
    # themselves, not app.include_router(): FastAPI wraps an included router in a node it
    # matches twice per request, which made a one-point predict ~40% slower.
    for module in (models, inference, jobs, datasets, sweeps, operations):
        app.router.routes.extend(module.router.routes)
    install_docs(app)
    install_playground(app)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app
