"""The Dask executor against the local pool, through a real `python -m service` over HTTP.

    python -m benchmarks.dask_bench                  the 64-configuration sweep, 2,000 epochs
    python -m benchmarks.dask_bench --epochs 500     shorter
    python -m benchmarks.dask_bench --skip-sweep     the latency only

sweep    POST /v1/sweeps until it succeeded: hidden sizes [2] .. [48] x learning rates
         0.02 .. 1.0 (8 x 8 = 64 configurations), tanh, full-batch SGD, l2 0.001, on moons
         (2,000 points, noise 0.2, seed 0, the default 80/20 split). The service splits the
         configurations into as many shares as it has training workers: on the local pool
         with 1 and 2 worker processes, and on a Dask cluster (`dask scheduler` and `dask
         worker --nthreads 1 --resources train=1` on 127.0.0.1) with 1 and 2 worker processes.
         Printed: wall seconds, the busiest worker's CPU seconds (the wall time two otherwise
         idle cores would give), and the ratios of 1 worker to 2.
latency  1-epoch jobs on moons (200 points), one after another: POST /v1/jobs until its event
         stream's status event says succeeded; median and 90th percentile on each executor
         with 2 workers, and what Dask adds to the median.

On a shared machine the wall ratios depend on what else runs; compare within one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil

from benchmarks.api_bench import Client, create_dataset, follow_job, running_service, submit_job
from tests.dask_support import DaskCluster

GRID: dict[str, list[Any]] = {
    "hidden_layers": [[2], [4], [8], [12], [16], [24], [32], [48]],
    "learning_rate": [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0],
}
BASE: dict[str, Any] = {"activation": "tanh", "optimizer": "sgd", "l2": 0.001}
SWEEP_DATA: dict[str, Any] = {"kind": "moons", "n_samples": 2000, "noise": 0.2, "seed": 0}
LATENCY_DATA: dict[str, Any] = {"kind": "moons", "n_samples": 200, "seed": 0}
LATENCY_JOB: dict[str, Any] = {"hidden_layers": [4], "epochs": 1}
LATENCY_WARMUP = 5
SWEEP_SECONDS = 1800.0


@contextmanager
def service_on(workers: int, executor: str) -> Iterator[Client]:
    """A service training on `workers` local processes ("local") or Dask worker processes."""
    env = {"SCRATCHNET_WORKERS": str(workers), "SCRATCHNET_LOG_LEVEL": "warning"}
    with tempfile.TemporaryDirectory(prefix="dask-bench-") as directory:
        cluster = None
        if executor == "dask":
            cluster = DaskCluster(Path(directory))
            cluster.start_scheduler()
            cluster.add_workers(workers)
            cluster.wait_for_workers(workers)
            env["SCRATCHNET_EXECUTOR"] = cluster.address
        try:
            with running_service(env) as server:
                client = Client(server.port, timeout=SWEEP_SECONDS)
                try:
                    yield client
                finally:
                    client.close()
        finally:
            if cluster is not None:
                cluster.stop()


def worker_cpu(pids: list[int]) -> list[float]:
    seconds = []
    for pid in pids:
        with suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            seconds.append(times.user + times.system)
    return seconds


def run_sweep(workers: int, executor: str, epochs: int) -> tuple[float, float]:
    """(wall seconds from POST /v1/sweeps to succeeded, the busiest worker's CPU seconds)."""
    with service_on(workers, executor) as client:
        dataset_id = create_dataset(client, SWEEP_DATA)
        pids: list[int] = client.json("GET", "/v1/info")["worker_pids"]
        before = worker_cpu(pids)
        body = {"dataset_id": dataset_id, "base": {**BASE, "epochs": epochs}, "grid": GRID}
        started = time.perf_counter()
        sweep_id = client.json("POST", "/v1/sweeps", body, expect=202)["id"]
        while True:
            sweep = client.json("GET", f"/v1/sweeps/{sweep_id}")
            if sweep["status"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if sweep["status"] != "succeeded":
            raise RuntimeError(f"the sweep ended {sweep['status']}")
        used = [after - was for after, was in zip(worker_cpu(pids), before, strict=True)]
        return seconds, max(used)


def job_latencies(executor: str, count: int) -> list[float]:
    """Seconds from POST /v1/jobs to the succeeded status event, per 1-epoch job."""
    with service_on(2, executor) as client:
        dataset_id = create_dataset(client, LATENCY_DATA)
        seconds = []
        for number in range(LATENCY_WARMUP + count):
            started = time.perf_counter()
            job_id = submit_job(client, dataset_id, LATENCY_JOB)
            follow_job(client.port, job_id, LATENCY_JOB["epochs"])
            if number >= LATENCY_WARMUP:
                seconds.append(time.perf_counter() - started)
        return sorted(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=40, help="latency jobs per executor")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()
    print(f"{psutil.cpu_count()} cores; load average {psutil.getloadavg()[0]:.2f} at start")

    if not args.skip_sweep:
        print(f"\nsweep: 64 configurations, moons 2,000 points, {args.epochs} epochs")
        results: dict[tuple[str, int], tuple[float, float]] = {}
        for executor in ("local", "dask"):
            for workers in (1, 2):
                wall, cpu = run_sweep(workers, executor, args.epochs)
                results[executor, workers] = (wall, cpu)
                print(
                    f"  {executor:5} {workers} worker{'s' if workers > 1 else ' '}  "
                    f"wall {wall:7.2f} s   busiest worker CPU {cpu:7.2f} s"
                )
        for executor in ("local", "dask"):
            (wall1, cpu1), (wall2, cpu2) = results[executor, 1], results[executor, 2]
            print(
                f"  {executor:5} speed-up 1 -> 2 workers: wall {wall1 / wall2:.2f}x, "
                f"busiest-worker CPU {cpu1 / cpu2:.2f}x"
            )
        local2, dask2 = results["local", 2][0], results["dask", 2][0]
        print(f"  dask / local, 2 workers: wall {dask2 / local2:.2f}x")

    print(f"\nlatency: {args.jobs} jobs of 1 epoch each, POST to succeeded, one at a time")
    medians = {}
    for executor in ("local", "dask"):
        seconds = job_latencies(executor, args.jobs)
        medians[executor] = seconds[len(seconds) // 2]
        p90 = seconds[int(0.9 * (len(seconds) - 1))]
        print(
            f"  {executor:5} median {1000 * medians[executor]:6.1f} ms   p90 {1000 * p90:6.1f} ms"
        )
    added, ratio = medians["dask"] - medians["local"], medians["dask"] / medians["local"]
    print(f"  Dask adds {1000 * added:.1f} ms a job (median), {ratio:.2f}x")


if __name__ == "__main__":
    main()
