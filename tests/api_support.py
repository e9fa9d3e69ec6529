"""Helpers shared by the API and end-to-end tests."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import psutil
from fastapi import FastAPI
from PIL import Image

from service.api.deps import ServiceState
from service.execution.executor import Executor
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PROBLEM = "https://scratchnet.dev/problems/"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FINISHED = ("succeeded", "failed", "cancelled")
SERVER_START_SECONDS = 60.0
JOB_SECONDS = 60.0

# A job that trains far longer than any test waits; tests cancel it.
LONG_JOB: dict[str, Any] = {"hidden_layers": [64], "epochs": 1_000_000, "record_every": 100}
# A job that finishes in well under a second.
QUICK_JOB: dict[str, Any] = {"hidden_layers": [4], "epochs": 60, "record_every": 20}


def api_settings(**overrides: Any) -> Settings:
    """Small limits so each one can be hit with tiny requests."""
    values: dict[str, Any] = {
        "workers": 2,
        "max_queued_jobs": 16,
        "job_timeout_seconds": 120.0,
        "max_hidden_layers": 3,
        "max_units_per_layer": 64,
        "max_samples": 2000,
        "max_epochs": 1_000_000,
        "max_work": 1e11,
        "predict_max_points": 50,
        "max_request_bytes": 64 * 1024,
        "picture_cache_size": 8,
        "page_size_default": 3,
        "page_size_max": 5,
        # the tests poll and clean up as fast as the in-process transport answers (well over
        # 100 requests a second); test_auth checks the rate limit with its own settings
        "rate_limit": "100000/s",
        "rate_limit_burst": 100_000,
        **overrides,
    }
    return Settings(**values)


def state_of(app: FastAPI) -> ServiceState:
    state: ServiceState = app.state.scratchnet
    return state


async def wait_ready(app: FastAPI, seconds: float = SERVER_START_SECONDS) -> None:
    state = state_of(app)
    with anyio.fail_after(seconds):
        while not state.dispatcher.ready:
            await anyio.sleep(0.05)


@asynccontextmanager
async def running_app(
    settings: Settings, executor: Executor | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """An app of its own with its lifespan running (its workers up) and a client of it; on exit
    the lifespan's shutdown cancels whatever is still queued or running."""
    from service.main import create_app

    app = create_app(settings, executor=executor)
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, app


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """running_app with api_settings (one worker unless `settings` say otherwise)."""
    async with running_app(api_settings(**{"workers": 1, **settings})) as (client, app):
        yield app, client


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status and type; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug, body
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


def png_size(content: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    assert content[:8] == PNG_SIGNATURE
    assert content[12:16] == b"IHDR"
    width, height = struct.unpack(">II", content[16:24])
    return int(width), int(height)


def png_pixels(content: bytes) -> np.ndarray:
    """The PNG's pixels as (height, width, 3) RGB values."""
    png_size(content)
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))


def changed_pixels(picture: bytes, reference: bytes) -> np.ndarray:
    """(height, width) mask of the pixels where two PNGs of one size differ."""
    difference: np.ndarray = (png_pixels(picture) != png_pixels(reference)).any(axis=2)
    return difference


async def create_dataset(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/datasets", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def create_job(
    client: httpx.AsyncClient, dataset_id: str, **hyperparameters: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, "hyperparameters": hyperparameters}
    )
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


async def wait_for_job(
    client: httpx.AsyncClient,
    job_id: str,
    statuses: tuple[str, ...] = FINISHED,
    seconds: float = JOB_SECONDS,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll (with `headers`, e.g. a key) until the job is in one of `statuses`; returns it."""
    with anyio.fail_after(seconds):
        while True:
            response = await client.get(f"/v1/jobs/{job_id}", headers=headers)
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()
            if job["status"] in statuses:
                return job
            await anyio.sleep(0.02)


async def wait_for_epoch(client: httpx.AsyncClient, job_id: str, epoch: int) -> dict[str, Any]:
    """Poll until the running job has recorded at least `epoch`."""
    with anyio.fail_after(JOB_SECONDS):
        while True:
            job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] != "running" and job["status"] != "queued":
                raise AssertionError(f"job ended before epoch {epoch}: {job}")
            if job["epoch"] >= epoch:
                return job
            await anyio.sleep(0.02)


async def trained_model(client: httpx.AsyncClient, dataset: dict[str, Any]) -> dict[str, Any]:
    """Train QUICK_JOB on `dataset` and return the model it registered."""
    job = await create_job(client, dataset["id"], **QUICK_JOB)
    finished = await wait_for_job(client, job["id"])
    assert finished["status"] == "succeeded", finished
    response = await client.get(f"/v1/models/{finished['model_id']}")
    assert response.status_code == 200
    model: dict[str, Any] = response.json()
    return model


async def cancel_unfinished(client: httpx.AsyncClient) -> None:
    """Cancel every queued or running job and sweep and wait until each has finished, so that
    work a failed test left behind never keeps a worker busy for the tests after it."""
    for kind in ("jobs", "sweeps"):
        unfinished: list[str] = []
        for status in ("queued", "running"):
            offset = 0
            while True:
                page = (
                    await client.get(f"/v1/{kind}", params={"status": status, "offset": offset})
                ).json()
                unfinished += [item["id"] for item in page["items"]]
                offset += len(page["items"])
                if not page["items"] or offset >= page["total"]:
                    break
        for item_id in unfinished:
            await client.post(f"/v1/{kind}/{item_id}/cancel")  # 409 if it finished meanwhile
        with anyio.fail_after(JOB_SECONDS):
            for item_id in unfinished:
                while (await client.get(f"/v1/{kind}/{item_id}")).json()["status"] not in FINISHED:
                    await anyio.sleep(0.02)


def parse_sse(text: str) -> list[dict[str, str]]:
    """Events of an event-stream body as {field: value}; comment lines (pings) dropped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events


# --- a real server -----------------------------------------------------------------------------


def wait_for(
    http: httpx.Client, job_id: str, statuses: tuple[str, ...] = FINISHED
) -> dict[str, Any]:
    """Poll a real server until the job is in one of `statuses`; returns the job."""
    deadline = time.monotonic() + JOB_SECONDS
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stuck: {job}"
        time.sleep(0.02)


def free_port() -> int:
    """A port free now, for a command that must be told its port up front (another process may
    take it before the command binds it: prefer port 0, as serve does)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# uvicorn's start-up line; with --port 0 it names the port the kernel chose
LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+) ")


class LiveServer:
    """A `python -m service` process: its base URL and its combined output."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log
        self.cluster: Any = None  # the DaskCluster it trains on, if it does

    def worker_processes(self) -> set[int]:
        """The processes its training workers may be: its children, or the cluster's."""
        if self.cluster is not None:
            return set(self.cluster.descendants())
        return {child.pid for child in psutil.Process(self.process.pid).children()}

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, seconds: float = 30.0) -> None:
        """SIGTERM, then check it shut down cleanly: in time, through the lifespan's shutdown,
        exit status 0, without an error logged."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the server did not stop within {seconds} s of SIGTERM:\n{self.output()}"
            ) from None
        output = self.output()
        assert code == 0, output
        assert "Application shutdown complete." in output, output
        assert "ERROR" not in output and "Traceback" not in output, output


@contextmanager
def serve(directory: Path, **settings: str) -> Iterator[LiveServer]:
    """Start `python -m service` on port 0 (the kernel picks a free port and uvicorn logs it, so
    no other process can take the port between choosing and binding it) with 2 workers unless
    `settings` say otherwise (SCRATCHNET_ names without the prefix), wait for /readyz, and on
    exit stop it with SIGTERM, which must end it cleanly (see LiveServer.stop)."""
    descriptor, name = tempfile.mkstemp(prefix="server-", suffix=".log", dir=directory)
    os.close(descriptor)
    env = {
        **os.environ,
        "SCRATCHNET_WORKERS": "2",
        "SCRATCHNET_LOG_LEVEL": "info",
        **{f"SCRATCHNET_{name.upper()}": value for name, value in settings.items()},
    }
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", "0"]
    with launch(command, env, REPO, Path(name)) as server:
        yield server


@contextmanager
def launch(
    command: list[str], env: dict[str, str], cwd: Path, log: Path, port: int | None = None
) -> Iterator[LiveServer]:
    """Run `command` (a service that listens on 127.0.0.1:`port`, or on the port its uvicorn
    start-up line names when `port` is None) in `cwd` with exactly `env`, its output to `log`;
    wait for /readyz, and on exit stop it with SIGTERM, which must end it cleanly (see
    LiveServer.stop)."""
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    server = LiveServer(process, "" if port is None else f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited at start:\n{server.output()}")
            if not server.url and (listening := LISTENING.search(server.output())):
                server.url = f"http://127.0.0.1:{listening[1]}"
            if server.url:
                try:
                    if httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server was not ready in time:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            server.stop()
