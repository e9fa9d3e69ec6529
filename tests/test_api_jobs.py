"""/v1/jobs through the app with two real worker processes."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from service.execution.executor import Task
from service.execution.process_pool import LocalProcessExecutor
from tests.api_support import (
    LONG_JOB,
    QUICK_JOB,
    api_settings,
    assert_problem,
    create_dataset,
    create_job,
    parse_sse,
    running_app,
    state_of,
    wait_for_epoch,
    wait_for_job,
)
from tests.documented import HYPERPARAMETER_DEFAULTS
from tests.pool_tasks import FailsUnexpectedly

pytestmark = pytest.mark.anyio


@pytest.fixture
async def moons(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_dataset(client, kind="moons", n_samples=100)


async def job_count(client: httpx.AsyncClient) -> int:
    total: int = (await client.get("/v1/jobs")).json()["total"]
    return total


async def test_a_job_is_accepted_then_succeeds_and_registers_a_model(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/jobs",
        json={"dataset_id": moons["id"], "hyperparameters": QUICK_JOB, "name": "tiny"},
    )
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["id"].startswith("job_")
    assert job["status"] == "queued"
    assert job["name"] == "tiny"
    expected = HYPERPARAMETER_DEFAULTS | QUICK_JOB
    assert job["hyperparameters"] == expected  # every option echoed, defaults included
    assert (job["epoch"], job["epochs"], job["model_id"], job["error"]) == (0, 60, None, None)

    done = await wait_for_job(client, job["id"])
    assert done["status"] == "succeeded"
    assert (done["epoch"], done["stop_reason"]) == (60, "completed")
    assert done["model_id"].startswith("mdl_")
    started, finished = (
        datetime.fromisoformat(done[name]) for name in ("started_at", "finished_at")
    )
    assert done["elapsed_seconds"] == round((finished - started).total_seconds(), 3)
    assert datetime.fromisoformat(done["created_at"]) <= started <= finished
    assert set(done["metrics"]) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    history = (await client.get(f"/v1/jobs/{job['id']}/history")).json()["history"]
    assert history[-1]["train_loss"] == done["metrics"]["train_loss"]
    model = (await client.get(f"/v1/models/{done['model_id']}")).json()
    assert (model["job_id"], model["dataset_id"]) == (job["id"], moons["id"])


async def test_history_since_and_max_points(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    job = await create_job(client, moons["id"], hidden_layers=[3], epochs=100, record_every=10)
    await wait_for_job(client, job["id"])
    url = f"/v1/jobs/{job['id']}/history"
    everything = (await client.get(url)).json()
    assert everything["job_id"] == job["id"]
    epochs = [point["epoch"] for point in everything["history"]]
    assert epochs == list(range(10, 101, 10))
    assert set(everything["history"][0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "learning_rate",
    }
    since = (await client.get(url, params={"since": 70})).json()["history"]
    assert [point["epoch"] for point in since] == [80, 90, 100]
    thinned = (await client.get(url, params={"max_points": 4})).json()["history"]
    assert [point["epoch"] for point in thinned] == [10, 40, 70, 100]
    assert_problem(await client.get(url, params={"max_points": 1}), 422, "validation-error")


async def test_events_of_a_finished_job_replay_then_status(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    job = await create_job(client, moons["id"], hidden_layers=[3], epochs=50, record_every=10)
    await wait_for_job(client, job["id"])
    response = await client.get(f"/v1/jobs/{job['id']}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [e["event"] for e in events] == ["progress"] * 5 + ["status"]
    assert [e["id"] for e in events[:-1]] == ["10", "20", "30", "40", "50"]
    first = json.loads(events[0]["data"])
    assert (first["job_id"], first["epoch"]) == (job["id"], 10)
    assert json.loads(events[-1]["data"])["status"] == "succeeded"

    resumed = await client.get(f"/v1/jobs/{job['id']}/events", headers={"last-event-id": "30"})
    assert [e.get("id") for e in parse_sse(resumed.text)] == ["40", "50", None]
    since = await client.get(f"/v1/jobs/{job['id']}/events?since=40")
    assert [e["event"] for e in parse_sse(since.text)] == ["progress", "status"]


async def test_events_follow_a_running_job_to_its_end(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    job = await create_job(client, moons["id"], hidden_layers=[8], epochs=400, record_every=100)
    response = await client.get(f"/v1/jobs/{job['id']}/events")  # returns when the job ends
    events = parse_sse(response.text)
    assert [e.get("id") for e in events] == ["100", "200", "300", "400", None]
    assert json.loads(events[-1]["data"])["status"] == "succeeded"


async def test_an_event_stream_ends_when_its_client_disconnects(
    client: httpx.AsyncClient, moons: dict[str, Any], app: FastAPI
) -> None:
    job = await create_job(client, moons["id"], **LONG_JOB)
    await wait_for_epoch(client, job["id"], 100)
    manager = state_of(app).jobs
    streams_before = manager.open_streams()
    gone = anyio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and b"event: progress" in message["body"]:
            gone.set()  # the client leaves after its first event

    path = f"/v1/jobs/{job['id']}/events"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
    with anyio.fail_after(30):
        await app(scope, receive, send)  # returns: the stream noticed the disconnect
    assert sent[0]["status"] == 200
    assert manager.open_streams() == streams_before
    await client.post(f"/v1/jobs/{job['id']}/cancel")
    await wait_for_job(client, job["id"])


@pytest.mark.parametrize(
    ("hyperparameters", "loc", "words"),
    [
        ({"hidden_layers": [4, 4, 4, 4]}, ["hidden_layers"], "max_hidden_layers = 3"),
        ({"hidden_layers": [4, 65]}, ["hidden_layers", 1], "max_units_per_layer = 64"),
        ({"epochs": 1_000_001}, ["epochs"], "max_epochs = 1000000"),
        (
            {"hidden_layers": [64, 64, 64], "epochs": 1_000_000},
            ["epochs"],
            "over max_work = 1e+11",
        ),
    ],
)
async def test_deployment_limits_name_the_limit(
    client: httpx.AsyncClient,
    moons: dict[str, Any],
    hyperparameters: dict[str, Any],
    loc: list[Any],
    words: str,
) -> None:
    before = await job_count(client)
    response = await client.post(
        "/v1/jobs", json={"dataset_id": moons["id"], "hyperparameters": hyperparameters}
    )
    problem = assert_problem(response, 422, "limit-exceeded")
    assert problem["errors"][0]["loc"] == ["body", "hyperparameters", *loc]
    assert words in problem["detail"]
    assert await job_count(client) == before


async def test_batch_size_over_the_training_split_and_early_stopping_without_test(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/jobs", json={"dataset_id": moons["id"], "hyperparameters": {"batch_size": 81}}
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert "training split (80 points)" in problem["detail"]
    no_test = await create_dataset(client, kind="moons", n_samples=50, test_fraction=0)
    response = await client.post(
        "/v1/jobs",
        json={"dataset_id": no_test["id"], "hyperparameters": {"early_stopping": True}},
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["body", "hyperparameters", "early_stopping"]


async def test_unknown_dataset_is_422_naming_dataset_id(client: httpx.AsyncClient) -> None:
    problem = assert_problem(
        await client.post("/v1/jobs", json={"dataset_id": "ds_nope"}), 422, "invalid-request"
    )
    assert problem["errors"][0]["loc"] == ["body", "dataset_id"]
    assert "ds_nope does not exist" in problem["detail"]


@pytest.mark.parametrize(
    ("raw_hyperparameters", "field", "kind"),
    [
        ('{"learning_rate": NaN}', "learning_rate", "finite_number"),
        ('{"learning_rate": 1e309}', "learning_rate", "finite_number"),
        ('{"l2": -Infinity}', "l2", "finite_number"),
        ('{"learning_rate": 0}', "learning_rate", "greater_than"),
        ('{"learning_rate": -0.1}', "learning_rate", "greater_than"),
        ('{"hidden_layers": [0]}', "hidden_layers", "greater_than_equal"),
        ('{"epochs": "many"}', "epochs", "int_type"),
        ('{"activation": "swish"}', "activation", "literal_error"),
        ('{"dropout": 0.5}', "dropout", "extra_forbidden"),
    ],
)
async def test_bad_hyperparameters_are_422(
    client: httpx.AsyncClient,
    moons: dict[str, Any],
    raw_hyperparameters: str,
    field: str,
    kind: str,
) -> None:
    raw = f'{{"dataset_id": "{moons["id"]}", "hyperparameters": {raw_hyperparameters}}}'
    response = await client.post(
        "/v1/jobs", content=raw.encode(), headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"][:3] == ["body", "hyperparameters", field]
    assert problem["errors"][0]["type"] == kind


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", content=b'{"dataset_id": }', headers={"content-type": "application/json"}
    )
    assert "at character" in assert_problem(response, 400, "malformed-request")["detail"]


async def test_idempotency_key_returns_the_same_job(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    body = {"dataset_id": moons["id"], "hyperparameters": QUICK_JOB}
    headers = {"idempotency-key": "same-key-1"}
    first = await client.post("/v1/jobs", json=body, headers=headers)
    again = await client.post("/v1/jobs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    other = {**body, "hyperparameters": {**QUICK_JOB, "epochs": 61}}
    problem = assert_problem(
        await client.post("/v1/jobs", json=other, headers=headers), 422, "invalid-request"
    )
    assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    await wait_for_job(client, first.json()["id"])


async def test_a_refused_request_does_not_consume_its_idempotency_key(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    headers = {"idempotency-key": "same-key-2"}
    bad = {"dataset_id": moons["id"], "hyperparameters": {"epochs": 10**7}}
    assert (await client.post("/v1/jobs", json=bad, headers=headers)).status_code == 422
    good = {"dataset_id": moons["id"], "hyperparameters": QUICK_JOB}
    response = await client.post("/v1/jobs", json=good, headers=headers)
    assert response.status_code == 202
    await wait_for_job(client, response.json()["id"])


async def test_cancel_a_running_job(
    client: httpx.AsyncClient, moons: dict[str, Any], app: FastAPI
) -> None:
    models_before = len(state_of(app).store.models)
    job = await create_job(client, moons["id"], **LONG_JOB)
    await wait_for_epoch(client, job["id"], 100)
    response = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    done = await wait_for_job(client, job["id"])
    assert done["status"] == "cancelled"
    assert done["model_id"] is None
    assert len(state_of(app).store.models) == models_before
    again = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert "already cancelled" in assert_problem(again, 409, "conflict")["detail"]


async def test_cancel_a_finished_job_is_409_with_its_status(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    job = await create_job(client, moons["id"], **QUICK_JOB)
    await wait_for_job(client, job["id"])
    response = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert "already succeeded" in assert_problem(response, 409, "conflict")["detail"]


async def test_a_diverging_job_fails_with_the_epoch_and_advice(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    job = await create_job(
        client, moons["id"], optimizer="sgd", learning_rate=1000, hidden_layers=[16], epochs=200
    )
    done = await wait_for_job(client, job["id"])
    assert done["status"] == "failed"
    assert done["model_id"] is None
    assert done["error"]["type"] == "diverged"
    assert "at epoch" in done["error"]["detail"]
    assert "learning rate" in done["error"]["detail"]


async def test_max_seconds_ends_a_job_with_time_budget(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    job = await create_job(client, moons["id"], **{**LONG_JOB, "max_seconds": 0.3})
    done = await wait_for_job(client, job["id"])
    assert (done["status"], done["stop_reason"], done["error"]) == (
        "succeeded",
        "time_budget",
        None,
    )
    assert 0 < done["epoch"] < LONG_JOB["epochs"]
    model = (await client.get(f"/v1/models/{done['model_id']}")).json()
    assert model["metrics"] == done["metrics"]
    history = (await client.get(f"/v1/jobs/{job['id']}/history")).json()["history"]
    assert history[-1]["epoch"] == done["epoch"]  # a point for the last epoch trained


async def test_features_past_the_float32_range_fail_the_job_with_invalid_input(
    client: httpx.AsyncClient,
) -> None:
    huge = await create_dataset(
        client,
        kind="custom",
        points=[[float(i), 1e50 * (i % 3)] for i in range(20)],
        labels=[i % 2 for i in range(20)],
        standardize=False,
    )
    job = await create_job(client, huge["id"], **{**QUICK_JOB, "dtype": "float32"})
    done = await wait_for_job(client, job["id"])
    assert (done["status"], done["model_id"]) == ("failed", None)
    assert done["error"]["type"] == "invalid_input"
    assert "beyond the float32 range" in done["error"]["detail"]
    assert "max |x| = 2e+50" in done["error"]["detail"]


async def test_a_json_body_over_max_request_bytes_is_413(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    before = await job_count(client)
    body = {"dataset_id": moons["id"], "hyperparameters": QUICK_JOB, "name": "x" * 65 * 1024}
    response = await client.post("/v1/jobs", json=body)
    assert (
        "max_request_bytes = 65536" in assert_problem(response, 413, "payload-too-large")["detail"]
    )
    assert await job_count(client) == before


async def test_list_jobs_by_status(client: httpx.AsyncClient, moons: dict[str, Any]) -> None:
    job = await create_job(client, moons["id"], **QUICK_JOB)
    await wait_for_job(client, job["id"])
    listed: list[dict[str, Any]] = []
    while True:
        params = {"status": "succeeded", "limit": 5, "offset": len(listed)}
        page = (await client.get("/v1/jobs", params=params)).json()
        listed += page["items"]
        if not page["items"]:
            break
    assert page["total"] == len(listed) == len({item["id"] for item in listed})
    assert all(item["status"] == "succeeded" for item in listed)
    assert job["id"] in {item["id"] for item in listed}
    assert_problem(await client.get("/v1/jobs?status=done"), 422, "validation-error")


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/v1/jobs/job_missing"),
        await client.get("/v1/jobs/job_missing/history"),
        await client.get("/v1/jobs/job_missing/events"),
        await client.post("/v1/jobs/job_missing/cancel"),
    ):
        assert "job_missing" in assert_problem(response, 404, "not-found")["detail"]


# --- apps of their own -----------------------------------------------------------------------


async def test_a_full_queue_answers_429_with_retry_after() -> None:
    async with running_app(api_settings(workers=1, max_queued_jobs=1)) as (client, app):
        moons = await create_dataset(client, kind="moons", n_samples=100)
        running = await create_job(client, moons["id"], **LONG_JOB)
        await wait_for_job(client, running["id"], ("running",))
        waiting = await create_job(client, moons["id"], **LONG_JOB)
        response = await client.post(
            "/v1/jobs",
            json={"dataset_id": moons["id"], "hyperparameters": LONG_JOB},
            headers={"idempotency-key": "full"},
        )
        problem = assert_problem(response, 429, "queue-full")
        assert int(response.headers["retry-after"]) >= 1
        assert "max_queued_jobs = 1" in problem["detail"]
        assert (await client.get("/v1/jobs")).json()["total"] == 2
        # the key was not consumed: once there is room, the same key queues a job
        await client.post(f"/v1/jobs/{waiting['id']}/cancel")
        assert (await wait_for_job(client, waiting["id"]))["status"] == "cancelled"
        retry = await client.post(
            "/v1/jobs",
            json={"dataset_id": moons["id"], "hyperparameters": LONG_JOB},
            headers={"idempotency-key": "full"},
        )
        assert retry.status_code == 202
    # shutting down cancels what was left
    assert state_of(app).store.jobs.get(running["id"]).status == "cancelled"  # type: ignore[union-attr]


async def test_before_the_workers_are_up_jobs_get_503() -> None:
    from service.main import create_app

    app = create_app(api_settings())  # lifespan not started: no workers
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        moons = await create_dataset(client, kind="moons", n_samples=30)
        response = await client.post("/v1/jobs", json={"dataset_id": moons["id"]})
        assert_problem(response, 503, "not-ready")
        assert response.headers["retry-after"] == "1"
        assert_problem(await client.get("/readyz"), 503, "not-ready")
        assert (await client.get("/healthz")).status_code == 200


async def test_a_job_past_job_timeout_seconds_fails_with_timeout() -> None:
    async with running_app(api_settings(workers=1, job_timeout_seconds=0.5)) as (client, app):
        moons = await create_dataset(client, kind="moons", n_samples=100)
        job = await create_job(client, moons["id"], **LONG_JOB)
        done = await wait_for_job(client, job["id"])
        # once the workers stop, new jobs are refused with 503, not a 500
        await anyio.to_thread.run_sync(state_of(app).dispatcher.executor.shutdown)
        refused = await client.post("/v1/jobs", json={"dataset_id": moons["id"]})
        assert_problem(refused, 503, "not-ready")
    assert done["status"] == "failed"
    assert done["error"]["type"] == "timeout"
    assert "job_timeout_seconds = 0.5" in done["error"]["detail"]
    assert done["model_id"] is None


async def test_a_cancelled_job_stops_within_one_epoch() -> None:
    """Epochs of 16,000 single-point steps (about half a second each): the job trains at most
    the epoch it is in when the cancel arrives (minibatch epochs check for it every 16 steps)."""
    async with running_app(api_settings(workers=1, max_samples=20_000)) as (client, _):
        moons = await create_dataset(client, kind="moons", n_samples=20_000)
        slow = {"hidden_layers": [8], "batch_size": 1, "epochs": 1000, "record_every": 1}
        job = await create_job(client, moons["id"], **slow)
        at_cancel = (await wait_for_epoch(client, job["id"], 1))["epoch"]
        cancelled = await client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 202
        done = await wait_for_job(client, job["id"])
    assert (done["status"], done["model_id"]) == ("cancelled", None)
    # the epoch seen when cancelling, or the one after it (in progress, not yet reported)
    assert at_cancel <= done["epoch"] <= at_cancel + 1, (at_cancel, done["epoch"])


class UnexpectedFailures(LocalProcessExecutor):
    """Real worker processes, each task replaced by one that raises an error nobody expects."""

    def submit(self, task_id: str, task: Task, *, deadline_seconds: float | None = None) -> None:
        super().submit(task_id, FailsUnexpectedly(), deadline_seconds=deadline_seconds)


async def test_an_unexpected_error_in_the_worker_fails_the_job_as_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = UnexpectedFailures(1, 4)
    async with running_app(api_settings(workers=1), executor) as (client, _):
        moons = await create_dataset(client, kind="moons", n_samples=40)
        job = await create_job(client, moons["id"], **QUICK_JOB)
        with caplog.at_level(logging.ERROR, logger="service.jobs"):
            done = await wait_for_job(client, job["id"])
        response = await client.get(f"/v1/jobs/{job['id']}")
    assert (done["status"], done["model_id"]) == ("failed", None)
    assert done["error"] == {"type": "internal", "detail": "an internal error stopped the job"}
    assert "secret" not in response.text and "/srv" not in response.text
    # the operator's log keeps what happened
    assert any("secret-state.db" in record.getMessage() for record in caplog.records)
