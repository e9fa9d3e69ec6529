"""The application factory: routers, error handlers, middleware, offline docs, lifespan.

The lifespan starts the executor's workers in a background thread (so /healthz answers and
/readyz says 503 while they boot) and, on shutdown, ends event streams and stops the workers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors
from service.deps import ServiceState
from service.executor import Executor
from service.jobs import JobManager
from service.metrics import MetricsMiddleware, ServiceMetrics, StateReading
from service.pictures import PictureCache
from service.registry import Registry
from service.routers import datasets, jobs, models, operations, sweeps
from service.schemas import DatasetCreate, PredictRequest, ProgressEvent
from service.settings import Settings
from service.sweeps import TASK_PREFIX as SWEEP_TASK_PREFIX
from service.sweeps import SweepManager

logger = logging.getLogger("service")

DESCRIPTION = """\
Train small neural networks over HTTP.

Create a **dataset**, queue a training **job** on it, follow the job (polling, history or
server-sent events) and use the **model** it registers: predict, draw its decision boundary and
loss curve, export and import it. A **sweep** trains a grid of hyperparameters together and
compares them side by side. Every error is an RFC 9457 `application/problem+json`.
"""
DOCS_STATIC = "/static/docs"


class BodySizeLimitMiddleware:
    """Answers 413 (problem+json) to bodies over `max_bytes`, whether declared by
    Content-Length or streamed in chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else None
                break
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # no Content-Length (chunked): read the body up to the cap, then replay it
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = errors.problem_response(
            413,
            "payload-too-large",
            "Payload too large",
            f"the request body exceeds max_request_bytes = {self.max_bytes}",
        )
        await response(scope, receive, send)


def _install_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from assets bundled in a package: no CDN, works offline."""
    static = files("fastapi_offline") / "static"
    app.mount(DOCS_STATIC, StaticFiles(directory=str(static)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="scratchnet API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="scratchnet API",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, then: errors as application/problem+json, a 415 wherever a JSON
    body is taken (service.errors answers one for any other Content-Type); the bodies routes read
    by hand (DatasetCreate: two content types; PredictRequest: parsed off the event loop when
    large) and the event-stream payload (ProgressEvent) added to the components."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for body in (DatasetCreate, PredictRequest, ProgressEvent):
        schemas[body.__name__] = body.model_json_schema(ref_template="#/components/schemas/{model}")
    problem = {"$ref": "#/components/schemas/Problem"}
    for path_item in document["paths"].values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            takes_json = "application/json" in operation.get("requestBody", {}).get("content", {})
            if takes_json and "415" not in responses:  # errors: any other Content-Type -> 415
                responses["415"] = {"description": "The body is not sent as application/json."}
                operation["responses"] = dict(sorted(responses.items()))
                responses = operation["responses"]
            automatic = responses.get("422", {}).get("content", {}).get("application/json", {})
            if automatic.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]  # FastAPI's guess; this route's parameters cannot fail
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = {errors.PROBLEM_MEDIA_TYPE: {"schema": problem}}
                elif code in ("204", "304"):
                    response.pop("content", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = document
    return document


def create_app(settings: Settings | None = None, executor: Executor | None = None) -> FastAPI:
    """A new app with its own registry and executor (default: worker processes)."""
    settings = settings or Settings()
    if executor is None:
        from service.process_pool import LocalProcessExecutor

        executor = LocalProcessExecutor(
            settings.workers,
            settings.max_queued_jobs,
            preload=(
                "numpy",
                "engine",
                "engine.training",
                "engine.packed",
                "service.tasks",
                "service.sweep_tasks",
            ),
        )
    registry = Registry()
    metrics = ServiceMetrics()
    manager = JobManager(registry, executor, settings, metrics)
    sweep_manager = SweepManager(registry, executor, settings, manager)
    manager.route_events(SWEEP_TASK_PREFIX, sweep_manager.on_event)

    def read_state() -> StateReading:
        counts = executor.counts() if manager.started else {}
        return StateReading(
            jobs_by_status=manager.counts_by_status(),
            queued=counts.get("queued", 0),
            running=counts.get("running", 0),
            workers=len(executor.worker_pids()) if manager.started else 0,
            event_streams=manager.open_streams() + sweep_manager.open_streams(),
        )

    metrics.watch_state(read_state)
    state = ServiceState(
        settings=settings,
        registry=registry,
        executor=executor,
        jobs=manager,
        pictures=PictureCache(settings.picture_cache_size),
        metrics=metrics,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def start() -> None:
            try:
                manager.start()
            except Exception:
                logger.exception("the training workers did not start")

        starter = threading.Thread(target=start, name="scratchnet-start", daemon=True)
        starter.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(starter.join)
            await anyio.to_thread.run_sync(manager.close)
            sweep_manager.wake_all()

    app = FastAPI(
        title="scratchnet",
        version=operations.package_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_tags=[
            {"name": "datasets", "description": "Points to learn from, split for testing."},
            {"name": "jobs", "description": "Training runs in worker processes."},
            {"name": "models", "description": "Trained networks."},
            {
                "name": "sweeps",
                "description": "Grids of configurations trained together, side by side.",
            },
            {"name": "operations", "description": "Health, readiness, metrics, info."},
        ],
    )
    app.state.scratchnet = state
    app.state.sweeps = sweep_manager
    errors.install(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Routes are matched in order: the busiest (predict, job polling) first. The routes
    # themselves, not app.include_router(): FastAPI wraps an included router in a node it
    # matches twice per request, which made a one-point predict ~40% slower.
    for module in (models, jobs, datasets, sweeps, operations):
        app.router.routes.extend(module.router.routes)
    _install_docs(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
