"""scratchnet.Client and AsyncClient against a real `python -m service`: every operation, the
problem+json exceptions, retries of a full queue, event streams and the progress bar."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import scratchnet
from scratchnet.types import (
    JobPublic,
    ProgressEvent,
    SweepPointEvent,
    SweepPublic,
    SweepResultEvent,
)
from tests.api_support import PNG_SIGNATURE, REPO, LiveServer, free_port, serve
from tests.client_support import DIVERGING, LONG, QUICK

pytestmark = pytest.mark.e2e

PROBLEM = "https://scratchnet.dev/problems/"


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[scratchnet.Client]:
    with scratchnet.Client(live_server.url) as client:
        yield client


@pytest.fixture(scope="module")
def moons(live_server: LiveServer) -> scratchnet.types.DatasetPublic:
    with scratchnet.Client(live_server.url) as client:
        return client.create_dataset("moons", n_samples=200, noise=0.2, seed=0)


def test_importing_the_package_loads_no_web_service_and_no_scikit_learn() -> None:
    code = (
        "import sys\n"
        "def loaded():\n"
        "    heavy = {'fastapi', 'uvicorn', 'starlette', 'service', 'sklearn'}\n"
        "    return sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
        "import scratchnet\n"
        "print(loaded())\n"
        "import scratchnet.cli\n"
        "print(loaded())\n"
        "scratchnet.MLPClassifier\n"
        "print(loaded())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    # the estimator brings scikit-learn, and nothing brings the service
    assert result.stdout.split("\n")[:3] == ["[]", "[]", "['sklearn']"]


def test_datasets_from_generators_arrays_frames_and_csv(
    client: scratchnet.Client, tmp_path: Path
) -> None:
    moons = client.create_dataset("moons", n_samples=120, noise=0.1, seed=3, test_fraction=0.25)
    assert (moons.kind, moons.n_samples, moons.train_size, moons.test_size) == (
        "moons",
        120,
        90,
        30,
    )
    assert moons.parameters == {"n_samples": 120, "noise": 0.1, "seed": 3}
    full = client.get_dataset(moons, include_points=True)
    assert full.points is not None and len(full.points) == 120 and full.split is not None
    assert client.get_dataset(moons.id).points is None

    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 3)
    labels = np.array(["a", "b", "b", "a"] * 3)
    custom = client.dataset_from_points(X, labels, feature_names=["u", "v"], test_fraction=0)
    assert (custom.classes, custom.feature_names, custom.test_size) == (["a", "b"], ["u", "v"], 0)

    frame = pd.DataFrame({"width": X[:, 0], "height": X[:, 1], "kind": labels})
    from_frame = client.dataset_from_points(frame, "kind", test_fraction=0, standardize=False)
    assert from_frame.feature_names == ["width", "height"] and from_frame.classes == ["a", "b"]
    assert client.get_dataset(from_frame, include_points=True).points == X.tolist()
    with pytest.raises(ValueError, match="not a DataFrame"):
        client.dataset_from_points(X, "kind")

    csv_text = b"x1,x2,label\n" + b"".join(
        f"{x},{y},{label}\n".encode() for (x, y), label in zip(X.tolist(), labels, strict=True)
    )
    (tmp_path / "points.csv").write_bytes(csv_text)
    from_file = client.dataset_from_csv(tmp_path / "points.csv", name="file", test_fraction=0)
    from_bytes = client.dataset_from_csv(csv_text, name="bytes", test_fraction=0)
    assert from_file.name == "file" and from_bytes.name == "bytes"
    assert from_file.n_samples == from_bytes.n_samples == 12

    png = client.dataset_image(moons, tmp_path / "moons.png", width=320, height=240)
    assert png.startswith(PNG_SIGNATURE) and (tmp_path / "moons.png").read_bytes() == png

    page = client.list_datasets(limit=2)
    assert page.limit == 2 and len(page.items) <= 2 and page.total >= 5
    client.delete_dataset(custom)
    with pytest.raises(scratchnet.NotFound):  # escaped: not GET /v1/datasets?limit=1
        client.get_dataset("?limit=1")
    with pytest.raises(scratchnet.NotFound) as caught:
        client.get_dataset(custom.id)
    assert caught.value.status == 404 and caught.value.type == PROBLEM + "not-found"
    assert custom.id in caught.value.detail


def test_train_follow_history_predict_pictures_export_import(
    client: scratchnet.Client, moons: scratchnet.types.DatasetPublic, tmp_path: Path
) -> None:
    job = client.train(moons, scratchnet.Hyperparameters(hidden_layers=[4]), epochs=60,
                       record_every=20, progress=False)  # fmt: skip
    assert job.status == "succeeded" and job.model_id is not None and job.metrics is not None
    assert job.hyperparameters.hidden_layers == [4] and job.hyperparameters.epochs == 60

    events = list(client.follow(job))
    assert [type(e) for e in events] == [ProgressEvent] * 3 + [JobPublic]
    assert [e.epoch for e in events if isinstance(e, ProgressEvent)] == [20, 40, 60]
    assert isinstance(events[-1], JobPublic) and events[-1].id == job.id
    assert [e.epoch for e in client.follow(job.id, since=40)][:1] == [60]
    history = client.job_history(job, max_points=2).history
    assert [point.epoch for point in history] == [20, 60]
    assert client.get_job(job.id).model_id == job.model_id
    assert any(item.id == job.id for item in client.list_jobs(status="succeeded", limit=500).items)

    points = np.array([[0.0, 0.5], [1.0, -0.5], [2.0, 0.5]])
    prediction = client.predict(job.model_id, points)
    assert len(prediction.classes) == 3 and np.allclose(np.sum(prediction.probabilities, 1), 1)

    boundary = client.decision_boundary(job.model_id, tmp_path / "b.png", show="train")
    assert boundary.startswith(PNG_SIGNATURE) and (tmp_path / "b.png").exists()
    assert client.loss_curve(job.model_id, log_scale=True).startswith(PNG_SIGNATURE)

    exported = client.export_model(job.model_id, tmp_path / "model.npz")
    assert (tmp_path / "model.npz").read_bytes() == exported
    imported = client.import_model(tmp_path / "model.npz", name="copy")
    assert imported.name == "copy" and imported.job_id is None and not imported.has_history
    assert client.predict(imported, points) == prediction
    assert client.get_model(imported.id).architecture == [2, 4, 2]
    assert any(m.id == imported.id for m in client.list_models(limit=500).items)
    aliased = client.set_alias(imported, "client-copy")
    assert aliased.id == imported.id and aliased.aliases == ["client-copy"]
    assert client.predict("client-copy", points) == prediction  # an alias wherever an id goes
    assert client.set_alias(job.model_id, "client-copy").aliases == ["client-copy"]  # moved
    assert client.get_model("client-copy").id == job.model_id
    assert client.get_model(imported).aliases == []
    with pytest.raises(scratchnet.InvalidRequest) as refused:
        client.set_alias(imported, "not_an_alias")
    assert refused.value.status == 422 and refused.value.errors[0].loc == ["path", "alias"]
    client.delete_alias(job.model_id, "client-copy")
    with pytest.raises(scratchnet.NotFound):
        client.delete_alias(job.model_id, "client-copy")
    client.delete_model(imported)
    with pytest.raises(scratchnet.NotFound):
        client.get_model(imported.id)
    with pytest.raises(scratchnet.Conflict) as caught:
        client.cancel_job(job)
    assert caught.value.status == 409 and "succeeded" in caught.value.detail


def test_refusals_carry_the_problem_document(
    client: scratchnet.Client, moons: scratchnet.types.DatasetPublic
) -> None:
    with pytest.raises(scratchnet.InvalidRequest) as caught:
        client.submit_job(moons, learning_rate=-1.0, epochs=10)
    problem = caught.value
    assert problem.status == 422 and problem.type == PROBLEM + "validation-error"
    assert [issue.loc for issue in problem.errors] == [["body", "hyperparameters", "learning_rate"]]
    assert problem.response.headers["content-type"] == "application/problem+json"
    with pytest.raises(scratchnet.InvalidRequest) as caught:
        client.dataset_from_csv(b"x1,x2,label\n1,2,a\n1,nan,b\n")
    assert "line" in caught.value.detail
    with pytest.raises(scratchnet.InvalidRequest) as caught:
        client.predict(client.train(moons, QUICK, progress=False).model_id or "", [[1.0, 2.0, 3.0]])
    assert caught.value.errors[0].type == "wrong_dimension"


def test_a_failed_job_raises_training_failed_with_the_job(
    client: scratchnet.Client, moons: scratchnet.types.DatasetPublic
) -> None:
    with pytest.raises(scratchnet.TrainingFailed) as caught:
        client.train(moons, DIVERGING, progress=False)
    job = caught.value.resource
    assert isinstance(job, JobPublic) and job.status == "failed" and job.error is not None
    assert job.error.type == "diverged" and "learning rate" in str(caught.value)


def test_cancelling_a_running_job_ends_its_wait(
    client: scratchnet.Client, moons: scratchnet.types.DatasetPublic
) -> None:
    job = client.submit_job(moons, LONG)
    first = next(iter(client.follow(job)))  # the first recorded point: it is running
    assert isinstance(first, ProgressEvent) and first.job_id == job.id
    assert client.cancel_job(job).cancel_requested
    with pytest.raises(scratchnet.TrainingCancelled) as caught:
        client.wait(job, progress=False)
    assert caught.value.resource.status == "cancelled"


def test_an_idempotency_key_makes_a_retried_submission_the_same_job(
    client: scratchnet.Client, moons: scratchnet.types.DatasetPublic
) -> None:
    first = client.submit_job(moons, QUICK, idempotency_key="same-key-1")
    again = client.submit_job(moons, QUICK, idempotency_key="same-key-1")
    other = client.submit_job(moons, QUICK)
    assert again.id == first.id and other.id != first.id
    with pytest.raises(scratchnet.InvalidRequest):
        client.submit_job(moons, {**QUICK, "epochs": 61}, idempotency_key="same-key-1")
    for job in (first, other):
        client.wait(job, progress=False)


def test_sweeps(client: scratchnet.Client, moons: scratchnet.types.DatasetPublic) -> None:
    sweep = client.run_sweep(
        moons, {"hidden_layers": [(2,), (4,)]}, {"epochs": 60, "record_every": 20},
        baseline=True, progress=False,
    )  # fmt: skip
    assert sweep.status == "succeeded" and len(sweep.results) == 2 and sweep.baseline is not None
    assert sweep.best is not None and sweep.best.best and sweep.best_index == sweep.best.index
    assert [row.varied for row in sweep.results] == [{"hidden_layers": [2]}, {"hidden_layers": [4]}]
    events = list(client.follow_sweep(sweep))
    assert isinstance(events[-1], SweepPublic) and events[-1].id == sweep.id
    points = [e for e in events if isinstance(e, SweepPointEvent)]
    results = [e for e in events if isinstance(e, SweepResultEvent)]
    assert {(p.index, p.epoch) for p in points} >= {(0, 60), (1, 60), (None, 60)}
    assert sorted(r.index for r in results if r.index is not None) == [0, 1]
    assert client.get_sweep(sweep.id).results == sweep.results
    assert any(s.id == sweep.id for s in client.list_sweeps(status="succeeded").items)
    assert client.sweep_grid_picture(sweep, columns=2).startswith(PNG_SIGNATURE)
    assert client.sweep_curves_picture(sweep.id, log_scale=True).startswith(PNG_SIGNATURE)
    with pytest.raises(scratchnet.Conflict):
        client.cancel_sweep(sweep)
    long = client.create_sweep(moons, {"hidden_layers": [[64]]}, LONG)
    assert client.cancel_sweep(long).cancel_requested
    with pytest.raises(scratchnet.TrainingCancelled):
        client.wait_sweep(long.id, progress=False)


def test_an_unreachable_service_is_connection_failed() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with scratchnet.Client(url) as client, pytest.raises(scratchnet.ConnectionFailed):
        client.info()


def test_url_and_api_key_come_from_the_environment(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRATCHNET_URL", live_server.url)
    monkeypatch.setenv("SCRATCHNET_API_KEY", "k-123")
    seen: list[httpx.Request] = []
    with scratchnet.Client(event_hooks={"request": [seen.append]}) as client:
        assert client.info().ready
    assert client.url == live_server.url
    assert seen[0].headers["Authorization"] == "Bearer k-123"
    assert seen[0].headers["User-Agent"] == f"scratchnet/{scratchnet.__version__}"


@pytest.mark.anyio
async def test_async_client(
    live_server: LiveServer, moons: scratchnet.types.DatasetPublic, tmp_path: Path
) -> None:
    async with scratchnet.AsyncClient(live_server.url) as client:
        assert (await client.info()).workers == 2
        dataset = await client.get_dataset(moons.id)
        job = await client.train(dataset, QUICK, progress=False)
        events = [event async for event in client.follow(job)]
        assert [e.epoch for e in events if isinstance(e, ProgressEvent)] == [20, 40, 60]
        assert job.model_id is not None
        prediction = await client.predict(job.model_id, [[0.0, 0.5]])
        exported = await client.export_model(job.model_id)
        imported = await client.import_model(exported)
        assert await client.predict(imported, [[0.0, 0.5]]) == prediction
        assert (await client.set_alias(imported, "async-copy")).aliases == ["async-copy"]
        assert (await client.get_model("async-copy")).id == imported.id
        await client.delete_alias(imported, "async-copy")
        with pytest.raises(scratchnet.NotFound):
            await client.get_model("async-copy")
        assert (await client.decision_boundary(imported, tmp_path / "a.png")).startswith(
            PNG_SIGNATURE
        )
        with pytest.raises(scratchnet.TrainingFailed):
            await client.train(dataset, DIVERGING, progress=False)
        with pytest.raises(scratchnet.NotFound):
            await client.get_job("job_0000000000000000")
        sweep = await client.run_sweep(dataset, {"hidden_layers": [[2]]}, QUICK, progress=False)
        assert sweep.status == "succeeded"


# --- retries ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One worker and room for one waiting job, so a third job finds the queue full (429)."""
    with serve(tmp_path_factory.mktemp("full"), workers="1", max_queued_jobs="1") as server:
        yield server


def test_a_full_queue_is_retried_with_one_idempotency_key_then_raised(
    one_worker_server: LiveServer,
) -> None:
    posts: list[httpx.Request] = []
    record = lambda request: posts.append(request) if request.method == "POST" else None  # noqa: E731
    hooks = {"request": [record]}
    with scratchnet.Client(one_worker_server.url) as admin:
        dataset = admin.create_dataset("moons", n_samples=100)
        running = admin.submit_job(dataset, LONG)
        waiting = admin.submit_job(dataset, LONG)
        try:
            with (
                scratchnet.Client(
                    one_worker_server.url, max_retries=2, max_retry_wait=0.01, event_hooks=hooks
                ) as client,
                pytest.raises(scratchnet.TooManyRequests) as caught,
            ):
                client.submit_job(dataset, QUICK)
            assert caught.value.status == 429 and caught.value.type == PROBLEM + "queue-full"
            assert caught.value.retry_after is not None and caught.value.retry_after >= 1
            assert len(posts) == 3  # the first try and two retries
            keys = {request.headers["Idempotency-Key"] for request in posts}
            assert len(keys) == 1

            # a retry that finds room succeeds: free the queue while the client retries
            posts.clear()
            outcome: dict[str, Any] = {}
            with scratchnet.Client(
                one_worker_server.url, max_retries=1000, max_retry_wait=0.02, event_hooks=hooks
            ) as client:

                def submit() -> None:
                    outcome["job"] = client.submit_job(dataset, QUICK)

                thread = threading.Thread(target=submit)
                thread.start()
                while len(posts) < 3 and thread.is_alive():
                    thread.join(0.01)
                admin.cancel_job(waiting)
                thread.join(30)
            assert isinstance(outcome.get("job"), JobPublic) and len(posts) >= 3
            assert len({request.headers["Idempotency-Key"] for request in posts}) == 1
        finally:
            for job in (running, waiting):
                if not admin.get_job(job).finished:
                    admin.cancel_job(job)


# --- the progress bar ------------------------------------------------------------------------

TRAIN_SCRIPT = """
import sys, scratchnet
with scratchnet.Client(sys.argv[1]) as client:
    job = client.train(sys.argv[2], hidden_layers=[4], epochs=60, record_every=20)
print(job.status)
"""


def _train_in_subprocess(
    url: str, dataset_id: str, stderr: int
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TERM": "xterm"}
    env.pop("FORCE_COLOR", None)
    env.pop("TTY_COMPATIBLE", None)
    return subprocess.run(
        [sys.executable, "-c", TRAIN_SCRIPT, url, dataset_id],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        timeout=60,
        check=True,
    )


def test_no_progress_bar_when_not_a_terminal(
    live_server: LiveServer, moons: scratchnet.types.DatasetPublic
) -> None:
    result = _train_in_subprocess(live_server.url, moons.id, subprocess.PIPE)
    assert result.stdout.decode().strip() == "succeeded"
    assert result.stderr == b""


def test_a_progress_bar_in_a_terminal(
    live_server: LiveServer, moons: scratchnet.types.DatasetPublic
) -> None:
    controller, terminal = pty.openpty()
    try:
        result = _train_in_subprocess(live_server.url, moons.id, terminal)
        os.close(terminal)
        terminal = -1
        shown = io.BytesIO()
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal side is closed and drained
                break
            if not chunk:
                break
            shown.write(chunk)
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    assert result.stdout.decode().strip() == "succeeded"
    text = shown.getvalue().decode(errors="replace")
    assert "60/60" in text and "loss" in text, text


def test_responses_parse_as_the_documented_json(
    client: scratchnet.Client, moons: scratchnet.types.DatasetPublic
) -> None:
    """The typed objects round-trip to exactly the JSON the service sent."""
    raw = httpx.get(f"{client.url}/v1/datasets/{moons.id}").json()
    assert json.loads(client.get_dataset(moons.id).model_dump_json()) == raw


INTERRUPTED_SCRIPT = """
import sys, scratchnet
with scratchnet.Client(sys.argv[1]) as client:
    job = client.submit_job(sys.argv[2], hidden_layers=[64], epochs=1_000_000, record_every=100)
    print(job.id, flush=True)
    client.wait(job)
"""


def test_interrupting_a_wait_cancels_the_job(
    client: scratchnet.Client, moons: scratchnet.types.DatasetPublic
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_SCRIPT, client.url, moons.id],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        job_id = process.stdout.readline().strip()
        assert isinstance(next(iter(client.follow(job_id))), ProgressEvent)  # running
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0 and "KeyboardInterrupt" in err
    with pytest.raises(scratchnet.TrainingCancelled):
        client.wait(job_id, progress=False)
