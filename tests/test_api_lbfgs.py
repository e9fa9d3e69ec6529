"""optimizer lbfgs through the API: a job's stop reasons, the options it refuses, and a sweep that
trains an lbfgs configuration (alone) next to gradient descent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api_support import assert_problem, create_dataset, create_job, wait_for_job
from tests.test_api_sweeps import post_sweep, wait_for_sweep

pytestmark = pytest.mark.anyio

LBFGS_JOB: dict[str, Any] = {
    "hidden_layers": [3],
    "activation": "tanh",
    "optimizer": "lbfgs",
    "l2": 0.01,
    "epochs": 2000,
    "record_every": 1,
}


@pytest.fixture
async def moons(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_dataset(client, kind="moons", n_samples=200, noise=0.2)


async def test_an_lbfgs_job_converges_and_says_so(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    job = await create_job(client, moons["id"], **LBFGS_JOB, tolerance=1e-6)
    assert (job["hyperparameters"]["tolerance"], job["hyperparameters"]["lbfgs_memory"]) == (
        1e-6,
        10,
    )
    done = await wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["stop_reason"] == "converged"
    assert 10 < done["epoch"] < 2000
    history = (await client.get(f"/v1/jobs/{job['id']}/history")).json()["history"]
    assert [point["epoch"] for point in history] == list(range(1, done["epoch"] + 1))
    losses = [point["train_loss"] for point in history]
    assert losses == sorted(losses, reverse=True)
    assert history[-1]["train_loss"] == done["metrics"]["train_loss"] < 0.1

    # an epoch budget smaller than convergence needs ends it as completed
    short = await wait_for_job(
        client, (await create_job(client, moons["id"], **LBFGS_JOB | {"epochs": 5}))["id"]
    )
    assert (short["status"], short["stop_reason"], short["epoch"]) == ("succeeded", "completed", 5)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"batch_size": 16}, "optimizer lbfgs trains full batch: batch_size must be null, got 16"),
        ({"lr_schedule": "plateau"}, "lr_schedule must be constant, got plateau"),
        ({"l1": 0.5}, "l1 must be 0, got 0.5"),
    ],
)
async def test_options_lbfgs_cannot_use_are_422_and_change_nothing(
    client: httpx.AsyncClient, moons: dict[str, Any], overrides: dict[str, Any], words: str
) -> None:
    before = (await client.get("/v1/jobs")).json()["total"]
    response = await client.post(
        "/v1/jobs",
        json={"dataset_id": moons["id"], "hyperparameters": LBFGS_JOB | overrides},
    )
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"][:2] == ["body", "hyperparameters"]
    assert words in problem["errors"][0]["msg"]
    assert (await client.get("/v1/jobs")).json()["total"] == before
    for field, value in (("lbfgs_memory", 101), ("tolerance", -1e-3)):
        response = await client.post(
            "/v1/jobs",
            json={"dataset_id": moons["id"], "hyperparameters": LBFGS_JOB | {field: value}},
        )
        problem = assert_problem(response, 422, "validation-error")
        assert problem["errors"][0]["loc"][:3] == ["body", "hyperparameters", field]


async def test_a_sweep_trains_lbfgs_alone_as_a_job_trains_it(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    base = LBFGS_JOB | {"optimizer": "sgd", "learning_rate": 2.0, "epochs": 300}
    created = await post_sweep(
        client, dataset_id=moons["id"], base=base, grid={"optimizer": ["sgd", "lbfgs"]}
    )
    sweep = await wait_for_sweep(client, created["id"])
    assert sweep["status"] == "succeeded", sweep
    sgd_row, lbfgs_row = sweep["results"]
    assert (sgd_row["stop_reason"], sgd_row["epochs_run"]) == ("completed", 300)
    assert lbfgs_row["stop_reason"] == "converged" and lbfgs_row["epochs_run"] < 300
    assert lbfgs_row["train_loss"] < sgd_row["train_loss"]
    job = await create_job(client, moons["id"], **lbfgs_row["hyperparameters"])
    alone = await wait_for_job(client, job["id"])
    assert alone["epoch"] == lbfgs_row["epochs_run"]
    assert alone["metrics"]["train_loss"] == lbfgs_row["train_loss"]  # bit for bit: alone
