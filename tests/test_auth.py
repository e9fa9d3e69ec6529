"""API keys, ownership, the per-key quota, the rate limit and CORS, through the API with the
app's lifespan and real workers."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.api_support import (
    LONG_JOB,
    QUICK_JOB,
    assert_problem,
    running,
    serve,
    wait_for,
    wait_for_job,
)

pytestmark = pytest.mark.anyio

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef"
ROOT = "root-key-0123456789abcdef"
KEYS = {"api_keys": f"alice:{ALICE},bob:{BOB}", "admin_api_keys": f"root:{ROOT}"}
OPEN = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}
DOCS = {"/metrics"}


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete")
    ]


def concrete(path: str) -> str:
    return re.sub(r"\{\w+\}", "x_0000000000000000", path)


async def test_every_v1_operation_needs_a_key_and_the_document_says_so() -> None:
    async with running(**KEYS) as (_app, client):
        document = (await client.get("/openapi.json")).json()
        schemes = document["components"]["securitySchemes"]
        assert {scheme["type"] for scheme in schemes.values()} == {"http", "apiKey"}
        seen = 0
        for method, path in operations(document):
            operation = document["paths"][path][method]
            if path in OPEN or path in DOCS:
                continue
            assert operation.get("security"), (method, path)
            assert "401" in operation["responses"], (method, path)
            for headers in ({}, as_("wrong-key-0123456789abcdef"), {"X-API-Key": "nope"}):
                response = await client.request(method, concrete(path), headers=headers)
                if path.startswith("/v2"):  # the Open Inference Protocol's error shape
                    assert response.status_code == 401 and set(response.json()) == {"error"}
                    detail = response.json()["error"]
                else:
                    detail = assert_problem(response, 401, "unauthorized")["detail"]
                assert response.headers["www-authenticate"] == "Bearer", path
                assert "wrong-key" not in response.text and "nope" not in detail
            seen += 1
        assert seen >= 25  # every route of datasets, jobs, models, sweeps and /v2, and info
        for path in OPEN | DOCS | {"/docs", "/openapi.json"}:
            assert (await client.get(path)).status_code == 200, path
        info = await client.get("/v1/info", headers={"X-API-Key": BOB})
        assert info.status_code == 200 and ALICE not in info.text and BOB not in info.text


async def test_protected_docs_need_a_key() -> None:
    async with running(**KEYS, protect_docs=True) as (_app, client):
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
            assert_problem(await client.get(path), 401, "unauthorized")
            assert (await client.get(path, headers=as_(BOB))).status_code == 200, path
        assert (await client.get("/healthz")).status_code == 200


async def test_another_key_sees_nothing_of_what_a_key_created(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running(**KEYS) as (_app, client):
        alice, bob, root = as_(ALICE), {"X-API-Key": BOB}, as_(ROOT)
        dataset = (await client.post("/v1/datasets", json={"kind": "moons"}, headers=alice)).json()
        job = await client.post(
            "/v1/jobs",
            json={"dataset_id": dataset["id"], "hyperparameters": QUICK_JOB, "baseline": True},
            headers=alice,
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        finished = await wait_for_job(client, job_id, headers=alice)
        assert finished["status"] == "succeeded", finished
        model_id = finished["model_id"]
        baseline_id = finished["baseline"]["model_id"]
        exported = (await client.get(f"/v1/models/{model_id}/export", headers=alice)).content
        imported = await client.post(
            "/v1/models/import",
            content=exported,
            headers={**alice, "content-type": "application/octet-stream"},
        )
        sweep = await client.post(
            "/v1/sweeps",
            json={"dataset_id": dataset["id"], "base": QUICK_JOB, "grid": {"l2": [0.0, 0.1]}},
            headers=alice,
        )
        assert sweep.status_code == 202, sweep.text
        ids = {
            "datasets": dataset["id"],
            "jobs": job_id,
            "models": model_id,
            "sweeps": sweep.json()["id"],
        }
        for kind in ids:
            assert (await client.get(f"/v1/{kind}", headers=bob)).json()["total"] == 0
            assert (await client.get(f"/v1/{kind}", headers=alice)).json()["total"] >= 1
            assert (await client.get(f"/v1/{kind}", headers=root)).json()["total"] >= 1
        document = (await client.get("/openapi.json")).json()
        checked = 0
        for method, path in operations(document):
            kind = path.split("/")[2] if path.startswith("/v1/") else ""
            if "{" not in path or kind not in ids:
                continue
            for model in (model_id, baseline_id, imported.json()["id"]):
                url = path.replace("{model_id}", model).replace("{alias}", "best")
                for name, value in ids.items():
                    url = url.replace("{" + name[:-1] + "_id}", value)
                body = {"points": [[0.0, 0.0]]} if url.endswith("/predict") else None
                response = await client.request(method, url, json=body, headers=bob)
                assert_problem(response, 404, "not-found")
                checked += 1
                if kind != "models":
                    break
            if method == "get":
                owned = await client.request(method, url, headers=root)
                assert owned.status_code in (200, 409), (url, owned.text)
        assert checked >= 20
        infer = {
            "inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP64", "data": [0, 0]}]
        }
        for method, url, body in (
            ("GET", f"/v2/models/{model_id}", None),
            ("GET", f"/v2/models/{model_id}/ready", None),
            ("POST", f"/v2/models/{model_id}/infer", infer),
        ):
            hidden = await client.request(method, url, json=body, headers=bob)
            assert hidden.status_code == 404 and "does not exist" in hidden.json()["error"], url
            assert (await client.request(method, url, json=body, headers=alice)).status_code == 200
        refused = await client.post(
            "/v1/jobs",
            json={"dataset_id": dataset["id"], "hyperparameters": QUICK_JOB},
            headers=bob,
        )
        assert_problem(refused, 422, "invalid-request")
        assert (await client.get(f"/v1/models/{baseline_id}", headers=alice)).status_code == 200
    for secret in (ALICE, BOB, ROOT):
        assert secret not in caplog.text


async def test_one_key_cannot_take_the_queue_and_its_idempotency_keys_are_its_own() -> None:
    async with running(**KEYS, max_active_jobs_per_key=1) as (_app, client):
        alice, bob = as_(ALICE), as_(BOB)
        data = {"kind": "moons"}
        alice_dataset = (await client.post("/v1/datasets", json=data, headers=alice)).json()
        bob_dataset = (await client.post("/v1/datasets", json=data, headers=bob)).json()
        body = {"dataset_id": alice_dataset["id"], "hyperparameters": LONG_JOB}
        first = await client.post(
            "/v1/jobs", json=body, headers={**alice, "Idempotency-Key": "same"}
        )
        assert first.status_code == 202
        try:
            second = await client.post("/v1/jobs", json=body, headers=alice)
            problem = assert_problem(second, 429, "queue-full")
            assert "max_active_jobs_per_key = 1" in problem["detail"]
            assert int(second.headers["retry-after"]) >= 1
            bob_body = {"dataset_id": bob_dataset["id"], "hyperparameters": QUICK_JOB}
            bobs = await client.post(
                "/v1/jobs", json=bob_body, headers={**bob, "Idempotency-Key": "same"}
            )
            assert bobs.status_code == 202 and bobs.json()["id"] != first.json()["id"]
        finally:
            await client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=alice)


async def test_the_rate_limit_answers_429_with_its_headers_per_key() -> None:
    async with running(**KEYS, rate_limit="1/min", rate_limit_burst=3) as (_app, client):
        answers = [await client.get("/v1/datasets", headers=as_(ALICE)) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
        limited = assert_problem(answers[-1], 429, "rate-limited")
        assert "rate_limit" in limited["detail"]
        assert int(answers[-1].headers["retry-after"]) == 60
        assert answers[0].headers["ratelimit-limit"] == "3"
        assert (await client.get("/v1/datasets", headers=as_(BOB))).status_code == 200
        for _ in range(5):
            assert (await client.get("/healthz")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert "scratchnet_rate_limited_total 1.0" in metrics


async def test_cors_is_off_unless_origins_are_listed() -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with running() as (_app, client):
        response = await client.options("/v1/datasets", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    async with running(cors_origins="https://app.example") as (_app, client):
        response = await client.options("/v1/datasets", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = await client.options(
            "/v1/datasets", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
    with pytest.raises(ValueError, match="any web page"):
        Settings(cors_origins="*", cors_allow_credentials=True)


def test_malformed_keys_are_refused_at_start_without_showing_them() -> None:
    from service.main import create_app

    for keys, message in (
        ("alice", "not name:key"),
        ("alice:short", "at least 16 characters"),
        (f"alice:{ALICE},alice:{BOB}", "given twice"),
        (f"alice:{ALICE},bob:{ALICE}", "are the same"),
        (f"bad name:{ALICE}", "must be 1 to 64"),
    ):
        with pytest.raises(ValueError, match=message) as refused:
            create_app(Settings(workers=1, api_keys=keys))
        assert ALICE not in str(refused.value) and BOB not in str(refused.value)


def test_logs_are_json_lines_naming_the_key_never_showing_it(tmp_path: Path) -> None:
    with serve(
        tmp_path, api_keys=KEYS["api_keys"], admin_api_keys=KEYS["admin_api_keys"]
    ) as server:
        with httpx.Client(base_url=server.url) as http:
            created = http.post(
                "/v1/datasets",
                json={"kind": "moons"},
                headers={**as_(ALICE), "X-Request-ID": "trace-42"},
            )
            assert created.status_code == 201 and created.headers["x-request-id"] == "trace-42"
            made = http.get("/v1/datasets", headers=as_(BOB)).headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", made)
            assert http.get("/v1/datasets").status_code == 401
            job = http.post(
                "/v1/jobs",
                json={"dataset_id": created.json()["id"], "hyperparameters": QUICK_JOB},
                headers=as_(ALICE),
            ).json()
            with httpx.Client(base_url=server.url, headers=as_(ALICE)) as alice:
                assert wait_for(alice, job["id"])["status"] == "succeeded"
        server.stop()
        output = server.output()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    requests = [line for line in lines if line["event"] == "request"]
    first = next(line for line in requests if line.get("request_id") == "trace-42")
    assert first["method"] == "POST" and first["route"] == "/v1/datasets"
    assert first["status"] == 201 and first["key"] == "alice" and first["duration_ms"] > 0
    assert {"time", "level", "logger"} <= set(first)
    assert any(line["status"] == 401 and line["key"] is None for line in requests)
    moves = [(line["from"], line["to"]) for line in lines if line["event"] == "work"]
    assert moves == [("queued", "running"), ("running", "succeeded")]
    for secret in (ALICE, BOB, ROOT):
        assert secret not in output


async def test_a_prediction_or_picture_past_the_request_timeout_is_a_503() -> None:
    limits = {"predict_max_points": 100_000, "max_request_bytes": 4_000_000}
    async with running(request_timeout_seconds=0.001, **limits) as (_, client):
        dataset = (await client.post("/v1/datasets", json={"kind": "moons"})).json()
        job = await client.post(
            "/v1/jobs",
            json={
                "dataset_id": dataset["id"],
                "hyperparameters": {**QUICK_JOB, "hidden_layers": [64, 64]},
            },
        )
        finished = await wait_for_job(client, job.json()["id"])
        assert finished["status"] == "succeeded", finished
        url = f"/v1/models/{finished['model_id']}"
        points = {"points": [[0.1, 0.2]] * 100_000}
        slow = await client.post(f"{url}/predict", json=points)
        problem = assert_problem(slow, 503, "request-timeout")
        assert "request_timeout_seconds = 0.001" in problem["detail"]
        picture = await client.get(f"{url}/decision-boundary.png?resolution=1000")
        assert_problem(picture, 503, "request-timeout")
        tensor = {"name": "points", "shape": [100_000, 2], "datatype": "FP64"}
        slow = await client.post(
            f"/v2/models/{finished['model_id']}/infer",
            json={"inputs": [{**tensor, "data": [0.1, 0.2] * 100_000}]},
        )
        assert slow.status_code == 503 and slow.headers["retry-after"] == "1"
        assert "request_timeout_seconds = 0.001" in slow.json()["error"]  # the protocol's shape
        quick = await client.post(f"{url}/predict", json={"points": [[0.1, 0.2]]})
        assert quick.status_code == 200  # small predictions run inline, under any timeout


async def test_a_key_with_many_queued_jobs_does_not_starve_another() -> None:
    async with running(**KEYS, max_active_jobs_per_key=10) as (_app, client):
        alice, bob = as_(ALICE), as_(BOB)
        datasets = {}
        for name, headers in (("alice", alice), ("bob", bob)):
            created = await client.post("/v1/datasets", json={"kind": "moons"}, headers=headers)
            datasets[name] = created.json()["id"]
        job = {**QUICK_JOB, "epochs": 400}

        async def submit(name: str, headers: dict[str, str]) -> str:
            body = {"dataset_id": datasets[name], "hyperparameters": job}
            response = await client.post("/v1/jobs", json=body, headers=headers)
            assert response.status_code == 202, response.text
            job_id: str = response.json()["id"]
            return job_id

        alices = [await submit("alice", alice) for _ in range(4)]  # one worker: 3 wait
        bobs = await submit("bob", bob)
        started: dict[str, str] = {}
        for job_id, headers in [*((j, alice) for j in alices), (bobs, bob)]:
            body = await wait_for_job(client, job_id, headers=headers)
            assert body["status"] == "succeeded", body
            started[job_id] = body["started_at"]
        order = sorted(started, key=started.__getitem__)
        assert order.index(bobs) == 1, order  # right after alice's first, not after her fourth
