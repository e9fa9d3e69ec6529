"""Sweep speed: the tutorial's sweep trained together against one configuration at a time.

    python -m benchmarks.sweep_bench                  the tutorial: 20000 epochs each
    python -m benchmarks.sweep_bench --epochs 2000    shorter
    python -m benchmarks.sweep_bench --skip-service   the engine only

The sweep: moons (200 points, noise 0.2, seed 0, the service's default 80/20 split,
standardized), hidden layers [1], [2], [3], [4], [5], [20], [50], tanh, full-batch SGD,
learning_rate 2.0, l2 0.01, float64. Measured in one run, side by side (wall seconds):

    singles   engine.training.train per configuration, one after another
    pack      engine.packed.train_many in this process: the planner's packs, one core
    shares    the configurations split by engine.packed.partition into 2 shares, each trained
              by train_many in its own process, both at once (timed from a common start)
    service   POST /v1/sweeps to an app with 2 workers, until the sweep has succeeded

Each is printed with its ratio to the singles' sum, in wall seconds and in CPU seconds: the
singles' CPU time against the busiest process's (a share's, or a worker's for the service) --
the wall ratio two otherwise idle cores would give. On a shared machine the wall ratios of the
parallel runs depend on what else runs; compare within one run. Also printed: the largest
relative difference between a packed configuration's final training loss and train's alone
(rounding differences grow where training is unstable, so they depend on the epoch count), and
for scale, train's own: the same runs with one input value moved by one ulp; last, the same
difference after SHORT_EPOCHS epochs, the length of the packed tests' runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from typing import Any

import numpy as np

from engine import datasets
from engine.hyperparameters import Hyperparameters
from engine.packed import DataShape, partition, train_many
from engine.training import train

HIDDEN_SIZES = [[1], [2], [3], [4], [5], [20], [50]]
BASE: dict[str, Any] = {
    "activation": "tanh",
    "optimizer": "sgd",
    "learning_rate": 2.0,
    "l2": 0.01,
    "dtype": "float64",
}

Split = datasets.Split
SHORT_EPOCHS = 60  # the packed tests' tutorial runs: packed matches alone to ~1e-12 there


def tutorial_split() -> Split:
    data = datasets.generate("moons", n_samples=200, noise=0.2, seed=0)
    return datasets.split(data, test_fraction=0.2, standardize=True, seed=0)


def configurations(epochs: int) -> list[Hyperparameters]:
    return [Hyperparameters(hidden_layers=h, epochs=epochs, **BASE) for h in HIDDEN_SIZES]


def run_singles(hps: list[Hyperparameters], split: Split) -> tuple[list[float], float, list[float]]:
    """(wall seconds each, CPU seconds in all, final training losses), trained alone one after
    another."""
    seconds, losses = [], []
    cpu_started = time.process_time()
    for hp in hps:
        started = time.perf_counter()
        result = train(hp, split.X_train, split.y_train, 2, split.X_test, split.y_test)
        seconds.append(time.perf_counter() - started)
        losses.append(float(result.metrics["train_loss"] or 0.0))
    return seconds, time.process_time() - cpu_started, losses


def run_pack(hps: list[Hyperparameters], split: Split) -> tuple[float, float, list[float]]:
    """(wall seconds, CPU seconds, final training losses) of train_many in this process."""
    started, cpu_started = time.perf_counter(), time.process_time()
    outcomes = train_many(hps, split.X_train, split.y_train, 2, split.X_test, split.y_test)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    losses = []
    for outcome in outcomes:
        assert outcome.result is not None, outcome.error
        losses.append(float(outcome.result.metrics["train_loss"] or 0.0))
    return seconds, cpu, losses


def _share_process(
    epochs: int, share: list[list[int]], ready: Barrier, results: Connection
) -> None:
    hps = configurations(epochs)
    split = tutorial_split()
    members = sorted(i for pack in share for i in pack)
    position = {index: p for p, index in enumerate(members)}
    packs = [[position[i] for i in pack] for pack in share]
    ready.wait()  # every share imported and prepared: start together
    cpu_started = time.process_time()
    train_many(
        [hps[i] for i in members],
        split.X_train,
        split.y_train,
        2,
        split.X_test,
        split.y_test,
        packs=packs,
    )
    results.send((time.perf_counter(), time.process_time() - cpu_started))


def run_shares(hps: list[Hyperparameters], split: Split, parts: int) -> tuple[float, float, str]:
    """(wall seconds for `parts` processes training their shares at once, the busiest one's
    CPU seconds, the shares)."""
    shape = DataShape(len(split.y_train), len(split.y_test), 2, 2)
    shares = partition(hps, shape, parts)
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(len(shares) + 1)
    pipes = [context.Pipe(duplex=False) for _ in shares]
    processes = [
        context.Process(target=_share_process, args=(hps[0].epochs, share, ready, sender))
        for share, (_receiver, sender) in zip(shares, pipes, strict=True)
    ]
    for process in processes:
        process.start()
    ready.wait()
    began = time.perf_counter()
    reports = [receiver.recv() for receiver, _sender in pipes]
    for process in processes:
        process.join()
    ended = max(when for when, _cpu in reports)
    busiest = max(cpu for _when, cpu in reports)
    described = " | ".join(
        " ".join(str([HIDDEN_SIZES[i][0] for i in pack]) for pack in share) for share in shares
    )
    return ended - began, busiest, described


def run_service(epochs: int) -> tuple[float, float]:
    """(wall seconds from POST /v1/sweeps until the sweep succeeded, on an app with 2 workers;
    the busiest worker's CPU seconds meanwhile)."""
    import anyio
    import psutil  # type: ignore[import-untyped]

    from service.settings import Settings
    from tests.api_support import running_app

    async def measure() -> tuple[float, float]:
        async with running_app(Settings(workers=2, log_level="warning")) as (client, app):
            created = await client.post(
                "/v1/datasets",
                json={"kind": "moons", "n_samples": 200, "noise": 0.2, "seed": 0},
            )
            body = {
                "dataset_id": created.json()["id"],
                "base": {**BASE, "epochs": epochs},
                "grid": {"hidden_layers": HIDDEN_SIZES},
            }
            pids = app.state.scratchnet.dispatcher.worker_pids()
            workers = [psutil.Process(pid) for pid in pids]
            before = [sum(w.cpu_times()[:2]) for w in workers]
            started = time.perf_counter()
            sweep_id = (await client.post("/v1/sweeps", json=body)).json()["id"]
            while True:
                sweep = (await client.get(f"/v1/sweeps/{sweep_id}")).json()
                if sweep["status"] != "queued" and sweep["status"] != "running":
                    break
                await anyio.sleep(0.05)
            seconds = time.perf_counter() - started
            busiest = max(
                sum(w.cpu_times()[:2]) - cpu for w, cpu in zip(workers, before, strict=True)
            )
            assert sweep["status"] == "succeeded", sweep
            return seconds, busiest

    return anyio.run(measure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20000)
    parser.add_argument("--skip-service", action="store_true")
    args = parser.parse_args()
    hps = configurations(args.epochs)
    split = tutorial_split()
    print(f"tutorial sweep: hidden sizes {[h[0] for h in HIDDEN_SIZES]}, {args.epochs} epochs")

    seconds, cpu_total, single_losses = run_singles(hps, split)
    total = sum(seconds)
    each = ", ".join(f"[{h[0]}] {s:.2f}" for h, s in zip(HIDDEN_SIZES, seconds, strict=True))
    print(f"{'':10}{'wall s':>8}{'ratio':>8}{'cpu s':>9}{'ratio':>8}")

    def line(label: str, wall: float, cpu: float, note: str) -> None:
        print(f"{label:10}{wall:8.2f}{wall / total:8.3f}{cpu:9.2f}{cpu / cpu_total:8.3f}   {note}")

    line("singles", total, cpu_total, f"({each})")
    pack_seconds, pack_cpu, pack_losses = run_pack(hps, split)
    line("pack", pack_seconds, pack_cpu, "(one process)")
    shares_seconds, shares_cpu, described = run_shares(hps, split, 2)
    line("shares", shares_seconds, shares_cpu, f"(2 processes: {described})")
    if not args.skip_service:
        service_seconds, service_cpu = run_service(args.epochs)
        line("service", service_seconds, service_cpu, "(POST /v1/sweeps until succeeded)")

    def worst(losses: list[float], reference: list[float] = single_losses) -> str:
        differences = [abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=True)]
        index = int(np.argmax(differences))
        return f"{differences[index]:.2e} ([{HIDDEN_SIZES[index][0]}])"

    nudged = datasets.Split(**{**vars(split), "X_train": split.X_train.copy()})
    nudged.X_train[0, 0] = np.nextafter(nudged.X_train[0, 0], np.inf)
    _seconds, _cpu, nudged_losses = run_singles(hps, nudged)
    print("largest relative difference of a final training loss from train's alone:")
    print(f"  packed                                  {worst(pack_losses)}")
    print(f"  train alone, one input value + 1 ulp    {worst(nudged_losses)}")
    short = configurations(SHORT_EPOCHS)
    _seconds, _cpu, short_singles = run_singles(short, split)
    _seconds, _cpu, short_pack = run_pack(short, split)
    label = f"packed, {SHORT_EPOCHS} epochs (the tests' runs)"
    print(f"  {label:40}{worst(short_pack, short_singles)}")


if __name__ == "__main__":
    main()
