"""End to end against a real `python -m service` process with two training workers: its own
worker processes, and (each test again) the workers of a real Dask cluster."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.api_support import (
    JOB_SECONDS,
    LONG_JOB,
    QUICK_JOB,
    LiveServer,
    png_size,
    serve,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30.0) as client:
        yield client


def post(http: httpx.Client, url: str, status: int, **kwargs: Any) -> dict[str, Any]:
    response = http.post(url, **kwargs)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_epoch(http: httpx.Client, job_id: str, epoch: int) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_SECONDS
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        if job["epoch"] >= epoch:
            return job
        assert time.monotonic() < deadline, f"job stuck: {job}"
        time.sleep(0.02)


def read_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) pairs from an open event stream; comments yield ("comment", text)."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "comment", line
        elif line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].removeprefix(" "))
        elif not line and data:
            yield event, "\n".join(data)
            event, data = "message", []


def test_dataset_job_events_model_predict_pictures_export_import(http: httpx.Client) -> None:
    dataset = post(http, "/v1/datasets", 201, json={"kind": "moons", "n_samples": 200})
    job = post(
        http,
        "/v1/jobs",
        202,
        json={
            "dataset_id": dataset["id"],
            "hyperparameters": {
                "hidden_layers": [8],
                "epochs": 3000,
                "record_every": 100,
                "optimizer": "adam",
                "learning_rate": 0.02,
            },
        },
    )

    # follow it live: every recorded point once, in order, then the final status
    progress: list[dict[str, Any]] = []
    final: dict[str, Any] | None = None
    with http.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event, data in read_events(response):
            if event == "progress":
                progress.append(json.loads(data))
            elif event == "status":
                final = json.loads(data)
    assert final is not None and final["status"] == "succeeded"
    assert [point["epoch"] for point in progress] == list(range(100, 3001, 100))
    assert {point["job_id"] for point in progress} == {job["id"]}

    polled = wait_for(http, job["id"])
    assert polled == final | {"elapsed_seconds": polled["elapsed_seconds"]}
    assert polled["metrics"]["train_accuracy"] > 0.8
    model_id = polled["model_id"]
    model = http.get(f"/v1/models/{model_id}").json()
    assert model["architecture"] == [2, 8, 2]

    grid = [[x / 4, y / 4] for x in range(-4, 9) for y in range(-2, 5)]
    predicted = post(http, f"/v1/models/{model_id}/predict", 200, json={"points": grid})
    assert len(predicted["classes"]) == len(grid)

    for url, size in (
        (f"/v1/datasets/{dataset['id']}/image.png?width=300&height=220", (300, 220)),
        (
            f"/v1/models/{model_id}/decision-boundary.png?width=320&height=240&resolution=60",
            (320, 240),
        ),
        (f"/v1/models/{model_id}/loss-curve.png?log_scale=true", (640, 480)),
    ):
        picture = http.get(url)
        assert picture.status_code == 200, picture.text
        assert picture.headers["content-type"] == "image/png"
        assert png_size(picture.content) == size

    exported = http.get(f"/v1/models/{model_id}/export")
    assert exported.status_code == 200
    imported = post(
        http,
        "/v1/models/import",
        201,
        content=exported.content,
        headers={"content-type": "application/octet-stream"},
    )
    again = post(http, f"/v1/models/{imported['id']}/predict", 200, json={"points": grid})
    assert again == predicted


def test_cancel_a_long_job(http: httpx.Client) -> None:
    dataset = post(http, "/v1/datasets", 201, json={"kind": "moons", "n_samples": 100})
    job = post(
        http, "/v1/jobs", 202, json={"dataset_id": dataset["id"], "hyperparameters": LONG_JOB}
    )
    wait_for_epoch(http, job["id"], 100)
    post(http, f"/v1/jobs/{job['id']}/cancel", 202)
    done = wait_for(http, job["id"])
    assert (done["status"], done["model_id"]) == ("cancelled", None)
    assert done["epoch"] < LONG_JOB["epochs"]


def busiest(pids: list[int]) -> int:
    """The worker that uses the CPU: the one running the training job."""
    processes = [psutil.Process(pid) for pid in pids]
    start = [sum(p.cpu_times()[:2]) for p in processes]
    deadline = time.monotonic() + 10
    while True:
        time.sleep(0.2)
        used = [sum(p.cpu_times()[:2]) - s for p, s in zip(processes, start, strict=True)]
        ranked = sorted(zip(used, pids, strict=True), reverse=True)
        if ranked[0][0] > 0.15 and ranked[0][0] > 4 * ranked[1][0]:
            return ranked[0][1]
        assert time.monotonic() < deadline, f"no worker stands out: {ranked}"


def test_a_killed_worker_fails_its_job_and_the_service_goes_on(
    http: httpx.Client, live_server: LiveServer
) -> None:
    dataset = post(http, "/v1/datasets", 201, json={"kind": "moons", "n_samples": 100})
    job = post(
        http, "/v1/jobs", 202, json={"dataset_id": dataset["id"], "hyperparameters": LONG_JOB}
    )
    wait_for_epoch(http, job["id"], 100)
    before = http.get("/v1/info").json()
    pids = before["worker_pids"]
    assert set(pids) <= live_server.worker_processes()
    victim = busiest(pids)
    os.kill(victim, signal.SIGKILL)

    failed = wait_for(http, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "worker_lost"
    # the error names the worker: its process id here, its address on a cluster
    cluster = before["cluster"] or []
    names = [w["name"] for w in cluster if w["pid"] == victim] or [f"process {victim}"]
    assert names[0] in failed["error"]["detail"], failed["error"]
    assert failed["model_id"] is None

    quick = post(
        http, "/v1/jobs", 202, json={"dataset_id": dataset["id"], "hyperparameters": QUICK_JOB}
    )
    assert wait_for(http, quick["id"])["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while True:  # the pool (or the Dask worker's nanny) replaces the dead worker
        info = http.get("/v1/info").json()
        if info["ready"] and len(info["worker_pids"]) == 2:
            break
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    assert victim not in info["worker_pids"]
    ready = http.get("/readyz")
    assert ready.status_code == 200
    cluster_now = ready.json()["cluster"]  # a cluster's workers and their resources, or null
    if live_server.cluster is None:
        assert cluster_now is None
    else:
        assert sorted(w["pid"] for w in cluster_now) == sorted(info["worker_pids"])
        assert all(w["resources"] == {"train": 1.0} for w in cluster_now)


@pytest.mark.slow
def test_sigterm_ends_open_event_streams_and_stops_cleanly(tmp_path: Path) -> None:
    with (
        serve(tmp_path, sse_ping_seconds="0.2") as server,
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        dataset = post(http, "/v1/datasets", 201, json={"kind": "moons", "n_samples": 100})
        job = post(
            http,
            "/v1/jobs",
            202,
            json={"dataset_id": dataset["id"], "hyperparameters": LONG_JOB},
        )
        seen: list[tuple[str, str]] = []
        stream_open = threading.Event()

        errors: list[Exception] = []

        def listen() -> None:
            try:
                with (
                    httpx.Client(base_url=server.url, timeout=30.0) as own,
                    own.stream("GET", f"/v1/jobs/{job['id']}/events") as response,
                ):
                    stream_open.set()
                    for item in read_events(response):
                        seen.append(item)
            except Exception as exc:  # e.g. a stream cut without its last chunk
                errors.append(exc)

        listener = threading.Thread(target=listen)
        listener.start()
        assert stream_open.wait(JOB_SECONDS)
        deadline = time.monotonic() + JOB_SECONDS
        while not any(kind == "comment" for kind, _ in seen):  # a keep-alive ping arrives
            assert time.monotonic() < deadline, [kind for kind, _ in seen]
            time.sleep(0.05)
        server.stop()  # fails unless the server shuts down cleanly
        listener.join(JOB_SECONDS)
        assert not listener.is_alive()
        assert errors == []  # the stream ended properly, not cut
        assert any(kind == "progress" for kind, _ in seen)
