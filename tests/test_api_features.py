"""Input feature maps through the API: a logistic regression on circles given squares, raw points
everywhere a model takes them (predict, /v2, pictures, .npz), sweeps over maps, and the 422s."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from engine.serialize import model_from_npz
from tests.api_support import assert_problem, create_dataset, create_job, wait_for_job
from tests.test_api_sweeps import wait_for_sweep

pytestmark = pytest.mark.anyio

LOGISTIC = {"hidden_layers": [], "learning_rate": 0.1, "epochs": 300, "record_every": 100}


@pytest.fixture
async def circles(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_dataset(
        client, kind="circles", n_samples=400, noise=0.1, seed=0, test_fraction=0.25
    )


async def _trained(client: httpx.AsyncClient, dataset_id: str, **options: Any) -> dict[str, Any]:
    job = await create_job(client, dataset_id, **options)
    done = await wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    return done


async def test_logistic_regression_separates_circles_given_squares(
    client: httpx.AsyncClient, circles: dict[str, Any]
) -> None:
    plain = await _trained(client, circles["id"], **LOGISTIC)
    squared = await _trained(
        client, circles["id"], **LOGISTIC, input_features=["identity", "square"]
    )
    assert plain["metrics"]["test_accuracy"] < 0.7
    assert squared["metrics"]["test_accuracy"] >= 0.95
    assert squared["hyperparameters"]["input_features"] == ["identity", "square"]
    model = (await client.get(f"/v1/models/{squared['model_id']}")).json()
    assert (model["n_features"], model["architecture"]) == (2, [4, 2])
    assert model["hyperparameters"]["input_features"] == ["identity", "square"]


async def test_a_mapped_model_takes_raw_points_everywhere(
    client: httpx.AsyncClient, circles: dict[str, Any]
) -> None:
    done = await _trained(
        client, circles["id"], **LOGISTIC, input_features=["identity", "square", "products"]
    )
    model_id = done["model_id"]
    points = [[0.0, 0.05], [1.0, 0.0], [-0.7, 0.7]]  # the centre, the outer ring twice
    predicted = await client.post(f"/v1/models/{model_id}/predict", json={"points": points})
    assert predicted.status_code == 200, predicted.text
    body = predicted.json()
    inner, outer = body["classes"][0], body["classes"][1]
    assert inner != outer and body["classes"][2] == outer

    # The exported file predicts the same from the same raw points.
    exported = await client.get(f"/v1/models/{model_id}/export")
    loaded = model_from_npz(exported.content)
    assert loaded.hyperparameters.input_features == ["identity", "square", "products"]
    np.testing.assert_allclose(loaded.predict_proba(points), body["probabilities"], rtol=1e-15)
    imported = await client.post(
        "/v1/models/import",
        content=exported.content,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert imported.status_code == 201, imported.text
    again = await client.post(
        f"/v1/models/{imported.json()['id']}/predict", json={"points": points}
    )
    assert again.json() == body

    # /v2 takes the same raw rows: [-1, 2], not the map's five columns.
    metadata = (await client.get(f"/v2/models/{model_id}")).json()
    assert metadata["inputs"][0]["shape"] == [-1, 2]
    infer = {"inputs": [{"name": "points", "shape": [3, 2], "datatype": "FP64", "data": points}]}
    answer = (await client.post(f"/v2/models/{model_id}/infer", json=infer)).json()
    np.testing.assert_array_equal(
        np.array(answer["outputs"][0]["data"]).reshape(3, 2), body["probabilities"]
    )
    wrong = await client.post(f"/v1/models/{model_id}/predict", json={"points": [[1, 2, 3, 4, 5]]})
    assert "n_features = 2" in assert_problem(wrong, 422, "invalid-request")["detail"]

    picture = await client.get(f"/v1/models/{model_id}/decision-boundary.png")
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")


async def test_a_sweep_over_maps(client: httpx.AsyncClient, circles: dict[str, Any]) -> None:
    grid = {"input_features": [["identity"], ["identity", "square"]], "hidden_layers": [[], [2]]}
    response = await client.post(
        "/v1/sweeps",
        json={"dataset_id": circles["id"], "base": LOGISTIC, "grid": grid},
    )
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    sweep = await wait_for_sweep(client, sweep_id)
    assert sweep["status"] == "succeeded", sweep
    rows = {
        (tuple(row["varied"]["input_features"]), len(row["varied"]["hidden_layers"])): row
        for row in sweep["results"]
    }
    assert rows[("identity", "square"), 0]["test_accuracy"] >= 0.95
    assert rows[("identity",), 0]["test_accuracy"] < 0.7
    for (features, _depth), row in rows.items():
        model = (await client.get(f"/v1/models/{row['model_id']}")).json()
        assert model["architecture"][0] == 2 * len(features)
    grid_picture = await client.get(f"/v1/sweeps/{sweep_id}/grid.png")
    assert grid_picture.status_code == 200


@pytest.mark.parametrize(
    ("features", "loc", "message"),
    [
        ([], ["input_features"], "at least 1 item"),
        (["sin", "sin"], ["input_features"], "sin is listed more than once"),
        (["square", "tanh"], ["input_features", 1], "'identity', 'square', 'sin', 'cos' or"),
    ],
)
async def test_invalid_maps_are_422s(
    client: httpx.AsyncClient,
    circles: dict[str, Any],
    features: Any,
    loc: list[Any],
    message: str,
) -> None:
    before = (await client.get("/v1/jobs")).json()["total"]
    response = await client.post(
        "/v1/jobs",
        json={"dataset_id": circles["id"], "hyperparameters": {"input_features": features}},
    )
    problem = assert_problem(response, 422, "validation-error")
    issue = problem["errors"][0]
    assert issue["loc"] == ["body", "hyperparameters", *loc]
    assert message in issue["msg"]
    assert (await client.get("/v1/jobs")).json()["total"] == before


async def test_map_widths_within_the_limits(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(0)
    wide = await create_dataset(
        client,
        kind="custom",
        points=rng.standard_normal((20, 150)).tolist(),
        labels=[0, 1] * 10,
        test_fraction=0,
    )
    response = await client.post(
        "/v1/jobs",
        json={
            "dataset_id": wide["id"],
            "hyperparameters": {"input_features": ["identity", "products"], "epochs": 1},
        },
    )
    problem = assert_problem(response, 422, "limit-exceeded")
    assert problem["errors"][0]["loc"] == ["body", "hyperparameters", "input_features"]
    assert "map 150 features to 11325 columns, over the 10000" in problem["errors"][0]["msg"]

    single = await create_dataset(
        client, kind="custom", points=[[float(i)] for i in range(10)], labels=[0, 1] * 5
    )
    response = await client.post(
        "/v1/jobs",
        json={"dataset_id": single["id"], "hyperparameters": {"input_features": ["products"]}},
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert "products needs at least 2 features" in problem["errors"][0]["msg"]
