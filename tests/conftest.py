"""Fixtures for the service tests: an app with its lifespan running (two real worker
processes) driven through httpx's ASGI transport, a real `python -m service` process, and a
real Dask cluster (a scheduler and two worker processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from tests.api_support import LiveServer, api_settings, cancel_unfinished, serve, wait_ready
from tests.dask_support import DaskCluster, dask_cluster


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def structured_logs_through_logging() -> None:
    """The service's structlog lines (service.logs) as standard-library records, where pytest
    captures them (and caplog sees them), instead of printed to stdout."""
    import structlog

    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )


@pytest.fixture(scope="session")
async def app(anyio_backend: str) -> AsyncIterator[FastAPI]:
    """One app for the API tests: 2 workers, small limits (see api_settings)."""
    from service.main import create_app  # here, so engine-only test runs never import FastAPI

    application = create_app(api_settings())
    async with application.router.lifespan_context(application):
        await wait_ready(application)
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the shared app; whatever a test leaves training (it failed before its own
    cancel, say) is cancelled after it, so no failure cascades into busy workers."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
        await cancel_unfinished(client)


@pytest.fixture(scope="session", params=["local", "dask"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """`python -m service` on port 0 with 2 workers, shared by the end-to-end tests: once
    with worker processes of its own, once training on the session's Dask cluster."""
    cluster: DaskCluster | None = None
    settings = {}
    if request.param == "dask":
        cluster = request.getfixturevalue("shared_cluster")
        settings["executor"] = cluster.address
    with serve(tmp_path_factory.mktemp("server"), **settings) as server:
        server.cluster = cluster
        yield server


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    with dask_cluster(tmp_path_factory.mktemp("dask"), workers=2) as cluster:
        yield cluster


@pytest.fixture
def cluster(shared_cluster: DaskCluster) -> DaskCluster:
    """The session's Dask cluster with both its workers up (a test may have killed one: its
    nanny starts a new one)."""
    shared_cluster.wait_for_workers(2)
    return shared_cluster
