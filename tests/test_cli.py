"""The `scratchnet` command through its console script against a real `python -m service`:
output, --json, the environment, and the documented exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import scratchnet
from scratchnet.cli import EXIT_NOT_SUCCEEDED, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from scratchnet.types import JobPublic, ProgressEvent
from tests.api_support import PNG_SIGNATURE, SERVER_START_SECONDS, LiveServer, free_port
from tests.client_support import COMMAND, LONG

pytestmark = pytest.mark.e2e


class Shell:
    """Runs `scratchnet ARGS` with SCRATCHNET_URL set, in a scratch directory."""

    def __init__(self, url: str, directory: Path) -> None:
        self.env = {**os.environ, "SCRATCHNET_URL": url}
        self.directory = directory

    def run(
        self, *args: str, code: int = 0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [COMMAND, *args],
            cwd=self.directory,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        return result

    def json(self, *args: str, code: int = 0, stdin: str | None = None) -> Any:
        return json.loads(self.run("--json", *args, code=code, stdin=stdin).stdout)


@pytest.fixture(scope="module")
def shell(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Shell:
    return Shell(live_server.url, tmp_path_factory.mktemp("shell"))


@pytest.fixture(scope="module")
def trained(shell: Shell) -> dict[str, Any]:
    """The tutorial's job, shortened: a dataset, then `train` with the issue's options."""
    dataset = shell.json("datasets", "create", "moons", "--samples", "200", "--noise", "0.2")
    assert dataset["kind"] == "moons" and dataset["n_samples"] == 200
    job: dict[str, Any] = shell.json(
        "train", dataset["id"], "--hidden", "3", "--activation", "tanh", "--optimizer", "sgd",
        "--epochs", "500", "--learning-rate", "2.0", "--l2", "0.01",
    )  # fmt: skip
    return job


def test_train_prints_the_finished_job_and_its_metrics(
    shell: Shell, trained: dict[str, Any]
) -> None:
    assert trained["status"] == "succeeded" and trained["metrics"]["train_accuracy"] > 0.8
    options = trained["hyperparameters"]
    assert (options["hidden_layers"], options["activation"], options["epochs"]) == (
        [3],
        "tanh",
        500,
    )
    assert (options["learning_rate"], options["l2"], options["optimizer"]) == (2.0, 0.01, "sgd")
    text = shell.run("jobs", "show", trained["id"]).stdout
    assert "status: succeeded" in text and f"model_id: {trained['model_id']}" in text
    summary = shell.run(
        "train", trained["dataset_id"], "--hidden", "3", "--epochs", "40", "--record-every", "20",
        "--baseline",
    )  # fmt: skip
    assert " succeeded in " in summary.stdout and "(40 epochs, completed)" in summary.stdout
    assert "baseline train" in summary.stdout and "model mdl_" in summary.stdout
    listed = shell.json("jobs", "list", "--status", "succeeded", "--limit", "500")
    assert trained["id"] in [job["id"] for job in listed["items"]]


def test_train_continues_a_model_and_takes_input_maps(
    shell: Shell, trained: dict[str, Any]
) -> None:
    job = shell.json(
        "train", trained["dataset_id"], "--init-model", trained["model_id"], "--epochs", "100"
    )
    assert job["status"] == "succeeded" and job["init_model_id"] == trained["model_id"]
    assert (job["initial_epoch"], job["epoch"]) == (500, 600)
    assert job["hyperparameters"] == {**trained["hyperparameters"], "epochs": 100}
    model = shell.json("models", "show", job["model_id"])
    assert model["continued_from"] == trained["model_id"]
    refused = shell.run(
        "train", trained["dataset_id"], "--init-model", trained["model_id"], "--hidden", "5",
        code=EXIT_REFUSED,
    )  # fmt: skip
    assert "keeps the model's architecture" in refused.stderr
    mapped = shell.json(
        "train", trained["dataset_id"], "--hidden", "[]", "--input-features", "identity,square",
        "--epochs", "20",
    )  # fmt: skip
    assert mapped["hyperparameters"]["input_features"] == ["identity", "square"]


def test_predict_picture_export_import(shell: Shell, trained: dict[str, Any]) -> None:
    model_id = trained["model_id"]
    (shell.directory / "points.csv").write_text("x1,x2\n0.0,0.5\n1.0,-0.5\n")
    lines = shell.run("predict", model_id, "points.csv").stdout.splitlines()
    assert lines[0] == "class,p_0,p_1" and len(lines) == 3
    prediction = shell.json("predict", model_id, "-", stdin="0.0,0.5\n1.0,-0.5\n")  # no header
    assert [line.split(",")[0] for line in lines[1:]] == [str(c) for c in prediction["classes"]]

    shell.run("picture", model_id, "-o", "boundary.png")
    assert (shell.directory / "boundary.png").read_bytes().startswith(PNG_SIGNATURE)

    shell.run("export", model_id, "-o", "model.npz")
    imported = shell.json("import", "model.npz", "--name", "copy")
    assert imported["name"] == "copy" and imported["architecture"] == [2, 3, 2]
    aliased = shell.json("models", "alias", imported["id"], "cli-copy")
    assert aliased["id"] == imported["id"] and aliased["aliases"] == ["cli-copy"]
    assert shell.json("models", "show", "cli-copy")["id"] == imported["id"]
    assert shell.json("predict", "cli-copy", "points.csv") == prediction  # the same weights
    shell.run("models", "unalias", imported["id"], "cli-copy")
    assert (
        "no alias 'cli-copy'"
        in shell.run("models", "unalias", imported["id"], "cli-copy", code=3).stderr
    )
    shell.run("models", "delete", imported["id"])
    with (
        scratchnet.Client(shell.env["SCRATCHNET_URL"]) as client,
        pytest.raises(scratchnet.NotFound),
    ):
        client.get_model(imported["id"])


def test_sweep_and_csv_upload(shell: Shell) -> None:
    rows = "".join(f"{x},{y},{'ab'[(x > 0) == (y > 0)]}\n" for x in (-2, -1, 1, 2) for y in (-1, 1))
    (shell.directory / "xor.csv").write_text("x1,x2,label\n" + rows * 2)
    dataset = shell.json("datasets", "upload", "xor.csv", "--test-fraction", "0.25")
    assert dataset["n_samples"] == 16 and dataset["classes"] == ["a", "b"]
    sweep = shell.json(
        "sweep", dataset["id"], "--grid", "hidden_layers=[[2],[4]]", "--epochs", "60",
        "--record-every", "20",
    )  # fmt: skip
    assert sweep["status"] == "succeeded" and len(sweep["results"]) == 2
    assert dataset["id"] in [
        item["id"] for item in shell.json("datasets", "list", "--limit", "500")["items"]
    ]
    shell.run("datasets", "delete", dataset["id"])
    with (
        scratchnet.Client(shell.env["SCRATCHNET_URL"]) as client,
        pytest.raises(scratchnet.NotFound),
    ):
        client.get_dataset(dataset["id"])


def test_exit_codes(shell: Shell, trained: dict[str, Any], tmp_path: Path) -> None:
    dataset_id = trained["dataset_id"]
    refused = shell.run("train", dataset_id, "--learning-rate", "-1", code=EXIT_REFUSED)
    assert "learning_rate" in refused.stderr
    shell.run("jobs", "cancel", trained["id"], code=EXIT_REFUSED)  # finished: 409
    failed = shell.run(
        "train", dataset_id, "--optimizer", "sgd", "--learning-rate", "1000", "--epochs", "200",
        code=EXIT_NOT_SUCCEEDED,
    )  # fmt: skip
    assert "diverged" in failed.stderr
    unknown = shell.run("train", dataset_id, "--alpha", "0.1", code=EXIT_USAGE)
    assert "--learning-rate" in unknown.stderr  # the message lists the real options
    offline = Shell(f"http://127.0.0.1:{free_port()}", tmp_path)
    assert "cannot reach" in offline.run("info", code=EXIT_UNAVAILABLE).stderr


def test_url_option_and_follow(
    shell: Shell, live_server: LiveServer, trained: dict[str, Any]
) -> None:
    other = Shell("http://127.0.0.1:1", shell.directory)  # wrong in the environment
    info = other.json("--url", live_server.url, "info")
    assert info["ready"] is True
    lines = shell.run("--json", "jobs", "follow", trained["id"]).stdout.splitlines()
    events = [json.loads(line) for line in lines if line.startswith('{"epoch"')]
    assert [event["epoch"] for event in events] == list(range(10, 501, 10))


def test_help_lists_the_exit_codes_and_shell_completion_completes() -> None:
    result = subprocess.run([COMMAND, "--help"], capture_output=True, text=True, check=True)
    assert "Exit codes" in result.stdout and "--install-completion" in result.stdout
    # what bash's completion function asks the command (click's completion protocol)
    env = {**os.environ, "_SCRATCHNET_COMPLETE": "complete_bash", "COMP_WORDS": "scratchnet da",
           "COMP_CWORD": "1"}  # fmt: skip
    completed = subprocess.run([COMMAND], env=env, capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["datasets"]


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def test_serve_runs_the_service_and_its_shutdown_ends_event_streams(tmp_path: Path) -> None:
    """`scratchnet serve` is the service; when it stops it ends its event streams, and a
    client following one reconnects (max_retries times), finds nobody and says so instead of
    waiting forever."""
    port = free_port()
    env = {**os.environ, "SCRATCHNET_WORKERS": "1"}
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [COMMAND, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not ready(url):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        info = Shell(url, tmp_path).json("info")
        assert info["workers"] == 1 and info["ready"] is True

        with scratchnet.Client(url, max_retries=1) as client:
            job = client.submit_job(client.create_dataset("moons"), LONG)
            events = client.follow(job)
            assert isinstance(next(events), ProgressEvent)  # it is running
            process.send_signal(signal.SIGTERM)
            try:
                rest = list(events)
            except scratchnet.ConnectionFailed as exc:
                assert "ended" in str(exc)
            else:  # the cancelled job's final event won the race with the stream's end
                assert isinstance(rest[-1], JobPublic) and rest[-1].status == "cancelled"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    output = (tmp_path / "serve.log").read_text()
    assert "Application shutdown complete." in output and "Traceback" not in output
