"""Regression through the API: datasets with targets, jobs and their metrics, predictions in
the targets' units (/v1 and /v2), baselines, sweeps, pictures, and the 422s that keep the tasks
apart."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import numpy as np
import pytest

from engine.serialize import model_from_npz
from service.api.routers.models import NPZ_MEDIA_TYPE
from tests.api_support import (
    JOB_SECONDS,
    QUICK_JOB,
    assert_problem,
    create_dataset,
    create_job,
    png_pixels,
    png_size,
    wait_for_job,
)

pytestmark = pytest.mark.anyio

REGRESSION_METRICS = {
    "train_loss", "test_loss", "train_mse", "test_mse", "train_mae", "test_mae", "train_r2",
    "test_r2",
}  # fmt: skip


async def _trained(client: httpx.AsyncClient, dataset_id: str, **hp: Any) -> dict[str, Any]:
    job = await create_job(client, dataset_id, **{**QUICK_JOB, **hp})
    done = await wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    return done


async def test_generated_regression_datasets_describe_their_targets(
    client: httpx.AsyncClient,
) -> None:
    plane = await create_dataset(client, kind="reg_plane", n_samples=50, noise=0.0)
    assert plane["task"] == "regression"
    assert (plane["n_classes"], plane["classes"], plane["class_counts"]) == (0, [], [])
    assert plane["target_names"] == ["y"]
    assert (plane["train_size"], plane["test_size"]) == (40, 10)
    friedman = await create_dataset(client, kind="friedman1", n_samples=60, n_features=7)
    assert friedman["n_features"] == 7 and friedman["parameters"]["n_features"] == 7
    diabetes = await create_dataset(client, kind="diabetes")
    assert (diabetes["n_samples"], diabetes["n_features"]) == (442, 10)
    moons = await create_dataset(client, kind="moons", n_samples=20)
    assert moons["task"] == "classification" and moons["target_names"] == []
    shown = (await client.get(f"/v1/datasets/{plane['id']}?include_points=true")).json()
    targets = np.array(shown["targets"])  # (50, 1)
    np.testing.assert_allclose(targets[:, 0], np.array(shown["points"]).sum(axis=1) / 10)
    assert shown["labels"] is None


async def test_a_regression_job_reports_regression_metrics_and_predicts_values(
    client: httpx.AsyncClient,
) -> None:
    points = np.random.default_rng(0).uniform(-2, 2, (80, 2))
    targets = 100 + 30 * points[:, 0] - 10 * points[:, 1]  # a plane far from 0, wide
    dataset = await create_dataset(
        client,
        kind="custom",
        points=points.tolist(),
        targets=targets.tolist(),
        target_names=["price"],
        feature_names=["size", "age"],
    )
    assert dataset["task"] == "regression"
    done = await _trained(
        client, dataset["id"], hidden_layers=[], optimizer="sgd", learning_rate=0.5, epochs=300
    )
    assert set(done["metrics"]) == REGRESSION_METRICS
    assert done["metrics"]["test_r2"] > 0.999
    history = (await client.get(f"/v1/jobs/{done['id']}/history")).json()["history"]
    assert set(history[-1]) == REGRESSION_METRICS | {"epoch", "learning_rate"}
    model = (await client.get(f"/v1/models/{done['model_id']}")).json()
    assert (model["task"], model["target_names"], model["classes"]) == (
        "regression", ["price"], []
    )  # fmt: skip
    asked = [[0.0, 0.0], [1.0, -1.0]]
    response = await client.post(f"/v1/models/{done['model_id']}/predict", json={"points": asked})
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"values"}
    np.testing.assert_allclose(answer["values"], [[100.0], [140.0]], rtol=1e-3)
    # The exported file predicts the same, in the same units.
    exported = await client.get(f"/v1/models/{done['model_id']}/export")
    loaded = model_from_npz(exported.content)
    assert loaded.task == "regression"
    np.testing.assert_allclose(loaded.predict_values(asked), answer["values"], rtol=1e-12)
    # mse in the targets' units: the squared errors of the predictions themselves
    shown = (await client.get(f"/v1/datasets/{dataset['id']}?include_points=true")).json()
    test_rows = [i for i, side in enumerate(shown["split"]) if side == "test"]
    predicted = loaded.predict_values(points[test_rows])[:, 0]
    mse = float(np.mean((predicted - targets[test_rows]) ** 2))
    assert done["metrics"]["test_mse"] == pytest.approx(mse, rel=1e-9)


async def test_v2_inference_names_the_regression_output_values(
    client: httpx.AsyncClient,
) -> None:
    dataset = await create_dataset(client, kind="reg_plane", n_samples=40)
    done = await _trained(client, dataset["id"])
    name = done["model_id"]
    metadata = (await client.get(f"/v2/models/{name}")).json()
    assert [(o["name"], o["shape"]) for o in metadata["outputs"]] == [("values", [-1, 1])]
    body = {"inputs": [{"name": "points", "datatype": "FP64", "shape": [2, 2],
                        "data": [0.5, 0.5, -1.0, 2.0]}]}  # fmt: skip
    answer = (await client.post(f"/v2/models/{name}/infer", json=body)).json()
    v1 = await client.post(f"/v1/models/{name}/predict", json={"points": [[0.5, 0.5], [-1, 2]]})
    assert answer["outputs"] == [
        {"name": "values", "datatype": "FP64", "shape": [2, 1],
         "data": [row[0] for row in v1.json()["values"]]}
    ]  # fmt: skip
    wrong = {**body, "outputs": [{"name": "probabilities"}]}
    response = await client.post(f"/v2/models/{name}/infer", json=wrong)
    assert response.status_code == 400 and "'values'" in response.json()["error"]


async def test_a_regression_baseline_is_linear_regression(client: httpx.AsyncClient) -> None:
    dataset = await create_dataset(client, kind="friedman1", n_samples=100)
    response = await client.post(
        "/v1/jobs",
        json={"dataset_id": dataset["id"], "hyperparameters": QUICK_JOB, "baseline": True},
    )
    done = await wait_for_job(client, response.json()["id"])
    baseline = done["baseline"]
    assert set(baseline) >= REGRESSION_METRICS and "train_accuracy" not in baseline
    model = (await client.get(f"/v1/models/{baseline['model_id']}")).json()
    assert model["name"].endswith(": linear regression")
    assert model["architecture"] == [10, 1]


async def test_csv_with_task_regression(client: httpx.AsyncClient) -> None:
    rows = "\n".join(f"{x},{2 * x + 1}" for x in range(10))
    response = await client.post(
        "/v1/datasets?task=regression",
        content=f"x,y\n{rows}\n",
        headers={"content-type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["task"] == "regression"
    assert response.json()["target_names"] == ["y"]
    bad = await client.post(
        "/v1/datasets?task=regression",
        content="x,y\n1,2\n3,cheap\n",
        headers={"content-type": "text/csv"},
    )
    problem = assert_problem(bad, 422, "invalid-input")
    assert "line 3, target column 'y'" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({"task": "regression", "labels": [0, 1, 0, 1]}, "labels", "classification data only"),
        ({"labels": [0, 1, 0, 1], "targets": [1, 2, 3, 4]}, "labels", "classification data only"),
        (
            {"task": "classification", "labels": [0, 1, 0, 1], "target_names": ["y"]},
            "target_names",
            "regression data only",
        ),
        ({"task": "regression"}, "targets", "needs targets"),
        ({"targets": [1.0, 2.0, 3.0]}, None, "got 3 targets for 4 points"),
        ({}, "labels", "labels (classification) or targets (regression)"),
    ],
)
async def test_labels_and_targets_belong_to_their_task(
    client: httpx.AsyncClient, body: dict[str, Any], where: str | None, says: str
) -> None:
    response = await client.post(
        "/v1/datasets",
        json={"kind": "custom", "points": [[0], [1], [2], [3]], "test_fraction": 0, **body},
    )
    problem = response.json()
    assert response.status_code == 422, problem
    assert says in problem["detail"] or any(says in e["msg"] for e in problem["errors"])
    if where is not None:
        assert problem["errors"][0]["loc"] == ["body", where]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400"])
async def test_non_finite_targets_are_refused(client: httpx.AsyncClient, value: str) -> None:
    raw = f'{{"kind": "custom", "points": [[0], [1]], "targets": [1, {value}]}}'
    response = await client.post(
        "/v1/datasets", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_generator_fields_that_do_not_apply_are_refused(client: httpx.AsyncClient) -> None:
    for body, field in [
        ({"kind": "reg_plane", "n_classes": 3}, "n_classes"),
        ({"kind": "moons", "n_features": 5}, "n_features"),
        ({"kind": "reg_gauss", "targets": [1.0]}, "targets"),
        ({"kind": "moons", "task": "regression"}, "task"),
    ]:
        response = await client.post("/v1/datasets", json=body)
        problem = assert_problem(response, 422, "invalid-request")
        assert problem["errors"][0]["loc"] == ["body", field], body
    response = await client.post("/v1/datasets", json={"kind": "friedman1", "n_features": 4})
    assert response.status_code == 422


async def test_a_model_file_round_trip_through_import(client: httpx.AsyncClient) -> None:
    dataset = await create_dataset(client, kind="reg_gauss", n_samples=60)
    done = await _trained(client, dataset["id"])
    exported = (await client.get(f"/v1/models/{done['model_id']}/export")).content
    response = await client.post(
        "/v1/models/import", content=exported, headers={"content-type": NPZ_MEDIA_TYPE}
    )
    assert response.status_code == 201, response.text
    imported = response.json()
    assert imported["task"] == "regression" and imported["metrics"] is None
    points = {"points": [[1.0, -2.0]]}
    again = await client.post(f"/v1/models/{imported['id']}/predict", json=points)
    first = await client.post(f"/v1/models/{done['model_id']}/predict", json=points)
    assert again.json() == first.json()


async def test_regression_pictures(client: httpx.AsyncClient) -> None:
    dataset = await create_dataset(client, kind="reg_gauss", n_samples=80)
    done = await _trained(client, dataset["id"])
    model = done["model_id"]
    surface = await client.get(f"/v1/models/{model}/decision-boundary.png?width=320&height=240")
    assert surface.status_code == 200 and surface.headers["content-type"] == "image/png"
    assert png_size(surface.content) == (320, 240)
    pixels = png_pixels(surface.content)  # the diverging map: reds and blues both appear
    red = (pixels[..., 0] > 150) & (pixels[..., 2] < 120)
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 120)
    assert red.sum() > 100 and blue.sum() > 100
    versus = await client.get(f"/v1/models/{model}/predicted-vs-actual.png")
    assert versus.status_code == 200 and png_size(versus.content) == (640, 480)
    image = await client.get(f"/v1/datasets/{dataset['id']}/image.png")
    assert image.status_code == 200
    curve = await client.get(f"/v1/models/{model}/loss-curve.png")
    assert curve.status_code == 200
    # 409s: what the model is forbids it
    moons = await create_dataset(client, kind="moons", n_samples=40)
    classifier = (await _trained(client, moons["id"]))["model_id"]
    refused = await client.get(f"/v1/models/{classifier}/predicted-vs-actual.png")
    assert "is a classifier" in assert_problem(refused, 409, "conflict")["detail"]
    friedman = await create_dataset(client, kind="friedman1", n_samples=60)
    wide = (await _trained(client, friedman["id"]))["model_id"]
    refused = await client.get(f"/v1/models/{wide}/decision-boundary.png")
    assert "predicted-vs-actual.png" in assert_problem(refused, 409, "conflict")["detail"]
    assert (await client.get(f"/v1/models/{wide}/predicted-vs-actual.png")).status_code == 200


async def test_a_regression_sweep_packs_and_picks_the_lowest_test_loss(
    client: httpx.AsyncClient,
) -> None:
    dataset = await create_dataset(client, kind="reg_plane", n_samples=100, noise=0.05)
    base = {**QUICK_JOB, "optimizer": "sgd", "learning_rate": 0.1}
    grid = {"hidden_layers": [[1], [4], [8]]}
    response = await client.post(
        "/v1/sweeps",
        json={"dataset_id": dataset["id"], "base": base, "grid": grid, "baseline": True},
    )
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    with anyio.fail_after(JOB_SECONDS):
        while (sweep := (await client.get(f"/v1/sweeps/{sweep_id}")).json())["status"] not in (
            "succeeded", "failed", "cancelled"
        ):  # fmt: skip
            await anyio.sleep(0.05)
    assert sweep["status"] == "succeeded", sweep
    rows = sweep["results"]
    assert all(set(row) >= REGRESSION_METRICS for row in rows)
    assert all("test_accuracy" not in row for row in rows)
    losses = [row["test_loss"] for row in rows]
    assert sweep["best_index"] == losses.index(min(losses))
    baseline = sweep["baseline"]
    assert baseline["status"] == "succeeded" and "test_r2" in baseline
    # each configuration as a job trains the same network (packed equals alone)
    alone = await _trained(client, dataset["id"], **{**base, "hidden_layers": [4]})
    assert rows[1]["test_loss"] == pytest.approx(alone["metrics"]["test_loss"], rel=1e-9)
    grid_picture = await client.get(f"/v1/sweeps/{sweep_id}/grid.png")
    assert "regression" in assert_problem(grid_picture, 409, "conflict")["detail"]
    assert (await client.get(f"/v1/sweeps/{sweep_id}/curves.png")).status_code == 200


async def test_pictures_of_class_regions_are_409s_for_regression(client: httpx.AsyncClient) -> None:
    dataset = await create_dataset(client, kind="reg_plane", n_samples=60)
    done = await _trained(client, dataset["id"], hidden_layers=[4])
    snapshot = await client.get(f"/v1/jobs/{done['id']}/decision-boundary.png")
    assert snapshot.status_code == 200  # a snapshot's prediction surface
    for path in (
        f"/v1/jobs/{done['id']}/evolution.gif",
        f"/v1/models/{done['model_id']}/neurons.png",
    ):
        problem = assert_problem(await client.get(path), 409, "conflict")
        assert "is a regression; this picture is drawn for classifiers" in problem["detail"]
