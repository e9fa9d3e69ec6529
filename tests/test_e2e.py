"""End to end against a real `python -m service` process with two training workers: its own
worker processes, and (each test again) the workers of a real Dask cluster."""

from __future__ import annotations

import contextlib
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


def read_events(response: httpx.Response) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each event of an open event stream; comments yield
    ("comment", text, None)."""
    event, data, event_id = "message", [], None
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "comment", line, None
        elif line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("id:"):
            event_id = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].removeprefix(" "))
        elif not line and data:
            yield event, "\n".join(data), event_id
            event, data, event_id = "message", [], None


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
        for event, data, _ in read_events(response):
            if event == "progress":
                progress.append(json.loads(data))
            elif event == "status":
                final = json.loads(data)
    assert final is not None and final["status"] == "succeeded"
    assert [point["epoch"] for point in progress] == list(range(100, 3001, 100))
    assert {point["job_id"] for point in progress} == {job["id"]}
    # a snapshot (snapshot_every 100) came through the worker protocol with every point
    assert [point["snapshot_epoch"] for point in progress] == list(range(100, 3001, 100))

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

    # the job's latest snapshot is the model: the same boundary, byte for byte
    boundary = "decision-boundary.png?width=320&height=240&resolution=60"
    assert http.get(f"/v1/jobs/{job['id']}/{boundary}").content == (
        http.get(f"/v1/models/{model_id}/{boundary}").content
    )
    assert len(http.get(f"/v1/jobs/{job['id']}/snapshots").json()["epochs"]) == 30

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
    try:
        wait_for_epoch(http, job["id"], 100)
    finally:
        post(http, f"/v1/jobs/{job['id']}/cancel", 202)
    done = wait_for(http, job["id"])
    assert (done["status"], done["model_id"]) == ("cancelled", None)
    assert done["epoch"] < LONG_JOB["epochs"]


def test_last_event_id_resumes_a_live_stream_without_gap_or_duplicate(http: httpx.Client) -> None:
    """Follow a running job, leave, let it record more points, come back with Last-Event-ID:
    the missed points are replayed, then live ones follow, each once, to the final status."""
    dataset = post(http, "/v1/datasets", 201, json={"kind": "moons", "n_samples": 100})
    job = post(
        http, "/v1/jobs", 202, json={"dataset_id": dataset["id"], "hyperparameters": LONG_JOB}
    )
    url = f"/v1/jobs/{job['id']}/events"
    step = LONG_JOB["record_every"]
    try:
        before: list[int] = []
        with http.stream("GET", url) as response:
            for event, data, event_id in read_events(response):
                if event == "progress":
                    assert event_id == str(json.loads(data)["epoch"])
                    before.append(int(event_id))
                if len(before) == 3:
                    break  # the client goes away while the job trains on
        wait_for_epoch(http, job["id"], before[-1] + 5 * step)  # points recorded meanwhile
        after: list[int] = []
        final: dict[str, Any] | None = None
        headers = {"Last-Event-ID": str(before[-1])}
        with http.stream("GET", url, headers=headers) as response:
            for event, data, event_id in read_events(response):
                if event == "progress":
                    assert event_id == str(json.loads(data)["epoch"])
                    after.append(int(event_id))
                    if len(after) == 8:  # the missed points and live ones: now stop the job
                        post(http, f"/v1/jobs/{job['id']}/cancel", 202)
                elif event == "status":
                    final = json.loads(data)
    finally:
        http.post(f"/v1/jobs/{job['id']}/cancel")  # 409 once it has stopped
    assert final is not None and final["status"] == "cancelled"
    epochs = before + after
    # every recorded point once, in order: multiples of record_every, then (maybe) the epoch
    # the cancel stopped at
    regular = [epoch for epoch in epochs if epoch % step == 0]
    assert regular == list(range(step, step * len(regular) + 1, step))
    assert epochs[: len(regular)] == regular and len(epochs) - len(regular) <= 1
    assert epochs == sorted(set(epochs))
    assert epochs[-1] == final["epoch"]
    history = http.get(f"/v1/jobs/{job['id']}/history").json()["history"]
    assert [point["epoch"] for point in history] == epochs


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def runnable(pid: int) -> bool:
    """Whether any thread of the process is runnable now (computing, or waiting for a core on
    a loaded machine): the training may run in a thread other than the main one (Dask's)."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):  # a thread that just ended
            if stat.read_text().rpartition(")")[2].split()[0] == "R":
                return True
    return False


def busiest(pids: list[int]) -> int:
    """The worker running the training job: the one seen runnable while the idle one sleeps
    (on its pipe, or between heartbeats). Decided on how often each is seen runnable, not on
    CPU time, so the machine's load does not matter."""
    seen = dict.fromkeys(pids, 0)
    for _ in range(1000):
        for pid in pids:
            seen[pid] += runnable(pid)
        (most, first), (other, _) = sorted(
            ((count, pid) for pid, count in seen.items()), reverse=True
        )
        if most >= 20 and most >= 10 * other:
            return first
        time.sleep(0.005)
    raise AssertionError(f"no worker stands out: {seen}")


def test_a_killed_worker_fails_its_job_and_the_service_goes_on(
    http: httpx.Client, live_server: LiveServer
) -> None:
    dataset = post(http, "/v1/datasets", 201, json={"kind": "moons", "n_samples": 100})
    job = post(
        http, "/v1/jobs", 202, json={"dataset_id": dataset["id"], "hyperparameters": LONG_JOB}
    )
    try:
        wait_for_epoch(http, job["id"], 100)
        before = http.get("/v1/info").json()
        pids = before["worker_pids"]
        assert set(pids) <= live_server.worker_processes()
        victim = busiest(pids)
        os.kill(victim, signal.SIGKILL)
    except BaseException:
        http.post(f"/v1/jobs/{job['id']}/cancel")  # leave no busy worker behind
        raise

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
def test_sigterm_ends_open_event_streams_cancels_training_and_stops_the_workers(
    tmp_path: Path,
) -> None:
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
        seen: list[tuple[str, str, str | None]] = []
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
        # a keep-alive ping and a few points arrive: the job is training, the stream is live
        while not (
            any(kind == "comment" for kind, _, _ in seen)
            and sum(kind == "progress" for kind, _, _ in seen) >= 3
        ):
            assert time.monotonic() < deadline, [kind for kind, _, _ in seen]
            time.sleep(0.05)
        workers = http.get("/v1/info").json()["worker_pids"]
        assert len(workers) == 2
        server.stop()  # fails unless the server shuts down cleanly
        listener.join(JOB_SECONDS)
        assert not listener.is_alive()
    # the stream ended properly (not cut, no error) and before any final status: the job had
    # not finished by itself
    assert errors == []
    assert "status" not in [kind for kind, _, _ in seen]
    # the training job was cancelled (stopping at its stop flag, no worker had to be killed)
    output = server.output()
    assert f"shutdown: job {job['id']} cancelled" in output, output
    assert "did not stop when asked" not in output and "killing it" not in output
    # and the workers are gone
    assert not [pid for pid in workers if psutil.pid_exists(pid) and not gone(pid)]
