"""The scratchnet package against the service it wraps, side by side in one run.

    python -m benchmarks.client_bench            every measurement, 5 repeats
    python -m benchmarks.client_bench --quick    1 repeat

1 fit       the tutorial (moons 200, [3] tanh, learning rate 2.0, l2 0.01, 20,000 epochs) as
            MLPClassifier.fit in this process, as MLPClassifier(server=…).fit (upload, job,
            export, download) and as Client.train, against engine.training.train alone
2 request   median of Client.get_job (typed JobPublic) against a bare httpx GET + .json() of
            the same job, on one connection
3 command   `scratchnet --help` (the console script: imports, Typer) against `python -c pass`

The service runs as a real `python -m service` with two workers (benchmarks.api_bench starts
it). Medians of the repeats; the machine's load moves absolute times, the ratios are the result.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sklearn.datasets import make_moons

import scratchnet
from benchmarks.api_bench import running_service
from engine.hyperparameters import Hyperparameters
from engine.training import train

TUTORIAL = {"hidden_layers": [3], "activation": "tanh", "optimizer": "sgd",
            "learning_rate": 2.0, "l2": 0.01, "epochs": 20000}  # fmt: skip
REQUESTS = 300
COMMAND = str(Path(sys.executable).with_name("scratchnet"))


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(name: str, seconds: float, reference: float) -> None:
    print(f"  {name:<44} {seconds * 1000:10.2f} ms   {seconds / reference:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    repeats = 1 if parser.parse_args().quick else 5
    X, y = make_moons(200, noise=0.2, random_state=0)
    estimator_options = {**TUTORIAL, "hidden_layers": (3,)}
    with running_service({"SCRATCHNET_LOG_LEVEL": "warning"}) as server:
        url = f"http://127.0.0.1:{server.port}"
        with scratchnet.Client(url) as client, httpx.Client(base_url=url) as bare:
            dataset = client.dataset_from_points(X, y, test_fraction=0, standardize=False)
            engine = median_seconds(lambda: train(Hyperparameters(**TUTORIAL), X, y, 2), repeats)
            print("1 fit: the tutorial, against engine.training.train")
            row("engine.training.train", engine, engine)
            here = median_seconds(
                lambda: scratchnet.MLPClassifier(**estimator_options).fit(X, y), repeats
            )
            row("MLPClassifier().fit", here, engine)
            there = median_seconds(
                lambda: scratchnet.MLPClassifier(**estimator_options, server=url).fit(X, y),
                repeats,
            )
            row("MLPClassifier(server=…).fit", there, engine)
            job = median_seconds(lambda: client.train(dataset, TUTORIAL, progress=False), repeats)
            row("Client.train (submit, follow the events)", job, engine)

            done = client.train(dataset, {**TUTORIAL, "epochs": 10}, progress=False)
            path = f"/v1/jobs/{done.id}"
            raw = median_seconds(lambda: [bare.get(path).json() for _ in range(REQUESTS)], 3)
            typed = median_seconds(lambda: [client.get_job(done) for _ in range(REQUESTS)], 3)
            print(f"2 request: GET {path}, one request")
            row("httpx get + .json()", raw / REQUESTS, raw / REQUESTS)
            row("Client.get_job -> JobPublic", typed / REQUESTS, raw / REQUESTS)

    python = median_seconds(lambda: subprocess.run([sys.executable, "-c", "pass"]), repeats)
    command = median_seconds(
        lambda: subprocess.run([COMMAND, "--help"], capture_output=True, check=True), repeats
    )
    print("3 command: start-up")
    row("python -c pass", python, python)
    row("scratchnet --help", command, python)


if __name__ == "__main__":
    main()
