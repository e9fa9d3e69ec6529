"""Continued training through the API: POST /v1/jobs with init_model_id goes on from a model
(100 epochs then 100 more == 200, with sgd and with Adam's state), inherits its options, records
its parent, and refuses what does not fit with a 422 naming the field (404 for a model the caller
cannot see)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from engine.serialize import model_from_npz
from tests.api_support import assert_problem, create_dataset, create_job, running, wait_for_job
from tests.test_auth import ALICE, BOB, KEYS, as_

pytestmark = pytest.mark.anyio

RELATIVE = 1e-12  # full batch, constant rate: the same operations in the same order
FULL_BATCH_SGD = {
    "hidden_layers": [3],
    "optimizer": "sgd",
    "learning_rate": 2.0,
    "l2": 0.01,
    "record_every": 10,
}
FULL_BATCH_ADAM = {"hidden_layers": [4], "optimizer": "adam", "learning_rate": 0.02}


@pytest.fixture
async def moons(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_dataset(client, kind="moons", n_samples=200, noise=0.2)


async def _done(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = await wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    return job


async def _model(client: httpx.AsyncClient, model_id: str) -> Any:
    return model_from_npz((await client.get(f"/v1/models/{model_id}/export")).content)


@pytest.mark.parametrize("options", [FULL_BATCH_SGD, FULL_BATCH_ADAM], ids=["sgd", "adam"])
async def test_100_then_100_more_epochs_equal_200(
    client: httpx.AsyncClient, moons: dict[str, Any], options: dict[str, Any]
) -> None:
    whole = await create_job(client, moons["id"], **options, epochs=200)
    first = await _done(
        client, {"dataset_id": moons["id"], "hyperparameters": {**options, "epochs": 100}}
    )
    response = await client.post(
        "/v1/jobs",
        json={
            "dataset_id": moons["id"],
            "init_model_id": first["model_id"],
            "hyperparameters": {"epochs": 100},  # the rest is the model's
        },
    )
    assert response.status_code == 202, response.text
    assert (response.json()["init_model_id"], response.json()["initial_epoch"]) == (
        first["model_id"],
        100,
    )
    second = await wait_for_job(client, response.json()["id"])
    whole = await wait_for_job(client, whole["id"])
    assert second["status"] == whole["status"] == "succeeded"
    assert second["hyperparameters"] == {**whole["hyperparameters"], "epochs": 100}
    assert (second["epoch"], second["epochs"]) == (200, 100)

    mine, theirs = await _model(client, second["model_id"]), await _model(client, whole["model_id"])
    for a, b in zip(mine.weights + mine.biases, theirs.weights + theirs.biases, strict=True):
        assert float(np.abs(a - b).max() / np.abs(b).max()) <= RELATIVE
    if options["optimizer"] == "adam":
        assert mine.optimizer_state is not None and mine.optimizer_state.steps == 200
    assert mine.continued_from == first["model_id"]  # in the .npz metadata
    public = (await client.get(f"/v1/models/{second['model_id']}")).json()
    assert public["continued_from"] == first["model_id"]
    assert (await client.get(f"/v1/models/{first['model_id']}")).json()["continued_from"] is None

    # The history counts on from the parent's epochs and joins the one-go curve.
    history = (await client.get(f"/v1/jobs/{second['id']}/history")).json()["history"]
    one_go = (await client.get(f"/v1/jobs/{whole['id']}/history")).json()["history"]
    assert [point["epoch"] for point in history] == [
        point["epoch"] for point in one_go[-len(history) :]
    ]
    assert (
        history[0]["epoch"] == 110 if options["optimizer"] == "sgd" else history[0]["epoch"] > 100
    )
    for point, other in zip(history, one_go[-len(history) :], strict=True):
        assert point["train_loss"] == pytest.approx(other["train_loss"], rel=RELATIVE)


async def test_an_alias_names_the_model_and_options_may_change(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    first = await _done(
        client, {"dataset_id": moons["id"], "hyperparameters": {**FULL_BATCH_SGD, "epochs": 50}}
    )
    assert (
        await client.put(f"/v1/models/{first['model_id']}/aliases/continue-me")
    ).status_code == 200
    later = await _done(
        client,
        {
            "dataset_id": moons["id"],
            "init_model_id": "continue-me",
            "hyperparameters": {"epochs": 30, "learning_rate": 0.5, "hidden_layers": [3]},
        },
    )
    assert later["init_model_id"] == first["model_id"]
    assert later["hyperparameters"]["learning_rate"] == 0.5
    assert later["hyperparameters"]["l2"] == 0.01  # the model's, not the default 0
    assert later["epoch"] == 80


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        (
            {"hidden_layers": [5]},
            ["body", "hyperparameters", "hidden_layers"],
            "has hidden_layers [3]",
        ),
        (
            {"activation": "relu"},
            ["body", "hyperparameters", "activation"],
            'has activation "tanh"',
        ),
        (
            {"input_features": ["identity", "square"]},
            ["body", "hyperparameters", "input_features"],
            'has input_features ["identity"]',
        ),
        ({"dtype": "float32"}, ["body", "hyperparameters", "dtype"], 'has dtype "float64"'),
    ],
)
async def test_an_architecture_change_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
    moons: dict[str, Any],
    change: dict[str, Any],
    loc: list[str],
    message: str,
) -> None:
    first = await _done(
        client, {"dataset_id": moons["id"], "hyperparameters": {**FULL_BATCH_SGD, "epochs": 10}}
    )
    before = (await client.get("/v1/jobs")).json()["total"]
    response = await client.post(
        "/v1/jobs",
        json={
            "dataset_id": moons["id"],
            "init_model_id": first["model_id"],
            "hyperparameters": change,
        },
    )
    issue = assert_problem(response, 422, "invalid-request")["errors"][0]
    assert issue["loc"] == loc and message in issue["msg"], issue
    assert "keeps the model's architecture" in issue["msg"]
    assert (await client.get("/v1/jobs")).json()["total"] == before


async def test_data_that_does_not_fit_the_model_is_a_422(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    first = await _done(
        client, {"dataset_id": moons["id"], "hyperparameters": {**FULL_BATCH_SGD, "epochs": 10}}
    )
    three = await create_dataset(client, kind="blobs", n_classes=3, n_samples=90)
    wide = await create_dataset(
        client, kind="custom", points=[[i, i % 3, i % 5] for i in range(20)], labels=[0, 1] * 10
    )
    for dataset, message in [
        (three, f"has classes [0, 1, 2] but model {first['model_id']} predicts [0, 1]"),
        (wide, f"has 3 features but model {first['model_id']} takes 2"),
    ]:
        response = await client.post(
            "/v1/jobs", json={"dataset_id": dataset["id"], "init_model_id": first["model_id"]}
        )
        issue = assert_problem(response, 422, "invalid-request")["errors"][0]
        assert issue["loc"] == ["body", "dataset_id"] and message in issue["msg"], issue
    response = await client.post(
        "/v1/jobs",
        json={"dataset_id": moons["id"], "init_model_id": first["model_id"], "baseline": True},
    )
    issue = assert_problem(response, 422, "invalid-request")["errors"][0]
    assert issue["loc"] == ["body", "baseline"]
    missing = await client.post(
        "/v1/jobs", json={"dataset_id": moons["id"], "init_model_id": "mdl_0000000000000000"}
    )
    assert (
        "model mdl_0000000000000000 does not exist"
        in assert_problem(missing, 404, "not-found")["detail"]
    )


async def test_a_model_of_another_key_is_a_404() -> None:
    async with running(**KEYS) as (_app, client):
        created = await client.post(
            "/v1/datasets", json={"kind": "moons", "n_samples": 100}, headers=as_(ALICE)
        )
        dataset_id = created.json()["id"]
        job = await client.post(
            "/v1/jobs",
            json={"dataset_id": dataset_id, "hyperparameters": {**FULL_BATCH_SGD, "epochs": 10}},
            headers=as_(ALICE),
        )
        client.headers.update(as_(ALICE))
        done = await wait_for_job(client, job.json()["id"])
        theirs = await client.post(
            "/v1/datasets", json={"kind": "moons", "n_samples": 100}, headers=as_(BOB)
        )
        response = await client.post(
            "/v1/jobs",
            json={"dataset_id": theirs.json()["id"], "init_model_id": done["model_id"]},
            headers=as_(BOB),
        )
        problem = assert_problem(response, 404, "not-found")
        assert problem["detail"] == f"model {done['model_id']} does not exist"
        mine = await client.post(
            "/v1/jobs",
            json={"dataset_id": dataset_id, "init_model_id": done["model_id"]},
            headers=as_(ALICE),
        )
        assert mine.status_code == 202, mine.text


async def test_a_regression_model_continues_in_its_own_units(client: httpx.AsyncClient) -> None:
    """On other data (another seed: other input and target scalings) a continued regression
    model keeps both of its scalers, so a step too small to move a weight changes none of its
    predictions in original units."""
    mine = await create_dataset(client, kind="reg_plane", n_samples=200, noise=0.1, seed=0)
    other = await create_dataset(client, kind="reg_plane", n_samples=200, noise=0.5, seed=7)
    first = await _done(
        client,
        {
            "dataset_id": mine["id"],
            "hyperparameters": {"hidden_layers": [4], "optimizer": "sgd", "epochs": 50},
        },
    )
    later = await _done(
        client,
        {
            "dataset_id": other["id"],
            "init_model_id": first["model_id"],
            "hyperparameters": {"epochs": 1, "learning_rate": 1e-300},
        },
    )
    points = {"points": [[-4.0, 3.0], [0.0, 0.0], [5.0, -2.5]]}
    before = await client.post(f"/v1/models/{first['model_id']}/predict", json=points)
    after = await client.post(f"/v1/models/{later['model_id']}/predict", json=points)
    assert before.status_code == after.status_code == 200, (before.text, after.text)
    assert after.json()["values"] == before.json()["values"]
    parent, child = await _model(client, first["model_id"]), await _model(client, later["model_id"])
    assert child.target_scaler is not None and parent.target_scaler is not None
    assert np.array_equal(child.target_scaler.mean, parent.target_scaler.mean)
    assert np.array_equal(child.scaler.mean, parent.scaler.mean)
