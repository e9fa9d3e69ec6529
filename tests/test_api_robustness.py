"""Clients' mistakes that were once answered with a 500, a wrong status or a silent coercion:
each is now a clear 4xx problem and changes nothing (found by fuzzing with schemathesis, see
benchmarks/fuzz_api.sh, and by hand)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from engine import serialize
from engine.datasets import MAX_FEATURES
from engine.hyperparameters import Hyperparameters
from engine.model import Model, Scaler
from tests.api_support import (
    QUICK_JOB,
    api_settings,
    assert_problem,
    create_dataset,
    create_job,
    parse_sse,
    state_of,
    wait_for_job,
)

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}
NPZ = {"content-type": "application/octet-stream"}
HUGE_INTEGER = "1" + "0" * 400  # a JSON integer literal far past any 64-bit type


@pytest.fixture(scope="module")
async def moons(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield await create_dataset(client, kind="moons", n_samples=60)


@pytest.fixture(scope="module")
async def roomy_client() -> AsyncIterator[httpx.AsyncClient]:
    """An app taking 1 MiB bodies, its lifespan not run: datasets only, no workers."""
    from service.main import create_app

    roomy = create_app(api_settings(max_request_bytes=1 << 20))
    transport = httpx.ASGITransport(app=roomy)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def model_file(weights: Sequence[Sequence[float]], scaler: Scaler | None = None) -> bytes:
    """An exported softmax regression on 2 features and 2 classes (no hidden layer)."""
    model = Model(
        weights=[np.array(weights, dtype=np.float64)],  # (2, 2)
        biases=[np.zeros(2)],
        activation="tanh",
        classes=(0, 1),
        hyperparameters=Hyperparameters(hidden_layers=[]),
        scaler=scaler,
        feature_names=("x1", "x2"),
    )
    return serialize.model_to_npz(model)


async def import_model(client: httpx.AsyncClient, content: bytes) -> str:
    response = await client.post("/v1/models/import", content=content, headers=NPZ)
    assert response.status_code == 201, response.text
    model_id: str = response.json()["id"]
    return model_id


def dataset_count(app: FastAPI) -> int:
    return len(state_of(app).store.datasets.select())


# --- bodies the JSON parser refuses -------------------------------------------------------------


async def test_deeply_nested_json_is_400(client: httpx.AsyncClient) -> None:
    nested = b"[" * 5000 + b"]" * 5000  # past json.loads's recursion limit
    response = await client.post("/v1/datasets", content=nested, headers=JSON)
    assert "recursion limit" in assert_problem(response, 400, "malformed-request")["detail"]


async def test_integer_literal_past_the_parser_limit_is_400(client: httpx.AsyncClient) -> None:
    raw = b'{"kind": "moons", "n_samples": 1' + b"0" * 5000 + b"}"  # > 4300 digits
    response = await client.post("/v1/datasets", content=raw, headers=JSON)
    assert "number out of range" in assert_problem(response, 400, "malformed-request")["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"kind": "moons", "n_samples": 1' + b"0" * 5000 + b"}",
        b'{"kind": "custom", "points": [[0, 0], [1e101, 1]], "labels": [0, 1], "test_fraction": 0}',
    ],
    ids=["nested", "long-integer", "huge-feature"],
)
async def test_a_refused_dataset_is_not_stored(
    client: httpx.AsyncClient, app: FastAPI, raw: bytes
) -> None:
    before = dataset_count(app)
    response = await client.post("/v1/datasets", content=raw, headers=JSON)
    assert response.status_code in (400, 422), response.text
    assert dataset_count(app) == before


# --- every 422 names where the problem is ------------------------------------------------------


async def test_an_engine_refusal_locates_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/datasets", json={"kind": "custom", "points": [[0.0], [1.0]], "labels": [0, 0]}
    )
    problem = assert_problem(response, 422, "invalid-input")
    assert problem["errors"] == [
        {"loc": ["body"], "msg": problem["detail"], "type": "invalid_input"}
    ]


async def test_an_invalid_model_file_locates_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/import", content=b"random bytes", headers=NPZ)
    problem = assert_problem(response, 422, "invalid-model-file")
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(["body"], "invalid_model_file")]


async def test_an_engine_refusal_without_a_body_locates_the_path(
    client: httpx.AsyncClient,
) -> None:
    # its training data sat around 1e300 with unit spread: no room to draw a range there
    scaler = Scaler(mean=np.full(2, 1e300), scale=np.ones(2))
    model_id = await import_model(client, model_file([[1, -1], [1, -1]], scaler))
    response = await client.get(f"/v1/models/{model_id}/decision-boundary.png")
    problem = assert_problem(response, 422, "invalid-input")
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(["path"], "invalid_input")]


# --- values so large the arithmetic overflows --------------------------------------------------


async def test_a_prediction_that_overflows_is_422_naming_the_point(
    client: httpx.AsyncClient,
) -> None:
    model_id = await import_model(client, model_file([[1, -1], [1, -1]]))
    response = await client.post(
        f"/v1/models/{model_id}/predict", json={"points": [[0.0, 0.0], [1e308, 1e308]]}
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [
        (["body", "points", 1], "not_finite_output")
    ]


async def test_feature_values_past_max_abs_value_are_refused(client: httpx.AsyncClient) -> None:
    points = [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, -1e101]]
    response = await client.post(
        "/v1/datasets", json={"kind": "custom", "points": points, "labels": [0, 1, 0, 1]}
    )
    problem = assert_problem(response, 422, "invalid-input")
    assert "point 3 has -1e+101 in feature 1" in problem["detail"]


async def test_a_csv_past_max_features_is_refused(roomy_client: httpx.AsyncClient) -> None:
    names = [f"f{i}" for i in range(MAX_FEATURES + 1)]
    rows = [
        ",".join([value] * len(names)) + f",{label}" for value, label in (("0", "a"), ("1", "b"))
    ]
    text = "\n".join([",".join(names) + ",label", *rows]) + "\n"
    response = await roomy_client.post(
        "/v1/datasets",
        params={"test_fraction": 0},
        content=text,
        headers={"content-type": "text/csv"},
    )
    problem = assert_problem(response, 422, "invalid-input")
    assert (
        problem["detail"] == f"at most {MAX_FEATURES} features are allowed, got {MAX_FEATURES + 1}"
    )


# --- values of the wrong JSON type are refused, not converted ----------------------------------


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"epochs": "5"}, "epochs"),
        ({"learning_rate": "0.1"}, "learning_rate"),
        ({"hidden_layers": [True]}, "hidden_layers"),
        ({"early_stopping": 1}, "early_stopping"),
    ],
)
async def test_hyperparameters_of_the_wrong_json_type_are_422(
    client: httpx.AsyncClient, moons: dict[str, Any], hyperparameters: dict[str, Any], field: str
) -> None:
    response = await client.post(
        "/v1/jobs", json={"dataset_id": moons["id"], "hyperparameters": hyperparameters}
    )
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"][:3] == ["body", "hyperparameters", field]


async def test_a_job_baseline_must_be_a_boolean(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    response = await client.post("/v1/jobs", json={"dataset_id": moons["id"], "baseline": "yes"})
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"] == ["body", "baseline"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"kind": "moons", "n_samples": "100"}, ["body", "n_samples"]),
        ({"kind": "moons", "standardize": "yes"}, ["body", "standardize"]),
        ({"kind": "custom", "points": [[True], [False]], "labels": [0, 1]}, ["body", "points"]),
    ],
)
async def test_dataset_fields_of_the_wrong_json_type_are_422(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[str]
) -> None:
    problem = assert_problem(await client.post("/v1/datasets", json=body), 422, "validation-error")
    assert problem["errors"][0]["loc"][: len(loc)] == loc


async def test_predicted_points_must_be_numbers(client: httpx.AsyncClient) -> None:
    model_id = await import_model(client, model_file([[1, -1], [1, -1]]))
    response = await client.post(f"/v1/models/{model_id}/predict", json={"points": [[True, 0]]})
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"] == ["body", "points", 0, 0]


@pytest.mark.parametrize("grid", [{"epochs": ["5"]}, {"learning_rate": [True]}])
async def test_sweep_grid_values_of_the_wrong_json_type_are_422(
    client: httpx.AsyncClient, moons: dict[str, Any], grid: dict[str, list[Any]]
) -> None:
    response = await client.post("/v1/sweeps", json={"dataset_id": moons["id"], "grid": grid})
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["body", "grid", next(iter(grid)), 0]


# --- absurd counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["patience", "record_every", "lr_decay_epochs"])
async def test_counts_past_32_bits_are_422(
    client: httpx.AsyncClient, moons: dict[str, Any], field: str
) -> None:
    raw = f'{{"dataset_id": "{moons["id"]}", "hyperparameters": {{"{field}": {HUGE_INTEGER}}}}}'
    response = await client.post("/v1/jobs", content=raw.encode(), headers=JSON)
    problem = assert_problem(response, 422, "validation-error")
    assert (problem["errors"][0]["loc"], problem["errors"][0]["type"]) == (
        ["body", "hyperparameters", field],
        "less_than_equal",
    )


async def test_sweep_grid_counts_past_32_bits_are_422(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    raw = f'{{"dataset_id": "{moons["id"]}", "grid": {{"patience": [3, {HUGE_INTEGER}]}}}}'
    response = await client.post("/v1/sweeps", content=raw.encode(), headers=JSON)
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["body", "grid", "patience", 1]


# --- bodies of another Content-Type ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/sweeps"])
async def test_a_json_route_refuses_text_plain_with_415(
    client: httpx.AsyncClient, moons: dict[str, Any], path: str
) -> None:
    body = f'{{"dataset_id": "{moons["id"]}", "grid": {{"epochs": [5]}}}}'
    response = await client.post(path, content=body, headers={"content-type": "text/plain"})
    problem = assert_problem(response, 415, "unsupported-media-type")
    assert problem["detail"] == (
        "Content-Type 'text/plain' is not accepted; send the body as application/json"
    )


async def test_a_json_body_without_content_type_is_415(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    body = f'{{"dataset_id": "{moons["id"]}"}}'.encode()
    response = await client.post("/v1/jobs", content=body, headers={"content-type": ""})
    assert "no Content-Type" in assert_problem(response, 415, "unsupported-media-type")["detail"]


async def test_predict_refuses_text_plain_with_415(client: httpx.AsyncClient) -> None:
    model_id = await import_model(client, model_file([[1, -1], [1, -1]]))
    response = await client.post(
        f"/v1/models/{model_id}/predict",
        content=b'{"points": [[0, 0]]}',
        headers={"content-type": "text/plain"},
    )
    assert_problem(response, 415, "unsupported-media-type")


async def test_every_json_body_declares_415(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    missing = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
        and "415" not in operation["responses"]
    ]
    assert missing == []


# --- event streams match their declared schema -------------------------------------------------


async def test_job_events_match_the_declared_event_schema(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    job = await create_job(client, moons["id"], **QUICK_JOB)
    await wait_for_job(client, job["id"])
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/jobs/{job_id}/events"]["get"]
    event_schema = operation["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
    events = parse_sse((await client.get(f"/v1/jobs/{job['id']}/events")).text)
    assert [event["event"] for event in events][-1] == "status"
    for event in events:
        assert set(event_schema["required"]) <= set(event) <= set(event_schema["properties"])
        assert isinstance(json.loads(event["data"]), dict)


# --- the document's own examples are accepted --------------------------------------------------


async def test_the_documented_dataset_examples_are_created(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    content = document["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    csv = await client.post(
        "/v1/datasets", content=content["text/csv"]["example"], headers={"content-type": "text/csv"}
    )
    statuses = [csv.status_code]
    for example in document["components"]["schemas"]["DatasetCreate"]["examples"]:
        statuses.append((await client.post("/v1/datasets", json=example)).status_code)
    assert statuses == [201] * 4
