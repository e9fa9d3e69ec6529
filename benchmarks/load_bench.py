"""Load and soak against a real `python -m service` with API keys, in one run.

    python -m benchmarks.load_bench                       50 clients for 120 s, then the soak
    python -m benchmarks.load_bench --clients 20 --seconds 30 --renders 200 --cycles 50

load  `--clients` concurrent clients, each with its own key among five, for `--seconds`: a mix
      of one-point predictions, job polling, history reads, decision-boundary pictures, job
      submissions (a small job, cancelled or finished) and event-stream followers. Reports per
      route the request count and p50/p95/p99 latency; counts 5xx and transport errors (target:
      zero of each) and 429s apart (the quota and rate limit answering as designed).
soak  `--renders` decision-boundary renders (the picture cache off) and `--cycles` cycles of
      create dataset, train, delete model and dataset: resident memory after a warm-up tenth
      against the end (target: grows < 50 MB), threads and open files (target: flat).

`tests/test_soak.py` runs a small soak in `make test`; this is the full one, on demand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.api_support import LiveServer, serve

KEYS = {f"user{i}": f"user{i}-key-{os.urandom(12).hex()}" for i in range(5)}
SMALL_JOB = {"hidden_layers": [8], "epochs": 300, "record_every": 50}


@contextmanager
def server(directory: Path, **settings: str) -> Iterator[LiveServer]:
    keys = ",".join(f"{name}:{key}" for name, key in KEYS.items())
    with serve(directory, api_keys=keys, **settings) as live:
        yield live


class Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[int, int] = defaultdict(int)
        self.transport_errors = 0

    async def call(
        self, client: httpx.AsyncClient, route: str, method: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TransportError:
            self.transport_errors += 1
            return None
        self.latencies[route].append(time.perf_counter() - started)
        self.statuses[response.status_code] += 1
        return response


async def prepare(url: str) -> dict[str, dict[str, str]]:
    """Per key: a dataset and a trained model."""
    ready: dict[str, dict[str, str]] = {}
    for name, key in KEYS.items():
        async with httpx.AsyncClient(
            base_url=url, headers={"X-API-Key": key}, timeout=60
        ) as client:
            dataset = (await client.post("/v1/datasets", json={"kind": "moons"})).json()
            job = (
                await client.post(
                    "/v1/jobs", json={"dataset_id": dataset["id"], "hyperparameters": SMALL_JOB}
                )
            ).json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                await asyncio.sleep(0.05)
                job = (await client.get(f"/v1/jobs/{job['id']}")).json()
            ready[name] = {"dataset": dataset["id"], "job": job["id"], "model": job["model_id"]}
    return ready


async def one_client(
    url: str, key: str, mine: dict[str, str], until: float, recorder: Recorder, seed: int
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        while time.monotonic() < until:
            choice = rng.random()
            model, job = mine["model"], mine["job"]
            if choice < 0.40:
                body = {"points": [[rng.uniform(-1, 2), rng.uniform(-1, 1)]]}
                await recorder.call(
                    client, "predict", "POST", f"/v1/models/{model}/predict", json=body
                )
            elif choice < 0.65:
                await recorder.call(client, "job", "GET", f"/v1/jobs/{job}")
            elif choice < 0.80:
                await recorder.call(client, "history", "GET", f"/v1/jobs/{job}/history")
            elif choice < 0.88:
                size = rng.choice([200, 240, 280])
                await recorder.call(
                    client,
                    "picture",
                    "GET",
                    f"/v1/models/{model}/decision-boundary.png?width={size}&height={size}&resolution=60",
                )
            elif choice < 0.95:
                body = {"dataset_id": mine["dataset"], "hyperparameters": SMALL_JOB}
                created = await recorder.call(client, "submit", "POST", "/v1/jobs", json=body)
                if created is not None and created.status_code == 202 and rng.random() < 0.5:
                    new = created.json()["id"]
                    await recorder.call(client, "cancel", "POST", f"/v1/jobs/{new}/cancel")
            else:
                started = time.perf_counter()
                try:
                    async with client.stream("GET", f"/v1/jobs/{job}/events") as stream:
                        async for _line in stream.aiter_lines():
                            pass
                        recorder.statuses[stream.status_code] += 1
                    recorder.latencies["events"].append(time.perf_counter() - started)
                except httpx.TransportError:
                    recorder.transport_errors += 1


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def load(url: str, clients: int, seconds: float) -> Recorder:
    ready = await prepare(url)
    names = list(KEYS)
    recorder = Recorder()
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(
            one_client(url, KEYS[names[i % 5]], ready[names[i % 5]], until, recorder, i)
            for i in range(clients)
        )
    )
    return recorder


def resources(pid: int) -> tuple[float, int, int]:
    process = psutil.Process(pid)
    return process.memory_info().rss / 2**20, process.num_threads(), process.num_fds()


Resources = tuple[float, int, int]  # resident MiB, threads, open files


async def soak(
    url: str, pid: int, renders: int, cycles: int
) -> list[tuple[str, Resources, Resources]]:
    """(what, resources after a warm-up tenth, resources at the end) for the renders and for
    the train-and-delete cycles."""
    key = next(iter(KEYS.values()))
    measured = []
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        ready = (await prepare(url))[next(iter(KEYS))]
        picture = f"/v1/models/{ready['model']}/decision-boundary.png?resolution=100"
        warm = max(1, renders // 10)
        for i in range(renders):
            if i == warm:
                before = resources(pid)
            assert (await client.get(picture)).status_code == 200
        measured.append((f"{renders} renders", before, resources(pid)))
        warm = max(1, cycles // 10)
        for i in range(cycles):
            if i == warm:
                before = resources(pid)
            dataset = (await client.post("/v1/datasets", json={"kind": "moons"})).json()
            job = (
                await client.post(
                    "/v1/jobs", json={"dataset_id": dataset["id"], "hyperparameters": SMALL_JOB}
                )
            ).json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                await asyncio.sleep(0.02)
                job = (await client.get(f"/v1/jobs/{job['id']}")).json()
            assert (await client.delete(f"/v1/models/{job['model_id']}")).status_code == 204
            assert (await client.delete(f"/v1/datasets/{dataset['id']}")).status_code == 204
        measured.append((f"{cycles} train-and-delete cycles", before, resources(pid)))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--renders", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="load-bench-") as directory:
        with server(Path(directory), max_active_jobs_per_key="4") as live:
            recorder = asyncio.run(load(live.url, args.clients, args.seconds))
            total = sum(recorder.statuses.values())
            errors = sum(n for status, n in recorder.statuses.items() if status >= 500)
            print(
                f"load: {args.clients} clients, {args.seconds:g} s, {total} requests "
                f"({total / args.seconds:.0f}/s): 5xx {errors}, transport errors "
                f"{recorder.transport_errors}, 429 {recorder.statuses.get(429, 0)}"
            )
            print(f"{'route':10} {'count':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
            for route, values in sorted(recorder.latencies.items()):
                print(
                    f"{route:10} {len(values):7d} {1000 * statistics.median(values):8.1f} "
                    f"{1000 * percentile(values, 0.95):8.1f} "
                    f"{1000 * percentile(values, 0.99):8.1f}"
                )
        with server(Path(directory), picture_cache_size="0") as live:
            for what, before, after in asyncio.run(
                soak(live.url, live.process.pid, args.renders, args.cycles)
            ):
                print(
                    f"soak, {what}: RSS {before[0]:.1f} -> {after[0]:.1f} MiB "
                    f"(+{after[0] - before[0]:.1f}, target < 50), threads {before[1]} -> "
                    f"{after[1]}, open files {before[2]} -> {after[2]}"
                )


if __name__ == "__main__":
    main()
