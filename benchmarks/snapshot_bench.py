"""What parameter snapshots cost the tutorial job, side by side in one run.

    python -m benchmarks.snapshot_bench          (make bench-snapshots)

The tutorial job (moons 200, noise 0.2, [3] tanh, gradient descent, learning rate 2.0, l2 0.01,
20,000 epochs) submitted to a real app (its lifespan, one worker process, its logs at warning as
a deployment's would be) with snapshots off and with several `snapshot_every` values, each round
in a fresh random order so that the machine's load drifts over all of them alike. Each value's
cost is printed as a ratio to the job without snapshots, twice: the job's wall-clock time (its
elapsed_seconds) and the CPU time it took (the worker process's and the service process's,
submit to succeeded; the service's polls are the same for every value), each the median of the
rounds' ratios with their interquartile range. Once with the memory store and once with SQLite
(each job's kept snapshots written to the database).

On a shared two-core machine one job's CPU time moves by ±20% from round to round, so a ratio
of a few percent is within the spread of any affordable number of rounds. What pins it down is
the slope: `snapshot_every: 10` takes ten times the snapshots of the default (2,000 against
200), so its extra CPU per snapshot, measured in place, times the default's 200 is the default's
cost with a tenth of the noise (snapshots' cost is linear in their count: each is one copy, one
share of a progress message and one bounded thinning). Then the engine alone: `train` with and
without the `on_snapshot` callback; and what one snapshot costs on its way, in CPU microseconds,
which a busy machine does not blur.
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import httpx
import psutil  # type: ignore[import-untyped]

from benchmarks.store_bench import TUTORIAL
from engine.datasets import generate
from engine.hyperparameters import Hyperparameters
from engine.training import ParameterSnapshot, train
from service import logs
from service.settings import Settings
from service.state.records import keep_snapshot
from service.state.sqlite_store import encode_snapshot
from tests.api_support import running_app

EVERY: tuple[int | None, ...] = (None, 100, 10)
DEFAULT = 100  # the value whose cost the issue bounds; 10 gives its slope


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


async def _job_seconds(
    client: httpx.AsyncClient, dataset_id: str, every: int | None, processes: list[psutil.Process]
) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one tutorial job."""
    body = {"dataset_id": dataset_id, "hyperparameters": {**TUTORIAL, "snapshot_every": every}}
    cpu = _cpu_seconds(processes)
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    while True:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] == "succeeded":
            return float(job["elapsed_seconds"]), _cpu_seconds(processes) - cpu
        assert job["status"] in ("queued", "running"), job
        await anyio.sleep(0.02)  # a poll costs the service ~1 ms: 5% of a core at most


Costs = dict[int | None, list[tuple[float, float]]]  # value -> (wall, CPU) seconds per round


async def _service(rounds: int, data_dir: Path | None) -> Costs:
    settings = Settings(workers=1, data_dir=data_dir, rate_limit="100000/s", log_level="warning")
    logs.configure(settings.log_format, settings.log_level)  # as `python -m service` does
    times: Costs = {every: [] for every in EVERY}
    shuffle = random.Random(0).shuffle
    async with running_app(settings) as (client, app):
        dispatcher = app.state.scratchnet.dispatcher
        response = await client.post(
            "/v1/datasets", json={"kind": "moons", "n_samples": 200, "noise": 0.2}
        )
        dataset_id = response.json()["id"]
        pids = [psutil.Process(), *map(psutil.Process, dispatcher.executor.worker_pids())]
        await _job_seconds(client, dataset_id, None, pids)  # warm-up
        for _round in range(rounds):
            order = list(EVERY)
            shuffle(order)
            for every in order:
                times[every].append(await _job_seconds(client, dataset_id, every, pids))
    return times


def _ratios(values: list[float], base: list[float]) -> list[float]:
    """Each round's value over the same round's base."""
    return [value / reference for value, reference in zip(values, base, strict=True)]


def _ratio(values: list[float], base: list[float]) -> float:
    """The median over rounds of a round's value over the same round's base."""
    return statistics.median(_ratios(values, base))


def _spread(values: list[float], base: list[float]) -> str:
    """The median ratio and its interquartile range, as `x1.012 (0.951-1.083)`."""
    ratios = _ratios(values, base)
    low, _median, high = statistics.quantiles(ratios, n=4)
    return f"x{statistics.median(ratios):.3f} ({low:.3f}-{high:.3f})"


def _taken(every: int) -> int:
    """Snapshots the tutorial job takes (with record_every dividing every: the multiples)."""
    return int(TUTORIAL["epochs"]) // every


def _engine_seconds() -> float:
    """CPU seconds of the tutorial job in the engine alone."""
    data = generate("moons", n_samples=200, noise=0.2, seed=0)
    started = time.process_time()
    train(Hyperparameters(**TUTORIAL, snapshot_every=None), data.X, data.y, 2)
    return time.process_time() - started


def _engine(rounds: int) -> str:
    """The engine alone: CPU time of `train` with the callback over without, paired rounds
    (which goes first alternates)."""
    data = generate("moons", n_samples=200, noise=0.2, seed=0)
    hp = Hyperparameters(**TUTORIAL, snapshot_every=100)
    callbacks = {"without": None, "with": lambda snapshot: None}
    seconds: dict[str, list[float]] = {name: [] for name in callbacks}
    for round_ in range(rounds):
        for name in sorted(callbacks, reverse=round_ % 2 == 1):
            started = time.process_time()
            train(hp, data.X, data.y, 2, on_snapshot=callbacks[name])
            seconds[name].append(time.process_time() - started)
    return _spread(seconds["with"], seconds["without"])


def _per_snapshot(repeats: int = 20_000) -> tuple[float, float, float]:
    """CPU microseconds one tutorial snapshot costs on its way: in the worker (the copy and its
    share of a progress message's pickling) and in the service (unpickling and keeping it on
    the record, thinning included), as the 200 snapshots of the tutorial job at
    snapshot_every=100 travel (a few per message)."""
    data = generate("moons", n_samples=200, noise=0.2, seed=0)
    hp = Hyperparameters(**{**TUTORIAL, "epochs": 10, "snapshot_every": 10})
    taken: list[ParameterSnapshot] = []
    train(hp, data.X, data.y, 2, on_snapshot=taken.append)
    weights, biases = taken[-1].weights, taken[-1].biases
    started = time.process_time()
    blobs = []
    for index in range(repeats):
        snapshot = ParameterSnapshot(
            index, index + 1, [w.copy() for w in weights], [b.copy() for b in biases]
        )
        blobs.append(pickle.dumps([snapshot], protocol=pickle.HIGHEST_PROTOCOL))
    worker = (time.process_time() - started) / repeats
    kept: list[ParameterSnapshot] = []
    started = time.process_time()
    for blob in blobs:
        for item in pickle.loads(blob):
            keep_snapshot(kept, item)
    service = (time.process_time() - started) / repeats
    started = time.process_time()
    for snapshot in kept * (repeats // len(kept)):
        encode_snapshot(snapshot)
    sqlite = (time.process_time() - started) / (len(kept) * (repeats // len(kept)))
    return worker * 1e6, service * 1e6, sqlite * 1e6


def _slope(cpus: dict[int | None, list[float]], taken: int) -> float:
    """CPU seconds per snapshot: the median over rounds of snapshot_every=10's extra CPU over
    the same round's job without snapshots, divided by the snapshots it took."""
    return statistics.median(
        (cpu - off) / taken for cpu, off in zip(cpus[10], cpus[None], strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    rounds = parser.parse_args().rounds
    worker, service, sqlite = _per_snapshot()
    kept: list[ParameterSnapshot] = []
    for index in range(_taken(DEFAULT)):
        keep_snapshot(kept, ParameterSnapshot(index, DEFAULT * (index + 1), [], []))
    for name in ("memory", "sqlite"):
        with tempfile.TemporaryDirectory() as directory:
            data_dir = Path(directory) if name == "sqlite" else None
            times = anyio.run(_service, rounds, data_dir)
        walls = {every: [wall for wall, _cpu in values] for every, values in times.items()}
        cpus = {every: [cpu for _wall, cpu in values] for every, values in times.items()}
        print(
            f"tutorial job, {name} store, {rounds} rounds (median; ratio: median of the rounds' "
            "and their interquartile range)"
        )
        for every in EVERY:
            label = "off" if every is None else f"snapshot_every={every}"
            print(
                f"  {label:<20} {statistics.median(walls[every]):6.3f} s "
                f"{_spread(walls[every], walls[None])}   "
                f"{statistics.median(cpus[every]):6.3f} s CPU {_spread(cpus[every], cpus[None])}"
            )
        slope = _slope(cpus, _taken(10))
        # what a job pays once, whatever it took: SQLite writes the kept snapshots as it ends
        once = len(kept) * sqlite / 1e6 if name == "sqlite" else 0.0
        cost = _taken(DEFAULT) * slope + once
        print(
            f"  slope: {1e6 * slope:.1f} us CPU per snapshot in place (snapshot_every=10's "
            f"{_taken(10)} over off); the default's {_taken(DEFAULT)}"
            + (f" and its {len(kept)} kept written once" if once else "")
            + f": x{1 + cost / statistics.median(cpus[None]):.3f} of the job's CPU"
        )
    print(f"engine alone, snapshot_every=100, CPU: {_engine(rounds)} with the callback")
    job = _engine_seconds()
    share = _taken(DEFAULT) * (worker + service) / 1e6 / job
    print(
        f"one snapshot: {worker:.1f} us CPU in the worker, {service:.1f} us in the service "
        f"(+{sqlite:.1f} us for its .npz with SQLite); the tutorial job's {_taken(DEFAULT)} "
        f"(snapshot_every={DEFAULT}) add {100 * share:.2f}% to its {job:.2f} s, "
        f"{100 * (share + len(kept) * sqlite / 1e6 / job):.2f}% with SQLite (which writes the "
        f"{len(kept)} kept once, as the job finishes)"
    )


if __name__ == "__main__":
    main()
