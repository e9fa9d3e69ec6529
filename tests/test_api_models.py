"""/v1/models through the app: read, predict, pictures, export/import, delete."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from tests.api_support import (
    assert_problem,
    create_dataset,
    png_size,
    state_of,
    trained_model,
)

pytestmark = pytest.mark.anyio

GRID = [[x / 2, y / 2] for x in range(-4, 5) for y in range(-2, 3)]  # 45 points


@pytest.fixture
async def moons_model(client: httpx.AsyncClient) -> dict[str, Any]:
    moons = await create_dataset(client, kind="moons", n_samples=100)
    return await trained_model(client, moons)


async def test_model_fields(client: httpx.AsyncClient, moons_model: dict[str, Any]) -> None:
    model = moons_model
    assert model["id"].startswith("mdl_")
    assert model["architecture"] == [2, 4, 2]
    assert model["n_parameters"] == 2 * 4 + 4 + 4 * 2 + 2
    assert (model["n_features"], model["classes"], model["feature_names"]) == (
        2,
        [0, 1],
        ["x1", "x2"],
    )
    assert model["activation"] == "tanh"
    assert model["hyperparameters"]["epochs"] == 60
    assert set(model["metrics"]) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert model["has_history"] is True
    assert model["created_at"].endswith("Z")
    listed = (await client.get("/v1/models", params={"limit": 5})).json()
    assert listed["total"] >= 1 and listed["limit"] == 5


async def test_predict_one_and_many_points(
    client: httpx.AsyncClient, moons_model: dict[str, Any], app: FastAPI
) -> None:
    url = f"/v1/models/{moons_model['id']}/predict"
    one = await client.post(url, json={"points": [[0.5, 0.25]]})
    assert one.status_code == 200
    assert one.headers["content-type"] == "application/json"
    body = one.json()
    assert len(body["classes"]) == 1 and len(body["probabilities"]) == 1
    assert sum(body["probabilities"][0]) == pytest.approx(1.0)
    many = (await client.post(url, json={"points": GRID})).json()
    model = state_of(app).store.models.content(moons_model["id"])
    assert model is not None
    expected = model.model.predict_proba(np.array(GRID))
    np.testing.assert_array_equal(np.array(many["probabilities"]), expected)
    assert many["classes"] == [int(c) for c in expected.argmax(axis=1)]


async def test_predict_errors(client: httpx.AsyncClient, moons_model: dict[str, Any]) -> None:
    url = f"/v1/models/{moons_model['id']}/predict"
    wrong = await client.post(url, json={"points": [[1.0, 2.0], [1.0, 2.0, 3.0]]})
    problem = assert_problem(wrong, 422, "invalid-request")
    assert "expects n_features = 2" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", "points", 1]
    too_many = await client.post(url, json={"points": [[0.0, 0.0]] * 51})
    assert "predict_max_points = 50" in assert_problem(too_many, 422, "limit-exceeded")["detail"]
    assert_problem(await client.post(url, json={"points": []}), 422, "validation-error")
    assert_problem(await client.post(url, json={"points": [[1, "a"]]}), 422, "validation-error")
    for raw in (b'{"points": [[NaN, 0]]}', b'{"points": [[1e309, 0]]}'):
        response = await client.post(url, content=raw, headers={"content-type": "application/json"})
        problem = assert_problem(response, 422, "validation-error")
        assert problem["errors"][0]["type"] == "finite_number"
    malformed = await client.post(
        url, content=b'{"points": [[1, 2]', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_problem(malformed, 400, "malformed-request")["detail"]
    missing = await client.post("/v1/models/mdl_missing/predict", json={"points": [[0, 0]]})
    assert_problem(missing, 404, "not-found")


async def test_a_large_predict_body_gives_the_same_answer(
    client: httpx.AsyncClient, moons_model: dict[str, Any]
) -> None:
    url = f"/v1/models/{moons_model['id']}/predict"
    compact = json.dumps({"points": GRID[:40]}).encode()
    padded = compact[:-1] + b" " * 40_000 + b"}"  # parsed in a thread: over 32 KiB
    answers = [
        await client.post(url, content=body, headers={"content-type": "application/json"})
        for body in (compact, padded)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    bad = b'{"points": [[NaN, 1]]' + b" " * 40_000 + b"}"
    response = await client.post(url, content=bad, headers={"content-type": "application/json"})
    assert_problem(response, 422, "validation-error")


async def test_decision_boundary_png(
    client: httpx.AsyncClient, moons_model: dict[str, Any]
) -> None:
    url = f"/v1/models/{moons_model['id']}/decision-boundary.png"
    response = await client.get(url, params={"width": 300, "height": 240, "resolution": 40})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert png_size(response.content) == (300, 240)
    bare = await client.get(
        url, params={"width": 300, "height": 240, "resolution": 40, "show": "none"}
    )
    assert png_size(bare.content) == (300, 240)
    assert bare.content != response.content
    bad = await client.get(url, params={"show": "some"})
    assert bad.json()["errors"][0]["loc"] == ["query", "show"]
    assert_problem(bad, 422, "validation-error")
    assert_problem(await client.get(url, params={"resolution": 5}), 422, "validation-error")


async def test_decision_boundary_needs_two_features(client: httpx.AsyncClient) -> None:
    iris = await create_dataset(client, kind="iris")
    model = await trained_model(client, iris)
    response = await client.get(f"/v1/models/{model['id']}/decision-boundary.png")
    assert "has 4 features" in assert_problem(response, 409, "conflict")["detail"]


async def test_loss_curve_png(client: httpx.AsyncClient, moons_model: dict[str, Any]) -> None:
    url = f"/v1/models/{moons_model['id']}/loss-curve.png"
    response = await client.get(url, params={"width": 400, "height": 300, "log_scale": True})
    assert response.status_code == 200
    assert png_size(response.content) == (400, 300)


async def test_export_then_import_predicts_identically(
    client: httpx.AsyncClient, moons_model: dict[str, Any]
) -> None:
    exported = await client.get(f"/v1/models/{moons_model['id']}/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/octet-stream"
    assert (
        exported.headers["content-disposition"] == f'attachment; filename="{moons_model["id"]}.npz"'
    )
    response = await client.post(
        "/v1/models/import?name=copy",
        content=exported.content,
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 201
    imported = response.json()
    assert response.headers["location"] == f"/v1/models/{imported['id']}"
    assert imported["id"] != moons_model["id"]
    assert imported["name"] == "copy"
    assert (imported["job_id"], imported["dataset_id"], imported["metrics"]) == (None, None, None)
    assert imported["architecture"] == moons_model["architecture"]
    assert imported["classes"] == moons_model["classes"]
    original = await client.post(f"/v1/models/{moons_model['id']}/predict", json={"points": GRID})
    copy = await client.post(f"/v1/models/{imported['id']}/predict", json={"points": GRID})
    assert copy.json() == original.json()

    # an imported model draws its boundary without points and has no loss curve
    boundary = await client.get(
        f"/v1/models/{imported['id']}/decision-boundary.png", params={"resolution": 20}
    )
    assert boundary.status_code == 200
    curve = await client.get(f"/v1/models/{imported['id']}/loss-curve.png")
    assert "no training history" in assert_problem(curve, 409, "conflict")["detail"]


async def test_import_refuses_bad_bytes_and_other_content_types(
    client: httpx.AsyncClient,
) -> None:
    before = (await client.get("/v1/models")).json()["total"]
    bad = await client.post(
        "/v1/models/import",
        content=b"PK\x03\x04 not really a zip",
        headers={"content-type": "application/octet-stream"},
    )
    assert_problem(bad, 422, "invalid-model-file")
    json_body = await client.post("/v1/models/import", json={"weights": []})
    assert_problem(json_body, 415, "unsupported-media-type")
    assert (await client.get("/v1/models")).json()["total"] == before


async def test_a_model_outlives_its_dataset(client: httpx.AsyncClient) -> None:
    moons = await create_dataset(client, kind="moons", n_samples=60)
    model = await trained_model(client, moons)
    assert (await client.delete(f"/v1/datasets/{moons['id']}")).status_code == 204
    read = await client.get(f"/v1/models/{model['id']}")
    assert read.status_code == 200 and read.json()["dataset_id"] == moons["id"]
    predicted = await client.post(f"/v1/models/{model['id']}/predict", json={"points": GRID})
    assert predicted.status_code == 200
    boundary = await client.get(
        f"/v1/models/{model['id']}/decision-boundary.png", params={"resolution": 20}
    )
    assert boundary.status_code == 200


async def test_delete_model(client: httpx.AsyncClient, moons_model: dict[str, Any]) -> None:
    url = f"/v1/models/{moons_model['id']}"
    response = await client.delete(url)
    assert (response.status_code, response.content) == (204, b"")
    for gone in (
        await client.get(url),
        await client.delete(url),
        await client.get(f"{url}/export"),
        await client.get(f"{url}/loss-curve.png"),
        await client.get(f"{url}/decision-boundary.png"),
    ):
        assert_problem(gone, 404, "not-found")
