"""/v1/models through the app: read, predict, pictures, export/import, delete."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from engine import plotting
from engine.serialize import model_from_npz
from tests.api_support import (
    api_settings,
    assert_problem,
    changed_pixels,
    create_dataset,
    png_size,
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
    assert listed["limit"] == 5
    newest = await client.get("/v1/models", params={"limit": 1, "offset": listed["total"] - 1})
    assert newest.json()["items"] == [model]  # the list holds it, as GET /v1/models/{id} does


def forward_pass(npz: bytes, points: list[list[float]]) -> np.ndarray:
    """Class probabilities computed from an exported model's arrays alone, without the engine:
    standardize, tanh hidden layers, a linear output layer, softmax. (n_points, n_classes)"""
    archive = np.load(io.BytesIO(npz), allow_pickle=False)
    assert json.loads(archive["metadata"][()])["activation"] == "tanh"
    layers = sum(name.startswith("W") for name in archive.files)
    A = (np.array(points) - archive["scaler_mean"]) / archive["scaler_scale"]
    for i in range(layers):
        Z = A @ archive[f"W{i}"] + archive[f"b{i}"]
        A = Z if i == layers - 1 else np.tanh(Z)
    exp = np.exp(A - A.max(axis=1, keepdims=True))
    probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


async def test_predict_one_and_many_points(
    client: httpx.AsyncClient, moons_model: dict[str, Any]
) -> None:
    url = f"/v1/models/{moons_model['id']}/predict"
    one = await client.post(url, json={"points": [[0.5, 0.25]]})
    assert one.status_code == 200
    assert one.headers["content-type"] == "application/json"
    body = one.json()
    assert len(body["classes"]) == 1 and len(body["probabilities"]) == 1
    assert sum(body["probabilities"][0]) == pytest.approx(1.0)
    many = (await client.post(url, json={"points": GRID})).json()
    exported = await client.get(f"/v1/models/{moons_model['id']}/export")
    expected = forward_pass(exported.content, GRID)
    np.testing.assert_allclose(np.array(many["probabilities"]), expected, rtol=1e-12, atol=1e-15)
    assert many["classes"] == [int(c) for c in expected.argmax(axis=1)]
    assert len(set(many["classes"])) == 2  # the grid spans both classes


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
    pictures = {
        show: (
            await client.get(
                url, params={"width": 300, "height": 240, "resolution": 40, "show": show}
            )
        ).content
        for show in ("all", "train", "test", "none")
    }
    assert pictures["all"] == response.content  # all is the default
    assert len(set(pictures.values())) == 4
    # each is the model drawn with the dataset's own training points (filled) and test points
    # (hollow), as GET /v1/datasets/{id}?include_points=true lists them
    model = model_from_npz((await client.get(f"/v1/models/{moons_model['id']}/export")).content)
    dataset_url = f"/v1/datasets/{moons_model['dataset_id']}"
    dataset = (await client.get(dataset_url, params={"include_points": True})).json()
    points, split = np.array(dataset["points"]), np.array(dataset["split"])
    labels = np.array([dataset["classes"].index(label) for label in dataset["labels"]])
    train, test = split == "train", split == "test"
    assert (train.sum(), test.sum()) == (80, 20)
    for show, picture in pictures.items():
        assert picture == plotting.decision_boundary_png(
            model,
            X_train=points[train],
            y_train=labels[train],
            X_test=points[test],
            y_test=labels[test],
            width=300,
            height=240,
            resolution=40,
            show=show,  # type: ignore[arg-type]
        ), show
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
    size = {"width": 400, "height": 300}
    logarithmic = await client.get(url, params={**size, "log_scale": True})
    assert logarithmic.status_code == 200
    assert png_size(logarithmic.content) == (400, 300)
    linear = await client.get(url, params=size)
    job = moons_model["job_id"]
    history = (await client.get(f"/v1/jobs/{job}/history")).json()["history"]
    # the picture is this model's history drawn on a logarithmic loss axis, not a linear one
    assert plotting.loss_curve_figure(history, log_scale=True).axes[0].get_yscale() == "log"
    assert logarithmic.content == plotting.loss_curve_png(history, log_scale=True, **size)
    assert linear.content == plotting.loss_curve_png(history, log_scale=False, **size)
    assert changed_pixels(logarithmic.content, linear.content).any()


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
    too_big = await client.post(
        "/v1/models/import",
        content=b"PK\x03\x04" + bytes(64 * 1024),  # max_request_bytes = 64 KiB
        headers={"content-type": "application/octet-stream"},
    )
    assert (
        "max_request_bytes = 65536" in assert_problem(too_big, 413, "payload-too-large")["detail"]
    )
    assert (await client.get("/v1/models")).json()["total"] == before


async def test_a_model_outlives_its_dataset(client: httpx.AsyncClient) -> None:
    moons = await create_dataset(client, kind="moons", n_samples=60)
    model = await trained_model(client, moons)
    url = f"/v1/models/{model['id']}/decision-boundary.png"
    with_points = (await client.get(url, params={"resolution": 20})).content
    assert (await client.delete(f"/v1/datasets/{moons['id']}")).status_code == 204
    read = await client.get(f"/v1/models/{model['id']}")
    assert read.status_code == 200 and read.json()["dataset_id"] == moons["id"]
    predicted = await client.post(f"/v1/models/{model['id']}/predict", json={"points": GRID})
    assert predicted.status_code == 200
    boundary = await client.get(
        f"/v1/models/{model['id']}/decision-boundary.png", params={"resolution": 20}
    )
    assert boundary.status_code == 200
    # drawn without points now, like a copy of the model that never had a dataset
    exported = await client.get(f"/v1/models/{model['id']}/export")
    copy = await client.post(
        "/v1/models/import",
        content=exported.content,
        headers={"content-type": "application/octet-stream"},
    )
    pointless = await client.get(
        f"/v1/models/{copy.json()['id']}/decision-boundary.png", params={"resolution": 20}
    )
    assert boundary.content == pointless.content
    assert boundary.content != with_points


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


# --- the picture cache ---------------------------------------------------------------------


@pytest.fixture
async def small_cache() -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """An app of its own (no workers: dataset pictures need none) keeping 2 pictures."""
    from service.main import create_app

    app = create_app(api_settings(picture_cache_size=2))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, app


async def test_the_picture_cache_drops_the_least_recently_used(
    small_cache: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = small_cache
    cache = app.state.scratchnet.pictures
    dataset = await create_dataset(client, kind="moons", n_samples=30)
    urls = [f"/v1/datasets/{dataset['id']}/image.png?width={w}" for w in (200, 210, 220)]

    async def misses_of(url: str) -> int:
        before = cache.misses
        response = await client.get(url)
        assert response.status_code == 200
        return int(cache.misses - before)

    assert [await misses_of(url) for url in urls[:2]] == [1, 1]  # rendered, kept
    assert await misses_of(urls[0]) == 0  # kept: urls[0] is now the most recently used
    assert await misses_of(urls[2]) == 1  # a third picture: urls[1] is dropped
    assert len(cache) == 2
    assert await misses_of(urls[0]) == 0
    assert await misses_of(urls[2]) == 0
    assert await misses_of(urls[1]) == 1  # rendered again


async def test_picture_cache_size_zero_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.main import create_app
    from service.settings import Settings

    monkeypatch.setenv("SCRATCHNET_PICTURE_CACHE_SIZE", "0")
    app = create_app(Settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        dataset = await create_dataset(client, kind="moons", n_samples=30)
        url = f"/v1/datasets/{dataset['id']}/image.png"
        first, second = (await client.get(url)), (await client.get(url))
    cache = app.state.scratchnet.pictures
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 0)  # each request rendered anew
    assert first.content == second.content
    assert first.headers["etag"] == second.headers["etag"]
