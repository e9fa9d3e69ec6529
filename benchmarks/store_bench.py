"""The durable store against memory, side by side in one run: two real `python -m service`
processes, one with a data directory (SQLite) and one without, measured in alternation.

    python -m benchmarks.store_bench            every measurement
    python -m benchmarks.store_bench --quick    fewer rounds

1 tutorial  the tutorial's job (moons 200, [3] tanh, learning rate 2.0, l2 0.01, 20,000 epochs),
            POST -> succeeded (its event stream says so), the two in alternation (which goes
            first alternates); the median of the rounds' ratios; target: durable <= 1.10x memory
2 predict   requests/s of a one-point POST /v1/models/{id}/predict, 16 connections from two
            client processes, the model in the cache; target: durable >= 0.9x memory
3 start-up  opening a store with 1,000 models in a fresh process against an empty one: seconds
            and resident memory after opening; target: <= 2 s, within 50 MB of the empty one
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.api_bench import (
    PREDICT_BODY,
    Client,
    create_dataset,
    follow_job,
    python_load,
    running_service,
    submit_job,
)

TUTORIAL = {
    "hidden_layers": [3],
    "activation": "tanh",
    "optimizer": "sgd",
    "learning_rate": 2.0,
    "l2": 0.01,
    "epochs": 20_000,
}
STORED_MODELS = 1000

OPEN_STORE = """
import json, sys, time
started = time.perf_counter()
from service.state.sqlite_store import SQLiteStore
from pathlib import Path
imported = time.perf_counter()
store = SQLiteStore(Path(sys.argv[1]), 1 << 40, cache_bytes=1 << 28)
opened = time.perf_counter()
rss = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:'))
result = {"seconds": opened - imported, "rss_mib": rss / 1024, "models": len(store.models)}
print(json.dumps(result))
"""


def tutorial_seconds(client: Client, dataset_id: str) -> float:
    started = time.perf_counter()
    job_id = submit_job(client, dataset_id, TUTORIAL)
    follow_job(client.port, job_id, int(TUTORIAL["epochs"]))
    return time.perf_counter() - started


def fill(directory: Path, count: int) -> None:
    """`count` models (the tutorial's network) in a fresh store in `directory`."""
    from engine.datasets import generate, split
    from engine.hyperparameters import Hyperparameters
    from engine.training import train
    from service.state.records import ModelContent, ModelRecord, new_id, utc_now
    from service.state.sqlite_store import SQLiteStore

    data = generate("moons", n_samples=200, noise=0.2, seed=0)
    parts = split(data, test_fraction=0.2, standardize=True, seed=0)
    hp = Hyperparameters(**{**TUTORIAL, "epochs": 200})
    result = train(hp, parts.X_train, parts.y_train, 2, parts.X_test, parts.y_test)
    from engine.model import Model

    model = Model(result.weights, result.biases, hp.activation, data.classes, hp, parts.scaler)
    content = ModelContent(model, tuple(result.history))
    store = SQLiteStore(directory, 1 << 40, cache_bytes=0)
    for _ in range(count):
        record = ModelRecord.describe(content, id=new_id("mdl"), name="m", created_at=utc_now())
        store.models.add(record, content)
    store.close()


def open_store(directory: Path) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-c", OPEN_STORE, str(directory)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="store-bench-") as temporary:
        data_dir = Path(temporary) / "data"
        with (
            running_service({"SCRATCHNET_PICTURE_CACHE_SIZE": "0"}) as memory,
            running_service({"SCRATCHNET_DATA_DIR": str(data_dir)}) as durable,
        ):
            servers = {"memory": Client(memory.port), "durable": Client(durable.port)}
            datasets = {
                name: create_dataset(client, {"kind": "moons", "n_samples": 200, "noise": 0.2})
                for name, client in servers.items()
            }
            times: dict[str, list[float]] = {name: [] for name in servers}
            for round_ in range(2 * rounds):  # which goes first alternates
                for name in sorted(servers, reverse=round_ % 2 == 1):
                    times[name].append(tutorial_seconds(servers[name], datasets[name]))
            tutorial = {name: statistics.median(values) for name, values in times.items()}
            ratios = [d / m for d, m in zip(times["durable"], times["memory"], strict=True)]
            low, _median, high = statistics.quantiles(ratios, n=4)
            print(
                f"1 tutorial  memory {tutorial['memory']:.3f} s  durable "
                f"{tutorial['durable']:.3f} s  ratio {statistics.median(ratios):.3f} "
                f"({low:.3f}-{high:.3f}: the rounds' median and interquartile range)"
                "  (target <= 1.10)"
            )
            models = {
                name: client.json("GET", "/v1/models?limit=1")["items"][0]["id"]
                for name, client in servers.items()
            }
            rates: dict[str, list[float]] = {name: [] for name in servers}
            with ProcessPoolExecutor(2) as pool:
                for _ in range(rounds):
                    for name, client in servers.items():
                        path = f"/v1/models/{models[name]}/predict"
                        load = python_load(pool, client.port, "POST", path, PREDICT_BODY, 2)
                        assert load.failures == 0
                        rates[name].append(load.requests / load.seconds)
            rate = {name: statistics.median(values) for name, values in rates.items()}
            print(
                f"2 predict   memory {rate['memory']:.0f}/s  durable {rate['durable']:.0f}/s  "
                f"ratio {rate['durable'] / rate['memory']:.3f}  (target >= 0.9)"
            )
        empty, full = Path(temporary) / "empty", Path(temporary) / "full"
        empty.mkdir()
        full.mkdir()
        fill(empty, 0)
        fill(full, STORED_MODELS)
        opened = {"empty": [], "full": []}  # type: dict[str, list[dict[str, float]]]
        for _ in range(rounds):
            opened["empty"].append(open_store(empty))
            opened["full"].append(open_store(full))
        seconds = statistics.median(o["seconds"] for o in opened["full"])
        rss = {name: statistics.median(o["rss_mib"] for o in runs) for name, runs in opened.items()}
        print(
            f"3 start-up  {STORED_MODELS} models: open {seconds:.3f} s (target <= 2), "
            f"resident {rss['full']:.1f} MiB vs empty {rss['empty']:.1f} MiB: "
            f"+{rss['full'] - rss['empty']:.1f} MiB (target <= 50)"
        )


if __name__ == "__main__":
    main()
