"""Pictures of a job while it learns, through the app: parameter snapshots (GET
/v1/jobs/{id}/snapshots), the decision boundary at a snapshot, the evolution GIF, the
`snapshot_epoch` of jobs and progress events, and /v1/models/{id}/neurons.png."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from engine import plotting
from engine.serialize import model_from_npz
from tests.api_support import (
    LONG_JOB,
    assert_problem,
    changed_pixels,
    create_dataset,
    create_job,
    parse_sse,
    png_size,
    running,
    wait_for_job,
)

pytestmark = pytest.mark.anyio

# The tutorial's network, for few epochs: a snapshot every 100 epochs, a point every 10.
TUTORIAL: dict[str, Any] = {
    "hidden_layers": [3],
    "activation": "tanh",
    "optimizer": "sgd",
    "learning_rate": 2.0,
    "l2": 0.01,
    "epochs": 600,
    "record_every": 10,
    "snapshot_every": 100,
}
ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef"


async def moons(client: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/datasets", json={"kind": "moons", "n_samples": 200, "noise": 0.2}, headers=headers
    )
    assert response.status_code == 201, response.text
    dataset: dict[str, Any] = response.json()
    return dataset


async def finished(client: httpx.AsyncClient, dataset_id: str, **options: Any) -> dict[str, Any]:
    job = await create_job(client, dataset_id, **{**TUTORIAL, **options})
    done = await wait_for_job(client, job["id"])
    assert done["status"] == "succeeded", done
    return done


async def picture(client: httpx.AsyncClient, path: str, **params: Any) -> bytes:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.content


def gif_frames(content: bytes) -> list[np.ndarray]:
    image = Image.open(io.BytesIO(content))
    assert image.format == "GIF"
    frames = []
    for index in range(image.n_frames):
        image.seek(index)
        frames.append(np.asarray(image.convert("RGB")))
    return frames


async def test_a_finished_job_draws_each_snapshot(client: httpx.AsyncClient) -> None:
    dataset = await moons(client)
    job = await finished(client, dataset["id"])
    assert job["snapshot_epoch"] == 600
    listed = (await client.get(f"/v1/jobs/{job['id']}/snapshots")).json()
    assert listed == {"job_id": job["id"], "epochs": [100, 200, 300, 400, 500, 600]}

    # the latest snapshot is the trained network: the model's boundary, byte for byte
    response = await client.get(f"/v1/jobs/{job['id']}/decision-boundary.png")
    assert response.headers["cache-control"] == "private, max-age=3600"  # finished: for good
    latest = response.content
    model = await picture(client, f"/v1/models/{job['model_id']}/decision-boundary.png")
    assert latest == model
    assert latest == await picture(client, f"/v1/jobs/{job['id']}/decision-boundary.png", epoch=600)
    # the snapshot at epoch 100 is the network a 100-epoch run of the same seed trains
    early = await picture(client, f"/v1/jobs/{job['id']}/decision-boundary.png", epoch=100)
    short = await finished(client, dataset["id"], epochs=100)
    assert early == await picture(client, f"/v1/models/{short['model_id']}/decision-boundary.png")
    assert changed_pixels(early, latest).mean() > 0.01  # it learned in between
    # the model's query parameters, with their look
    small = await picture(
        client,
        f"/v1/jobs/{job['id']}/decision-boundary.png",
        width=320,
        height=240,
        resolution=50,
        show="none",
    )
    assert png_size(small) == (320, 240)
    assert small == await picture(
        client,
        f"/v1/models/{job['model_id']}/decision-boundary.png",
        width=320,
        height=240,
        resolution=50,
        show="none",
    )


async def test_progress_events_carry_the_latest_snapshot_epoch(client: httpx.AsyncClient) -> None:
    dataset = await moons(client)
    job = await finished(client, dataset["id"], epochs=250, record_every=50)
    response = await client.get(f"/v1/jobs/{job['id']}/events")
    progress = [event for event in parse_sse(response.text) if event.get("event") == "progress"]
    import json

    seen = [
        (data["epoch"], data["snapshot_epoch"])
        for data in map(json.loads, (e["data"] for e in progress))
    ]
    assert seen == [(50, None), (100, 100), (150, 100), (200, 200), (250, 250)]


async def test_bad_epochs_are_refused_with_the_nearest_kept(client: httpx.AsyncClient) -> None:
    dataset = await moons(client)
    job = await finished(client, dataset["id"])
    path = f"/v1/jobs/{job['id']}/decision-boundary.png"
    problem = assert_problem(await client.get(path, params={"epoch": 150}), 404, "not-found")
    assert "no snapshot at epoch 150" in problem["detail"]
    assert "nearest kept epochs are 100 and 200" in problem["detail"]
    problem = assert_problem(await client.get(path, params={"epoch": 9000}), 404, "not-found")
    assert "nearest kept epochs are 600 " in problem["detail"]
    for bad in ("-1", "0", "1.5", "abc"):
        problem = assert_problem(
            await client.get(path, params={"epoch": bad}), 422, "validation-error"
        )
        assert problem["errors"][0]["loc"] == ["query", "epoch"], problem
    for params in ({"max_frames": 1}, {"max_frames": 101}, {"width": 1025}, {"resolution": 301}):
        assert_problem(
            await client.get(f"/v1/jobs/{job['id']}/evolution.gif", params=params),
            422,
            "validation-error",
        )


async def test_a_job_without_snapshots_says_they_are_off(client: httpx.AsyncClient) -> None:
    dataset = await moons(client)
    job = await finished(client, dataset["id"], snapshot_every=None, epochs=100)
    assert job["snapshot_epoch"] is None
    assert (await client.get(f"/v1/jobs/{job['id']}/snapshots")).json()["epochs"] == []
    for route in ("decision-boundary.png", "evolution.gif"):
        problem = assert_problem(await client.get(f"/v1/jobs/{job['id']}/{route}"), 409, "conflict")
        assert "snapshot_every is null" in problem["detail"]
    assert_problem(await client.get("/v1/jobs/job_0000000000000000/snapshots"), 404, "not-found")


async def test_a_running_job_draws_its_latest_snapshot() -> None:
    async with running(workers=1) as (_app, client):
        dataset = await moons(client)
        job = await create_job(client, dataset["id"], **{**LONG_JOB, "snapshot_every": 100})
        queued = await create_job(client, dataset["id"], **TUTORIAL)  # waits for the worker
        problem = assert_problem(
            await client.get(f"/v1/jobs/{queued['id']}/decision-boundary.png"), 409, "conflict"
        )
        assert "is queued" in problem["detail"]
        assert (await client.get(f"/v1/jobs/{queued['id']}/snapshots")).json()["epochs"] == []

        with_two = await _until(client, job["id"], lambda j: (j["snapshot_epoch"] or 0) >= 200)
        assert with_two["status"] == "running"
        png = await picture(client, f"/v1/jobs/{job['id']}/decision-boundary.png", epoch=100)
        assert png_size(png) == (640, 480)
        # the latest changes while it runs: asked for again each time (304 while unchanged);
        # a given epoch's never changes
        path = f"/v1/jobs/{job['id']}/decision-boundary.png"
        latest = await client.get(path, params={"width": 200, "height": 150})
        assert latest.headers["cache-control"] == "private, no-cache"
        fixed = await client.get(path, params={"epoch": 100})
        assert fixed.headers["cache-control"] == "private, max-age=3600"
        again = await client.get(
            path, params={"epoch": 100}, headers={"If-None-Match": fixed.headers["etag"]}
        )
        assert again.status_code == 304
        kept_before = (await client.get(f"/v1/jobs/{job['id']}/snapshots")).json()["epochs"]
        small = {"max_frames": 10, "width": 200, "height": 150, "resolution": 30}
        frames = gif_frames(await picture(client, f"/v1/jobs/{job['id']}/evolution.gif", **small))
        kept_after = (await client.get(f"/v1/jobs/{job['id']}/snapshots")).json()["epochs"]
        # the job goes on while the GIF is drawn: one frame per snapshot kept at the time
        assert min(len(kept_before), 10) <= len(frames) <= min(len(kept_after), 10)
        assert len(kept_before) >= 2
        await client.post(f"/v1/jobs/{job['id']}/cancel")
        await client.post(f"/v1/jobs/{queued['id']}/cancel")


async def _until(client: httpx.AsyncClient, job_id: str, done: Any) -> dict[str, Any]:
    import anyio

    with anyio.fail_after(60):
        while True:
            job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
            if done(job):
                return job
            assert job["status"] in ("queued", "running"), job
            await anyio.sleep(0.05)


async def test_the_evolution_gif_has_bounded_frames(client: httpx.AsyncClient) -> None:
    dataset = await moons(client)
    job = await finished(client, dataset["id"], epochs=3000, snapshot_every=10)
    epochs = (await client.get(f"/v1/jobs/{job['id']}/snapshots")).json()["epochs"]
    # 300 snapshots taken, at most 100 kept: every 40th epoch (a stride of 4), then the last
    assert epochs[0] == 10 and epochs[-1] == 3000 and 50 <= len(epochs) <= 100
    assert set(np.diff(epochs[:-1]).tolist()) == {40}
    path = f"/v1/jobs/{job['id']}/evolution.gif"
    small = {"width": 200, "height": 150, "resolution": 30}
    frames = gif_frames(await picture(client, path, max_frames=7, **small))
    assert len(frames) == 7 and frames[0].shape == (150, 200, 3)
    # it learns: the class regions of the first frame and the last differ
    assert (frames[0] != frames[-1]).any(axis=2).mean() > 0.01
    tiny = {"width": 100, "height": 100, "resolution": 10}
    assert len(gif_frames(await picture(client, path, **tiny))) == 50  # the default
    assert len(gif_frames(await picture(client, path, max_frames=2, **small))) == 2


async def test_another_keys_job_is_not_found() -> None:
    keys = f"alice:{ALICE},bob:{BOB}"
    async with running(api_keys=keys) as (_app, client):
        dataset = await moons(client, Authorization=f"Bearer {ALICE}")
        response = await client.post(
            "/v1/jobs",
            json={"dataset_id": dataset["id"], "hyperparameters": {**TUTORIAL, "epochs": 100}},
            headers={"Authorization": f"Bearer {ALICE}"},
        )
        job_id = response.json()["id"]
        for route in ("snapshots", "decision-boundary.png", "evolution.gif"):
            response = await client.get(
                f"/v1/jobs/{job_id}/{route}", headers={"Authorization": f"Bearer {BOB}"}
            )
            assert_problem(response, 404, "not-found")
        response = await client.get(
            f"/v1/jobs/{job_id}/snapshots", headers={"Authorization": f"Bearer {ALICE}"}
        )
        assert response.status_code == 200


async def test_snapshots_survive_a_restart(tmp_path: Path) -> None:
    async with running(data_dir=tmp_path) as (_app, client):
        dataset = await moons(client)
        job = await finished(client, dataset["id"], epochs=2000, snapshot_every=10)
        epochs = (await client.get(f"/v1/jobs/{job['id']}/snapshots")).json()["epochs"]
        # 200 taken, thinned to a stride of 4 (written when the job finished): epochs 10, 50,
        # 90, ... and the last
        assert epochs == [*range(10, 2000, 40), 2000]
        before = await picture(client, f"/v1/jobs/{job['id']}/decision-boundary.png", epoch=330)
    async with running(data_dir=tmp_path) as (_app, client):
        again = (await client.get(f"/v1/jobs/{job['id']}")).json()
        assert again["snapshot_epoch"] == 2000
        assert (await client.get(f"/v1/jobs/{job['id']}/snapshots")).json()["epochs"] == epochs
        after = await picture(client, f"/v1/jobs/{job['id']}/decision-boundary.png", epoch=330)
        assert after == before


async def test_neurons_draw_one_panel_per_hidden_unit(client: httpx.AsyncClient) -> None:
    dataset = await moons(client)
    for hidden in ([3], [4, 2]):
        job = await finished(client, dataset["id"], hidden_layers=hidden, epochs=200)
        path = f"/v1/models/{job['model_id']}/neurons.png"
        png = await picture(client, path)
        exported = await client.get(f"/v1/models/{job['model_id']}/export")
        model = model_from_npz(exported.content)
        content = await client.get(f"/v1/datasets/{dataset['id']}/points")
        assert content.status_code in (200, 404)
        columns = max(hidden)
        assert png_size(png)[0] == 34 + columns * 110 + 10 + 12 + 40
        figure = plotting.neurons_figure(model)
        panels = [ax for ax in figure.axes if ax.get_title().startswith("unit")]
        assert len(panels) == sum(hidden)
        larger = await picture(client, path, panel_size=200, resolution=30)
        assert png_size(larger)[0] == 34 + columns * 200 + 10 + 12 + 40


async def test_neurons_need_hidden_units_and_two_features(client: httpx.AsyncClient) -> None:
    dataset = await moons(client)
    softmax = await finished(client, dataset["id"], hidden_layers=[], epochs=100)
    problem = assert_problem(
        await client.get(f"/v1/models/{softmax['model_id']}/neurons.png"), 409, "conflict"
    )
    assert "no hidden layer" in problem["detail"]
    iris = await create_dataset(client, kind="iris")
    job = await finished(client, iris["id"], epochs=100)
    for path in (
        f"/v1/models/{job['model_id']}/neurons.png",
        f"/v1/jobs/{job['id']}/decision-boundary.png",
        f"/v1/jobs/{job['id']}/evolution.gif",
    ):
        problem = assert_problem(await client.get(path), 409, "conflict")
        assert "has 4 features" in problem["detail"], path
    # the snapshots are kept all the same
    assert (await client.get(f"/v1/jobs/{job['id']}/snapshots")).json()["epochs"] == [100]
