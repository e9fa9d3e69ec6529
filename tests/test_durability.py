"""Durable state against real `python -m service` processes and a real data directory: a
SIGTERM or a `kill -9` mid-training loses nothing, interrupted work runs again and ends as an
uninterrupted run would; without a data directory memory stays bounded."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.api_support import FINISHED, JOB_SECONDS, serve

pytestmark = pytest.mark.e2e

# Long enough to be stopped mid-run (a few seconds), short enough to run twice in a test.
INTERRUPTED_JOB: dict[str, Any] = {
    "hidden_layers": [3],
    "epochs": 30_000,
    "learning_rate": 2.0,
    "l2": 0.01,
    "optimizer": "sgd",
    "record_every": 500,
}
# What resident memory may exceed the stored-bytes bound by: a 1M-point dataset built and then
# refused (~60 MB of arrays) plus what the allocator keeps; measured peaks ~60-110 MB over it.
MEMORY_MARGIN = 200_000_000
# A request's timeout where SQLite writes wait on a busy disk (a first dataset took 6 s with
# the machine's load at 17).
SLOW_REQUEST_SECONDS = 60.0
POINTS = {"points": [[x / 4, y / 4] for x in range(-6, 10) for y in range(-4, 6)]}


def wait_until(http: httpx.Client, job_id: str, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_SECONDS
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job stuck: {job}"
        time.sleep(0.02)


def moons(http: httpx.Client) -> str:
    response = http.post("/v1/datasets", json={"kind": "moons", "n_samples": 200, "noise": 0.2})
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def submit(http: httpx.Client, dataset_id: str) -> str:
    body = {"dataset_id": dataset_id, "hyperparameters": INTERRUPTED_JOB}
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def predictions(http: httpx.Client, job: dict[str, Any]) -> bytes:
    response = http.post(f"/v1/models/{job['model_id']}/predict", json=POINTS)
    assert response.status_code == 200, response.text
    return response.content


def wait_sweep(http: httpx.Client, sweep_id: str, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_SECONDS
    while True:
        sweep: dict[str, Any] = http.get(f"/v1/sweeps/{sweep_id}").json()
        if done(sweep):
            return sweep
        assert time.monotonic() < deadline, f"sweep stuck: {sweep}"
        time.sleep(0.02)


def kept(http: httpx.Client) -> dict[str, bytes]:
    """What must come back unchanged: the datasets, and each model with its predictions."""
    seen = {"datasets": http.get("/v1/datasets?limit=500").content}
    for model in http.get("/v1/models?limit=500").json()["items"]:
        url = f"/v1/models/{model['id']}"
        seen[url] = http.get(url).content
        seen[f"{url}/predict"] = http.post(f"{url}/predict", json=POINTS).content
    return seen


def test_work_running_at_sigterm_runs_again_after_the_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve(tmp_path, data_dir=str(data)) as server, httpx.Client(base_url=server.url) as http:
        dataset_id = moons(http)
        quick = {**INTERRUPTED_JOB, "epochs": 200}
        body = {
            "dataset_id": dataset_id,
            "base": INTERRUPTED_JOB,
            "grid": {"epochs": [200, 30_000]},
        }
        sweep_id = http.post("/v1/sweeps", json=body).json()["id"]
        first = wait_sweep(
            http, sweep_id, lambda sweep: sweep["results"][0]["status"] == "succeeded"
        )
        exported = http.get(f"/v1/models/{first['results'][0]['model_id']}/export").content
        imported = http.post(
            "/v1/models/import",
            content=exported,
            headers={"content-type": "application/octet-stream"},
        )
        assert imported.status_code == 201
        job_id = submit(http, dataset_id)
        wait_until(http, job_id, lambda job: job["epoch"] >= 1000)
        assert http.post("/v1/jobs", json={"dataset_id": dataset_id, "hyperparameters": quick})
        before = kept(http)
        server.stop(seconds=10.0)  # the container runtime's grace period
    with serve(tmp_path, data_dir=str(data)) as server, httpx.Client(base_url=server.url) as http:
        resumed = wait_until(http, job_id, lambda job: job["status"] in FINISHED)
        assert resumed["status"] == "succeeded", resumed
        assert resumed["attempt"] == 2 and resumed["epoch"] == INTERRUPTED_JOB["epochs"]
        sweep = wait_sweep(http, sweep_id, lambda sweep: sweep["status"] in FINISHED)
        assert sweep["status"] == "succeeded" and sweep["attempt"] == 2, sweep
        assert sweep["results"][0] == first["results"][0]  # kept, not trained again
        assert [row["status"] for row in sweep["results"]] == ["succeeded", "succeeded"]
        assert {k: v for k, v in kept(http).items() if k in before} == before
        uninterrupted = wait_until(
            http, submit(http, dataset_id), lambda job: job["status"] in FINISHED
        )
        assert uninterrupted["attempt"] == 1
        assert predictions(http, resumed) == predictions(http, uninterrupted)
        history = http.get(f"/v1/jobs/{job_id}/history").json()["history"]
        again = http.get(f"/v1/jobs/{uninterrupted['id']}/history").json()["history"]
        assert history == again


def test_a_continued_job_recovers_after_a_restart_from_its_model(tmp_path: Path) -> None:
    """A job with init_model_id runs again after a SIGTERM from the same model and ends as an
    uninterrupted one; a continued job whose model was deleted before the restart fails
    `interrupted`, naming the model."""
    data = tmp_path / "data"
    quick = {**INTERRUPTED_JOB, "epochs": 200}
    with (
        serve(tmp_path, data_dir=str(data)) as server,
        httpx.Client(base_url=server.url, timeout=SLOW_REQUEST_SECONDS) as http,
    ):
        dataset_id = moons(http)
        parent = http.post("/v1/jobs", json={"dataset_id": dataset_id, "hyperparameters": quick})
        parent = wait_until(http, parent.json()["id"], lambda job: job["status"] in FINISHED)
        doomed = http.post("/v1/jobs", json={"dataset_id": dataset_id, "hyperparameters": quick})
        doomed = wait_until(http, doomed.json()["id"], lambda job: job["status"] in FINISHED)
        bodies = [
            {
                "dataset_id": dataset_id,
                "init_model_id": model_id,
                "hyperparameters": {"epochs": INTERRUPTED_JOB["epochs"]},
            }
            for model_id in (parent["model_id"], doomed["model_id"])
        ]
        job_id = http.post("/v1/jobs", json=bodies[0]).json()["id"]
        orphan_id = http.post("/v1/jobs", json=bodies[1]).json()["id"]
        wait_until(http, job_id, lambda job: job["epoch"] >= 200 + 1000)
        assert http.get(f"/v1/jobs/{orphan_id}").json()["status"] in ("queued", "running")
        assert http.delete(f"/v1/models/{doomed['model_id']}").status_code == 204
        server.stop(seconds=10.0)
    with (
        serve(tmp_path, data_dir=str(data)) as server,
        httpx.Client(base_url=server.url, timeout=SLOW_REQUEST_SECONDS) as http,
    ):
        resumed = wait_until(http, job_id, lambda job: job["status"] in FINISHED)
        assert resumed["status"] == "succeeded", resumed
        assert resumed["attempt"] == 2 and resumed["init_model_id"] == parent["model_id"]
        assert resumed["epoch"] == 200 + INTERRUPTED_JOB["epochs"]
        orphan = wait_until(http, orphan_id, lambda job: job["status"] in FINISHED)
        assert orphan["status"] == "failed" and orphan["error"]["type"] == "interrupted"
        assert f"model {doomed['model_id']}" in orphan["error"]["detail"]
        again = http.post("/v1/jobs", json=bodies[0]).json()["id"]
        uninterrupted = wait_until(http, again, lambda job: job["status"] in FINISHED)
        assert predictions(http, resumed) == predictions(http, uninterrupted)
        model = http.get(f"/v1/models/{resumed['model_id']}").json()
        assert model["continued_from"] == parent["model_id"]


def test_kill_9_mid_training_and_mid_imports_leaves_every_entry_readable(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with serve(tmp_path, data_dir=str(data)) as server, httpx.Client(base_url=server.url) as http:
        dataset_id = moons(http)
        trained = wait_until(
            http,
            submit(http, dataset_id),
            lambda job: job["status"] in FINISHED,
        )
        exported = http.get(f"/v1/models/{trained['model_id']}/export").content
        job_id = submit(http, dataset_id)
        wait_until(http, job_id, lambda job: job["epoch"] >= 1000)
        answers: list[int] = []

        def import_one() -> None:
            try:
                response = httpx.post(
                    f"{server.url}/v1/models/import",
                    content=exported,
                    headers={"content-type": "application/octet-stream"},
                    timeout=30.0,
                )
                answers.append(response.status_code)
            except httpx.TransportError:
                answers.append(0)  # the server died mid-request

        threads = [threading.Thread(target=import_one) for _ in range(50)]
        for thread in threads:
            thread.start()
        while not answers:
            time.sleep(0.001)
        server.process.send_signal(signal.SIGKILL)
        for thread in threads:
            thread.join()
        server.process.wait()
        assert 0 in answers, "the kill came after every import; nothing was tested"
    with serve(tmp_path, data_dir=str(data)) as server, httpx.Client(base_url=server.url) as http:
        models = http.get("/v1/models?limit=500").json()["items"]
        assert len(models) >= 1 + answers.count(201)
        expected = predictions(http, trained)
        for model in models:
            response = http.post(f"/v1/models/{model['id']}/predict", json=POINTS)
            assert response.content == expected, model
        resumed = wait_until(http, job_id, lambda job: job["status"] in FINISHED)
        assert resumed["status"] == "succeeded" and resumed["attempt"] == 2
        assert predictions(http, resumed) == expected


def test_without_a_data_directory_memory_stays_bounded(tmp_path: Path) -> None:
    cap = 150_000_000  # about two datasets of a million points
    with serve(tmp_path, max_stored_bytes=str(cap)) as server:
        process = psutil.Process(server.process.pid)
        with httpx.Client(base_url=server.url, timeout=60.0) as http:
            # warm: the first dataset imports the generators, the first JSON answer pydantic's
            warm = http.post("/v1/datasets", json={"kind": "moons", "n_samples": 1000})
            assert warm.status_code == 201 and http.delete(warm.headers["location"]).is_success
            baseline = process.memory_info().rss
            statuses = []
            for _ in range(4):
                response = http.post("/v1/datasets", json={"kind": "moons", "n_samples": 1_000_000})
                statuses.append(response.status_code)
                # the bound, plus one refused dataset being built (~60 MB) and the allocator's slack
                assert process.memory_info().rss < baseline + cap + MEMORY_MARGIN
            assert statuses[:2] == [201, 201] and set(statuses[2:]) == {507}, statuses
            problem = response.json()
            assert f"max_stored_bytes = {cap}" in problem["detail"]
            info = http.get("/v1/info").json()
            assert 0 < info["stored_bytes"] <= cap
            assert http.get("/healthz").status_code == 200
