"""/v1/sweeps through the app with two real worker processes."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from tests.api_support import (
    FINISHED,
    JOB_SECONDS,
    api_settings,
    assert_problem,
    create_dataset,
    parse_sse,
    png_size,
    running_app,
    state_of,
)
from tests.documented import HYPERPARAMETER_DEFAULTS

pytestmark = pytest.mark.anyio

TUTORIAL_BASE: dict[str, Any] = {
    "activation": "tanh",
    "optimizer": "sgd",
    "learning_rate": 2.0,
    "l2": 0.01,
    "epochs": 40,
    "record_every": 10,
}
HIDDEN_SIZES = [[1], [2], [3], [4], [5], [20], [50]]
# a configuration that trains far longer than any test waits (work 5.2e10 < max_work 1e11)
LONG: dict[str, Any] = {"hidden_layers": [64], "epochs": 1_000_000, "record_every": 100}


@pytest.fixture
async def moons(client: httpx.AsyncClient) -> dict[str, Any]:
    return await create_dataset(client, kind="moons", n_samples=200, noise=0.2, seed=0)


async def post_sweep(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/sweeps/{created['id']}"
    return created


async def wait_for_sweep(
    client: httpx.AsyncClient, sweep_id: str, until: Any = None
) -> dict[str, Any]:
    """Poll until the sweep has finished (or `until(sweep)` holds); returns the sweep."""
    with anyio.fail_after(JOB_SECONDS):
        while True:
            response = await client.get(f"/v1/sweeps/{sweep_id}")
            assert response.status_code == 200, response.text
            sweep: dict[str, Any] = response.json()
            if until(sweep) if until is not None else sweep["status"] in FINISHED:
                return sweep
            await anyio.sleep(0.02)


async def test_the_tutorial_sweep_trains_every_size_and_the_baseline(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    created = await post_sweep(
        client,
        dataset_id=moons["id"],
        name="hidden sizes",
        base=TUTORIAL_BASE,
        grid={"hidden_layers": HIDDEN_SIZES},
        baseline=True,
    )
    assert created["id"].startswith("swp_")
    assert created["status"] in ("queued", "running")  # a worker may have started it
    assert created["progress"]["total"] == 7
    assert created["base"] == HYPERPARAMETER_DEFAULTS | TUTORIAL_BASE

    sweep = await wait_for_sweep(client, created["id"])
    assert sweep["status"] == "succeeded"
    assert sweep["name"] == "hidden sizes"
    assert sweep["progress"] | {"fraction": 1.0} == {
        "completed": 7,
        "total": 7,
        "succeeded": 7,
        "failed": 0,
        "cancelled": 0,
        "running": 0,
        "epochs_completed": 280,
        "epochs_total": 280,
        "fraction": 1.0,
    }
    rows = sweep["results"]
    assert [row["index"] for row in rows] == list(range(7))
    assert [row["varied"] for row in rows] == [{"hidden_layers": h} for h in HIDDEN_SIZES]
    for row, sizes in zip(rows, HIDDEN_SIZES, strict=True):
        expected = HYPERPARAMETER_DEFAULTS | TUTORIAL_BASE | {"hidden_layers": sizes}
        assert row["hyperparameters"] == expected
        assert row["status"] == "succeeded" and row["epochs_run"] == 40
        assert row["test_accuracy"] is not None and row["error"] is None
    best = min(range(7), key=lambda i: rows[i]["test_loss"])
    assert sweep["best_index"] == best
    assert [row["best"] for row in rows] == [i == best for i in range(7)]
    baseline = sweep["baseline"]
    assert baseline["index"] is None and baseline["status"] == "succeeded"
    assert baseline["hyperparameters"]["hidden_layers"] == []
    assert baseline["best"] is False

    # every configuration's model is an ordinary model
    model = (await client.get(f"/v1/models/{rows[2]['model_id']}")).json()
    assert model["architecture"] == [2, 3, 2]
    assert model["job_id"] is None and model["dataset_id"] == moons["id"]
    assert model["sweep_id"] == created["id"]
    assert model["metrics"]["test_loss"] == rows[2]["test_loss"]
    assert model["has_history"] is True
    predicted = await client.post(
        f"/v1/models/{rows[2]['model_id']}/predict", json={"points": [[0.0, 1.0]]}
    )
    assert predicted.status_code == 200
    exported = await client.get(f"/v1/models/{baseline['model_id']}/export")
    assert exported.status_code == 200


async def test_a_diverging_configuration_fails_alone(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    created = await post_sweep(
        client,
        dataset_id=moons["id"],
        base={"hidden_layers": [16], "optimizer": "sgd", "epochs": 200},
        grid={"learning_rate": [0.5, 1000]},
    )
    sweep = await wait_for_sweep(client, created["id"])
    assert sweep["status"] == "succeeded"
    calm, diverged = sweep["results"]
    assert calm["status"] == "succeeded" and calm["model_id"] is not None
    assert diverged["status"] == "failed" and diverged["model_id"] is None
    assert diverged["error"]["type"] == "diverged"
    assert "at epoch" in diverged["error"]["detail"]
    assert sweep["best_index"] == 0


async def test_cancel_keeps_the_configurations_that_finished(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    created = await post_sweep(
        client,
        dataset_id=moons["id"],
        base={**LONG},
        grid={"epochs": [20, LONG["epochs"]], "record_every": [10]},
    )
    sweep_id = created["id"]
    running = await wait_for_sweep(
        client,
        sweep_id,
        lambda s: s["results"][0]["status"] == "succeeded" and s["results"][1]["epochs_run"],
    )
    assert running["status"] == "running"
    response = await client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    sweep = await wait_for_sweep(client, sweep_id)
    assert sweep["status"] == "cancelled"
    quick, long = sweep["results"]
    assert quick["status"] == "succeeded"
    assert (await client.get(f"/v1/models/{quick['model_id']}")).status_code == 200
    assert long["status"] == "cancelled" and long["model_id"] is None
    assert sweep["progress"]["cancelled"] == 1
    again = await client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert "already cancelled" in assert_problem(again, 409, "conflict")["detail"]


async def test_a_dataset_cannot_be_deleted_while_a_sweep_trains_on_it(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    slow = await post_sweep(client, dataset_id=moons["id"], base=LONG, grid={"seed": [0]})
    refused = await client.delete(f"/v1/datasets/{moons['id']}")
    detail = assert_problem(refused, 409, "conflict")["detail"]
    assert slow["id"] in detail and "1 queued or running" in detail
    assert (await client.get(f"/v1/datasets/{moons['id']}")).status_code == 200

    assert (await client.post(f"/v1/sweeps/{slow['id']}/cancel")).status_code == 202
    assert (await wait_for_sweep(client, slow["id"]))["status"] == "cancelled"
    assert (await client.delete(f"/v1/datasets/{moons['id']}")).status_code == 204
    assert_problem(await client.get(f"/v1/datasets/{moons['id']}"), 404, "not-found")


async def test_events_replay_points_results_then_status(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    created = await post_sweep(
        client,
        dataset_id=moons["id"],
        base={"hidden_layers": [3], "epochs": 30, "record_every": 10},
        grid={"learning_rate": [0.01, 0.1]},
        baseline=True,
    )
    response = await client.get(f"/v1/sweeps/{created['id']}/events")  # returns at the end
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    kinds = [event["event"] for event in events]
    assert kinds.count("progress") == 9  # 3 points for each of 2 configurations + baseline
    assert kinds.count("result") == 3
    assert kinds[-1] == "status"
    assert [event.get("id") for event in events] == [str(i) for i in range(1, 13)] + [None]
    points = [json.loads(e["data"]) for e in events if e["event"] == "progress"]
    assert all(point["sweep_id"] == created["id"] for point in points)
    for index in (0, 1, None):
        assert [p["epoch"] for p in points if p["index"] == index] == [10, 20, 30]
    results = [json.loads(e["data"]) for e in events if e["event"] == "result"]
    assert sorted(str(r["index"]) for r in results) == ["0", "1", "None"]
    assert all(r["status"] == "succeeded" for r in results)
    assert json.loads(events[-1]["data"])["status"] == "succeeded"

    resumed = await client.get(
        f"/v1/sweeps/{created['id']}/events", headers={"last-event-id": "10"}
    )
    assert [e.get("id") for e in parse_sse(resumed.text)] == ["11", "12", None]


async def test_pictures_of_a_sweep(client: httpx.AsyncClient, moons: dict[str, Any]) -> None:
    created = await post_sweep(
        client,
        dataset_id=moons["id"],
        base={"epochs": 20},
        grid={"hidden_layers": [[2], [4], [8]]},
        baseline=True,
    )
    await wait_for_sweep(client, created["id"])
    grid = await client.get(
        f"/v1/sweeps/{created['id']}/grid.png", params={"panel_width": 200, "columns": 2}
    )
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    assert png_size(grid.content)[0] == 400  # 2 columns of 200 pixels
    cached = await client.get(
        f"/v1/sweeps/{created['id']}/grid.png",
        params={"panel_width": 200, "columns": 2},
        headers={"if-none-match": grid.headers["etag"]},
    )
    assert cached.status_code == 304
    curves = await client.get(
        f"/v1/sweeps/{created['id']}/curves.png", params={"width": 640, "height": 400}
    )
    assert curves.status_code == 200
    assert png_size(curves.content) == (640, 400)


async def test_grid_picture_needs_two_features_and_a_finished_configuration(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    iris = await create_dataset(client, kind="iris")
    flowers = await post_sweep(
        client, dataset_id=iris["id"], base={"epochs": 5}, grid={"hidden_layers": [[2], [3]]}
    )
    refused = await client.get(f"/v1/sweeps/{flowers['id']}/grid.png")
    detail = assert_problem(refused, 409, "conflict")["detail"]
    assert "4 features" in detail and "2-feature" in detail

    slow = await post_sweep(client, dataset_id=moons["id"], base=LONG, grid={"seed": [0]})
    early = await client.get(f"/v1/sweeps/{slow['id']}/grid.png")
    assert "no configuration has succeeded" in assert_problem(early, 409, "conflict")["detail"]
    assert (await client.post(f"/v1/sweeps/{slow['id']}/cancel")).status_code == 202
    assert (await wait_for_sweep(client, slow["id"]))["status"] == "cancelled"


@pytest.mark.parametrize(
    ("grid", "where", "words"),
    [
        ({"learning_rate": [0.001 * (i + 1) for i in range(65)]}, ["grid"], "65 configurations"),
        ({"hidden_layer": [[3]]}, ["grid", "hidden_layer"], "not a hyperparameter"),
        ({"learning_rate": []}, ["grid", "learning_rate"], "at least one value"),
        ({"learning_rate": [0.1, 0.1]}, ["grid", "learning_rate", 1], "repeats value 0"),
        ({"learning_rate": [0.1, -1]}, ["grid", "learning_rate", 1], "value -1"),
        ({"activation": ["tanh", "swish"]}, ["grid", "activation", 1], 'value "swish"'),
        ({"hidden_layers": [[3], [65]]}, ["grid", "hidden_layers", 1], "max_units_per_layer"),
        ({"epochs": [10, 1_000_001]}, ["grid", "epochs", 1], "max_epochs"),
    ],
)
async def test_bad_grids_are_422_naming_the_key_and_value(
    client: httpx.AsyncClient,
    moons: dict[str, Any],
    grid: dict[str, Any],
    where: list[str | int],
    words: str,
) -> None:
    response = await client.post("/v1/sweeps", json={"dataset_id": moons["id"], "grid": grid})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["loc"] == ["body", *where]
    assert words in problem["detail"]


async def test_the_work_of_all_configurations_is_summed(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    # each 5.2e10 units of work, under max_work = 1e11; the two together are over it
    body = {"dataset_id": moons["id"], "base": LONG, "grid": {"seed": [0, 1]}}
    response = await client.post("/v1/sweeps", json=body)
    detail = assert_problem(response, 422, "limit-exceeded")["detail"]
    assert "in all" in detail and "max_work" in detail


async def test_sweep_requests_are_validated(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    unknown = await client.post("/v1/sweeps", json={"dataset_id": "ds_x", "grid": {"seed": [0]}})
    assert "does not exist" in assert_problem(unknown, 422, "invalid-request")["detail"]
    empty = await client.post("/v1/sweeps", json={"dataset_id": moons["id"], "grid": {}})
    assert_problem(empty, 422, "validation-error")
    missing = await client.get("/v1/sweeps/swp_0000000000000000")
    assert_problem(missing, 404, "not-found")


async def test_idempotency_key_returns_the_same_sweep(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    body = {"dataset_id": moons["id"], "base": {"epochs": 5}, "grid": {"seed": [0, 1]}}
    headers = {"Idempotency-Key": "sweep-retry"}
    first = await client.post("/v1/sweeps", json=body, headers=headers)
    second = await client.post("/v1/sweeps", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    other = await client.post("/v1/sweeps", json={**body, "grid": {"seed": [2]}}, headers=headers)
    assert_problem(other, 422, "invalid-request")


async def test_list_sweeps_by_status_in_pages(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    created = [
        await post_sweep(client, dataset_id=moons["id"], base={"epochs": 5}, grid={"seed": [s]})
        for s in range(2)
    ]
    for sweep in created:
        await wait_for_sweep(client, sweep["id"])
    page = (await client.get("/v1/sweeps", params={"status": "succeeded", "limit": 5})).json()
    assert page["limit"] == 5 and page["total"] >= 2
    assert all(item["status"] == "succeeded" for item in page["items"])
    # pages of 2 from every offset: each sweep once, in creation order, the totals agreeing
    total = (await client.get("/v1/sweeps")).json()["total"]
    pages = [
        (await client.get("/v1/sweeps", params={"limit": 2, "offset": offset})).json()
        for offset in range(0, total + 2, 2)
    ]
    assert [(p["limit"], p["offset"], p["total"]) for p in pages] == [
        (2, offset, total) for offset in range(0, total + 2, 2)
    ]
    assert [len(p["items"]) for p in pages] == [
        min(2, max(0, total - o)) for o in range(0, total + 2, 2)
    ]
    ids = [item["id"] for p in pages for item in p["items"]]
    assert len(ids) == len(set(ids)) == total
    assert ids[-2:] == [sweep["id"] for sweep in created]  # the newest last
    created_at = [item["created_at"] for p in pages for item in p["items"]]
    assert created_at == sorted(created_at)
    one = (await client.get("/v1/sweeps", params={"limit": 1, "offset": total - 1})).json()
    assert [item["id"] for item in one["items"]] == [created[-1]["id"]]
    bad = await client.get("/v1/sweeps", params={"status": "sleeping"})
    assert_problem(bad, 422, "validation-error")


async def test_without_a_test_split_the_best_configuration_has_the_lowest_train_loss(
    client: httpx.AsyncClient,
) -> None:
    no_test = await create_dataset(client, kind="moons", n_samples=100, test_fraction=0)
    created = await post_sweep(
        client,
        dataset_id=no_test["id"],
        base={"hidden_layers": [4], "epochs": 30, "record_every": 10},
        grid={"learning_rate": [0.001, 0.03, 0.1]},
    )
    sweep = await wait_for_sweep(client, created["id"])
    rows = sweep["results"]
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    assert all(row["test_loss"] is None and row["test_accuracy"] is None for row in rows)
    train_losses = [row["train_loss"] for row in rows]
    assert len(set(train_losses)) == 3
    best = train_losses.index(min(train_losses))
    assert sweep["best_index"] == best
    assert [row["best"] for row in rows] == [i == best for i in range(3)]


async def test_a_job_can_train_a_logistic_regression_baseline(
    client: httpx.AsyncClient, moons: dict[str, Any]
) -> None:
    hyperparameters = {"hidden_layers": [5], "epochs": 60, "record_every": 20}
    response = await client.post(
        "/v1/jobs",
        json={"dataset_id": moons["id"], "hyperparameters": hyperparameters, "baseline": True},
    )
    assert response.status_code == 202, response.text
    assert response.json()["baseline"] is None  # until the job has succeeded
    job_id = response.json()["id"]
    with anyio.fail_after(JOB_SECONDS):
        while (job := (await client.get(f"/v1/jobs/{job_id}")).json())["status"] not in FINISHED:
            await anyio.sleep(0.02)
    assert job["status"] == "succeeded"
    baseline = job["baseline"]
    assert baseline["error"] is None and baseline["epochs_run"] == 60
    model = (await client.get(f"/v1/models/{baseline['model_id']}")).json()
    assert model["architecture"] == [2, 2]
    assert model["job_id"] == job_id
    assert model["hyperparameters"] == {**job["hyperparameters"], "hidden_layers": []}
    assert model["metrics"]["test_loss"] == baseline["test_loss"]
    # the job's own history holds the network's points only
    history = (await client.get(f"/v1/jobs/{job_id}/history")).json()["history"]
    assert [point["epoch"] for point in history] == [20, 40, 60]
    plain = await client.post(
        "/v1/jobs", json={"dataset_id": moons["id"], "hyperparameters": hyperparameters}
    )
    assert plain.json()["baseline"] is None


@pytest.mark.slow
async def test_a_share_past_job_timeout_seconds_fails_its_configurations_only() -> None:
    """Each worker's share has the job deadline: the long configuration's share times out,
    the quick one's succeeds, and so does the sweep (one configuration succeeded)."""

    # 3 s: the quick configuration's share needs a few milliseconds, 1000 times less
    async with running_app(api_settings(workers=2, job_timeout_seconds=3.0)) as (client, app):
        moons = await create_dataset(client, kind="moons", n_samples=100)
        created = await post_sweep(
            client, dataset_id=moons["id"], base=LONG, grid={"epochs": [20, LONG["epochs"]]}
        )
        sweep = await wait_for_sweep(client, created["id"])
        # once the workers stop, new sweeps are refused with 503, not a 500
        await anyio.to_thread.run_sync(state_of(app).dispatcher.executor.shutdown)
        body = {"dataset_id": moons["id"], "grid": {"seed": [0]}}
        assert_problem(await client.post("/v1/sweeps", json=body), 503, "not-ready")
    assert sweep["status"] == "succeeded"
    quick, long = sweep["results"]
    assert quick["status"] == "succeeded"
    assert long["status"] == "failed" and long["model_id"] is None
    assert long["error"]["type"] == "timeout"
    assert "job_timeout_seconds = 3" in long["error"]["detail"]


async def test_a_full_queue_refuses_a_sweep_with_429_and_retry_after() -> None:
    async with running_app(api_settings(workers=1, max_queued_jobs=1)) as (client, app):
        moons = await create_dataset(client, kind="moons", n_samples=100)
        body = {"dataset_id": moons["id"], "base": LONG, "grid": {"seed": [0]}}
        running = await post_sweep(client, **body)
        await wait_for_sweep(client, running["id"], lambda s: s["status"] == "running")
        waiting = await post_sweep(client, **body)  # the one place in the queue
        before = (await client.get("/v1/sweeps")).json()["total"]
        response = await client.post("/v1/sweeps", json=body)
        problem = assert_problem(response, 429, "queue-full")
        assert int(response.headers["retry-after"]) >= 1
        assert "max_queued_jobs = 1" in problem["detail"]
        assert (await client.get("/v1/sweeps")).json()["total"] == before
        assert (await client.get(f"/v1/sweeps/{waiting['id']}")).json()["status"] == "queued"
    # shutting down cancelled what was left
    for sweep in (running, waiting):
        assert state_of(app).sweeps.require(sweep["id"]).status == "cancelled"
