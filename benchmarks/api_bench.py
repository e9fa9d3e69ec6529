"""The service under load, against a real `python -m service` process, side by side in one run.

    python -m benchmarks.api_bench                   every measurement
    python -m benchmarks.api_bench --only predict    one of: predict latency parallel png tutorial
    python -m benchmarks.api_bench --quick           shorter runs, one repeat
    python -m benchmarks.api_bench --server-env SCRATCHNET_LOG_LEVEL=warning   try a setting
    python -m benchmarks.api_bench --load-generator python   the fallback client, even with wrk
    python -m benchmarks.api_bench --wait-quiet 120   on a shared machine, start each
                                                      measurement in a quiet moment

The benchmark starts the service itself (two training workers, on a free port; the picture
cache is turned off with SCRATCHNET_PICTURE_CACHE_SIZE=0 so every picture request renders) and
stops it at the end.

1 predict   requests/s of POST /v1/models/{id}/predict with one point against GET /healthz, 16
            concurrent connections (wrk when installed, else a multi-process Python client);
            target: predict >= 0.5x healthz
2 latency   p50/p99 of GET /v1/jobs/{id} while two long training jobs keep both workers busy
            (and, for comparison, with the workers idle); target: p99 <= 50 ms
3 parallel  POST -> succeeded (the job's event stream says so) of two identical jobs started
            together against one alone; target: <= 1.3x
4 png       median GET /v1/models/{id}/decision-boundary.png (640x480, 200x200 grid) against a
            bare matplotlib render of the same grid here (Figure + Agg, imshow, savefig);
            target: <= 1.5x
5 tutorial  the tutorial's job, POST -> succeeded (event stream; --follow poll polls every
            10 ms instead, which costs the service 1-2 ms of CPU a poll), against
            engine.training.train on the same data here; target: <= 1.1x

Besides wall-clock times it reads CPU times (service process, worker processes, this process
and its children, the whole machine), so a report shows what the service itself spent and how
much of the machine other processes took meanwhile: on a shared machine the wall-clock ratios
of CPU-bound work (3, 5) mostly measure the latter.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.hyperparameters import Hyperparameters
from engine.model import Model
from engine.training import train
from service.api import dataset_requests as dataset_builders
from service.api.schemas import DatasetCreate
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SERVER_START_SECONDS = 90.0
JOB_SECONDS = 600.0
POLL_SECONDS = 0.01
CONNECTIONS = 16
MEASUREMENTS = ("predict", "latency", "parallel", "png", "tutorial")
FOLLOWING = {
    "events": "waiting on the job's event stream",
    "poll": f"polling GET /v1/jobs/{{id}} every {POLL_SECONDS * 1e3:.0f} ms",
}

PREDICT_BODY = json.dumps({"points": [[0.5, 0.25]]})
# wrk sends this POST on every connection; the path comes from the URL on the command line
PREDICT_LUA = f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{PREDICT_BODY}'
"""

TUTORIAL_DATASET: dict[str, Any] = {
    "kind": "moons",
    "n_samples": 200,
    "noise": 0.2,
    "seed": 0,
    "test_fraction": 0,
}
TUTORIAL_JOB: dict[str, Any] = {
    "hidden_layers": [3],
    "activation": "tanh",
    "optimizer": "sgd",
    "learning_rate": 2.0,
    "l2": 0.01,
    "epochs": 20000,
    "dtype": "float64",
}
# The model drawn by the picture measurement (and predicted with): small and quick to train.
PICTURE_JOB: dict[str, Any] = {"hidden_layers": [8], "epochs": 300, "learning_rate": 0.5}


# -- the server and a small keep-alive client ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Client:
    """One keep-alive HTTP/1.1 connection; JSON in, (status, parsed body or bytes) out."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.connection.request(method, path, body=payload, headers=headers)
            response = self.connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # the server closed the idle connection (keep-alive timeout): reconnect once
            self.connection.close()
            self.connection.request(method, path, body=payload, headers=headers)
            response = self.connection.getresponse()
        return response.status, response.read()

    def json(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, content = self.request(method, path, body)
        if status != expect:
            raise RuntimeError(f"{method} {path} answered {status}, not {expect}: {content!r}")
        return json.loads(content)

    def close(self) -> None:
        self.connection.close()


@dataclass(frozen=True)
class Usage:
    """Seconds of wall time and of CPU: the service process, its worker processes, this process
    (with the children it reaped: wrk, load-generator processes) and the whole machine."""

    wall: float
    server: float
    workers: float
    bench: float
    machine: float

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.wall - other.wall,
            self.server - other.server,
            self.workers - other.workers,
            self.bench - other.bench,
            self.machine - other.machine,
        )

    @property
    def others(self) -> float:
        """CPU seconds used by every other process on the machine meanwhile."""
        return max(0.0, self.machine - self.server - self.workers - self.bench)

    def describe(self) -> str:
        return (
            f"CPU over {self.wall:.1f} s: service {self.server:.2f} s, workers "
            f"{self.workers:.2f} s, benchmark {self.bench:.2f} s, other processes "
            f"{self.others:.2f} s ({self.others / self.wall:.2f} of {psutil.cpu_count()} cores)"
        )


def _cpu(times: Any) -> float:
    return float(times.user + times.system)


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def usage(self) -> Usage:
        service = psutil.Process(self.process.pid)
        service_tree = {self.process.pid}
        workers = 0.0
        for child in service.children(recursive=True):
            service_tree.add(child.pid)
            with suppress(psutil.NoSuchProcess):
                workers += _cpu(child.cpu_times())
        me = psutil.Process()
        own = me.cpu_times()
        bench = _cpu(own) + own.children_user + own.children_system  # + reaped children
        for child in me.children(recursive=True):  # live ones: load-generator processes
            if child.pid not in service_tree:
                with suppress(psutil.NoSuchProcess):
                    bench += _cpu(child.cpu_times())
        machine = psutil.cpu_times()
        busy = _cpu(machine) + machine.nice + machine.irq + machine.softirq
        return Usage(time.perf_counter(), _cpu(service.cpu_times()), workers, bench, busy)


@contextmanager
def running_service(env_overrides: dict[str, str]) -> Iterator[Server]:
    """`python -m service` on a free port with two workers; waits for /readyz, stops it after."""
    port = free_port()
    env = {
        **os.environ,
        "SCRATCHNET_WORKERS": "2",
        # the load generators send thousands of requests a second from one address: the rate
        # limit (its cost per request stays in the numbers) must not be what they measure
        "SCRATCHNET_RATE_LIMIT": "1000000/s",
        "SCRATCHNET_RATE_LIMIT_BURST": "1000000",
        **env_overrides,
    }
    with tempfile.TemporaryDirectory(prefix="api-bench-") as directory:
        log_path = Path(directory) / "service.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "service", "--host", HOST, "--port", str(port)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(port, process, log_path)
        try:
            _wait_ready(server)
            yield server
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the service exited while starting:\n{server.log_tail()}")
        try:
            client = Client(server.port, timeout=2.0)
            status, _ = client.request("GET", "/readyz")
            client.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the service was not ready in {SERVER_START_SECONDS} s:\n{server.log_tail()}"
    )


def create_dataset(client: Client, body: dict[str, Any]) -> str:
    dataset_id: str = client.json("POST", "/v1/datasets", body, expect=201)["id"]
    return dataset_id


def submit_job(client: Client, dataset_id: str, hyperparameters: dict[str, Any]) -> str:
    body = {"dataset_id": dataset_id, "hyperparameters": hyperparameters}
    job_id: str = client.json("POST", "/v1/jobs", body, expect=202)["id"]
    return job_id


def wait_job(
    client: Client, job_id: str, statuses: tuple[str, ...] = ("succeeded",)
) -> dict[str, Any]:
    """Poll every POLL_SECONDS until the job is in `statuses` (any other end is an error)."""
    deadline = time.monotonic() + JOB_SECONDS
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.json("GET", f"/v1/jobs/{job_id}")
        if job["status"] in statuses:
            return job
        if job["status"] in ("succeeded", "failed", "cancelled"):
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"job {job_id} did not reach {statuses} in {JOB_SECONDS} s")


def follow_job(port: int, job_id: str, after_epoch: int) -> dict[str, Any]:
    """The job's final state, read from its event stream as soon as it ends. `since` skips the
    progress events up to `after_epoch` (all of them when it is the job's epochs), so the
    service sends one event and spends next to nothing on the waiting client."""
    connection = http.client.HTTPConnection(HOST, port, timeout=JOB_SECONDS)
    try:
        connection.request("GET", f"/v1/jobs/{job_id}/events?since={after_epoch}")
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"events of {job_id}: {response.status} {response.read()!r}")
        event = ""
        while line := response.readline():
            text = line.decode().rstrip("\r\n")
            if text.startswith("event:"):
                event = text.partition(":")[2].strip()
            elif text.startswith("data:") and event == "status":
                job: dict[str, Any] = json.loads(text.partition(":")[2])
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
                return job
        raise RuntimeError(f"the event stream of {job_id} ended without a status event")
    finally:
        connection.close()


def timed_jobs(
    client: Client, dataset_id: str, hyperparameters: dict[str, Any], count: int, follow: str
) -> tuple[float, list[dict[str, Any]]]:
    """Seconds from the first POST until all `count` identical jobs succeeded, and the jobs.

    `follow`: "events" waits on each job's event stream, "poll" polls every POLL_SECONDS.
    """
    started = time.perf_counter()
    job_ids = [submit_job(client, dataset_id, hyperparameters) for _ in range(count)]
    if follow == "poll":
        jobs = [wait_job(client, job_id) for job_id in job_ids]
    else:
        epochs = int(hyperparameters["epochs"])
        jobs = [follow_job(client.port, job_id, epochs) for job_id in job_ids]
    return time.perf_counter() - started, jobs


# -- results -----------------------------------------------------------------------------------


@dataclass
class Row:
    measurement: str
    service: float
    reference: float
    unit: str
    target: str
    met: bool
    note: str = ""
    others_cores: float = 0.0  # cores other processes kept busy during the measurement

    @property
    def ratio(self) -> float:
        return self.service / self.reference if self.reference else math.inf


def report(row: Row) -> Row:
    print(
        f"  -> {row.measurement}: {row.service:.4g} {row.unit} vs {row.reference:.4g} {row.unit}"
        f" = {row.ratio:.3f}x; target {row.target}: {'met' if row.met else 'MISSED'}",
        flush=True,
    )
    return row


def percentile(values: list[float], fraction: float) -> float:
    return float(np.percentile(np.asarray(values), 100 * fraction))


# -- 1. predict against healthz ----------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    failures: int
    server_cpu: float = 0.0  # CPU seconds the service process spent meanwhile

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def __add__(self, other: LoadResult) -> LoadResult:
        return LoadResult(
            self.requests + other.requests,
            self.seconds + other.seconds,
            self.failures + other.failures,
            self.server_cpu + other.server_cpu,
        )


WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b")
WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_load(url: str, seconds: int, script: Path | None) -> LoadResult:
    # one wrk thread drives 16 connections easily and leaves the second core to the server
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    total = WRK_TOTAL.search(output)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    failures = 0
    if non_2xx := WRK_NON_2XX.search(output):
        failures += int(non_2xx.group(1))
    if socket_errors := WRK_SOCKET_ERRORS.search(output):
        failures += sum(int(count) for count in socket_errors.groups())
    duration = float(total.group(2)) * UNIT_SECONDS[total.group(3)]
    return LoadResult(int(total.group(1)), duration, failures)


def _python_load_process(
    port: int, method: str, path: str, body: bytes | None, threads: int, seconds: float
) -> tuple[int, int]:
    """`threads` keep-alive connections sending one request over and over: (ok, failed)."""
    counts = [[0, 0] for _ in range(threads)]
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"} if body is not None else {}

    def hammer(slot: list[int]) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        while time.perf_counter() < deadline:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            slot[0 if response.status == 200 else 1] += 1
        connection.close()

    workers = [threading.Thread(target=hammer, args=(slot,)) for slot in counts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(slot[0] for slot in counts), sum(slot[1] for slot in counts)


def python_load(
    pool: ProcessPoolExecutor, port: int, method: str, path: str, body: bytes | None, seconds: int
) -> LoadResult:
    processes = 2
    started = time.perf_counter()
    futures = [
        pool.submit(
            _python_load_process, port, method, path, body, CONNECTIONS // processes, seconds
        )
        for _ in range(processes)
    ]
    results = [future.result() for future in futures]
    elapsed = time.perf_counter() - started
    return LoadResult(sum(ok for ok, _ in results), elapsed, sum(bad for _, bad in results))


def measure_predict(
    server: Server, client: Client, model_id: str, quick: bool, generator_choice: str
) -> Row:
    rounds, seconds = (2, 2) if quick else (5, 2)
    predict_path = f"/v1/models/{model_id}/predict"
    status, content = client.request("POST", predict_path, json.loads(PREDICT_BODY))
    assert status == 200, content
    base = f"http://{HOST}:{server.port}"
    with tempfile.TemporaryDirectory(prefix="api-bench-") as directory:
        script = Path(directory) / "predict.lua"
        script.write_text(PREDICT_LUA)
        has_wrk = shutil.which("wrk") is not None
        if generator_choice == "wrk" and not has_wrk:
            raise RuntimeError("wrk is not installed: apt-get install wrk")
        use_wrk = has_wrk and generator_choice != "python"
        pool = None if use_wrk else ProcessPoolExecutor(2)
        if use_wrk:
            generator = f"wrk (1 thread, {CONNECTIONS} connections)"
        else:
            why = "as asked" if has_wrk else "wrk is not installed: apt-get install wrk"
            generator = (
                f"Python client (2 processes x {CONNECTIONS // 2} keep-alive connections; {why})"
            )

        def load(name: str, secs: int) -> LoadResult:
            predicting = name == "predict"
            path = predict_path if predicting else "/healthz"
            if pool is None:
                return wrk_load(f"{base}{path}", secs, script if predicting else None)
            method, body = ("POST", PREDICT_BODY.encode()) if predicting else ("GET", None)
            return python_load(pool, server.port, method, path, body, secs)

        try:
            load("healthz", 1)  # warm-up
            load("predict", 1)
            totals = {"healthz": LoadResult(0, 0.0, 0), "predict": LoadResult(0, 0.0, 0)}
            round_ratios = []
            last_healthz = LoadResult(0, 1.0, 0)
            before = server.usage()
            for _ in range(rounds):  # alternate, so drift in machine load hits both alike
                for name in ("healthz", "predict"):
                    start = server.usage()
                    result = load(name, seconds)
                    result.server_cpu = (server.usage() - start).server
                    totals[name] = totals[name] + result
                    if name == "predict":
                        round_ratios.append(result.rps / last_healthz.rps)
                    last_healthz = result
            spent = server.usage() - before
        finally:
            if pool is not None:
                pool.shutdown()
    healthz, predict = totals["healthz"], totals["predict"]
    print(f"  load generator: {generator}; {rounds} alternating rounds of {seconds} s each")
    for name, result in totals.items():
        print(
            f"  {name:8} {result.rps:8.0f} requests/s ({result.requests} in "
            f"{result.seconds:.1f} s, {result.failures} failed); service CPU "
            f"{result.server_cpu / result.requests * 1e3:.3f} ms per request"
        )
    print(f"  predict/healthz by round: {', '.join(f'{r:.2f}' for r in round_ratios)}")
    print(f"  {spent.describe()}")
    cpu_ratio = (healthz.server_cpu / healthz.requests) / (predict.server_cpu / predict.requests)
    failures = healthz.failures + predict.failures
    return report(
        Row(
            "1 predict vs healthz",
            predict.rps,
            healthz.rps,
            "req/s",
            "predict >= 0.50x healthz",
            predict.rps >= 0.5 * healthz.rps and failures == 0,
            f"predict {predict.rps:.0f} req/s, healthz {healthz.rps:.0f} req/s ({generator}; "
            f"{failures} failed); CPU-bound estimate (healthz over predict service CPU per "
            f"request): {cpu_ratio:.2f}x",
        )
    )


# -- 2. latency under training load ------------------------------------------------------------


def latencies(client: Client, path: str, count: int) -> list[float]:
    """Seconds per request of `count` sequential GETs on one keep-alive connection."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        status, content = client.request("GET", path)
        times.append(time.perf_counter() - started)
        assert status == 200, content
    return times


def measure_latency(server: Server, client: Client, quick: bool) -> Row:
    count = 300 if quick else 1000
    dataset_id = create_dataset(client, {"kind": "moons", "n_samples": 20_000, "seed": 1})
    long_job = {"hidden_layers": [64], "epochs": 10_000}
    probe_id = submit_job(client, dataset_id, {"hidden_layers": [4], "epochs": 10})
    wait_job(client, probe_id)
    probe = f"/v1/jobs/{probe_id}"
    latencies(client, probe, 50)  # warm-up
    idle = latencies(client, probe, count)
    job_ids = [submit_job(client, dataset_id, long_job) for _ in range(2)]
    try:
        for job_id in job_ids:  # both workers busy before measuring
            running = wait_job(client, job_id, ("running",))
            while running["epoch"] == 0:
                time.sleep(0.05)
                running = client.json("GET", f"/v1/jobs/{job_id}")
        start = server.usage()
        busy = latencies(client, f"/v1/jobs/{job_ids[0]}", count)
        spent = server.usage() - start
        still_running = all(
            client.json("GET", f"/v1/jobs/{job_id}")["status"] == "running" for job_id in job_ids
        )
    finally:
        for job_id in job_ids:
            client.request("POST", f"/v1/jobs/{job_id}/cancel")
        for job_id in job_ids:
            wait_job(client, job_id, ("cancelled",))
    idle_p50, idle_p99 = percentile(idle, 0.5) * 1e3, percentile(idle, 0.99) * 1e3
    busy_p50, busy_p99 = percentile(busy, 0.5) * 1e3, percentile(busy, 0.99) * 1e3
    print(f"  {count} sequential GET /v1/jobs/{{id}} on one keep-alive connection")
    print(f"  workers idle:                     p50 {idle_p50:6.2f} ms  p99 {idle_p99:6.2f} ms")
    print(
        f"  2 jobs training (n=16,000, [64]): p50 {busy_p50:6.2f} ms  p99 {busy_p99:6.2f} ms  "
        f"max {max(busy) * 1e3:.1f} ms; both still running at the end: {still_running}"
    )
    print(f"  {spent.describe()}")
    return report(
        Row(
            "2 GET job p99, 2 jobs training",
            busy_p99,
            idle_p99,
            "ms",
            "p99 <= 50 ms",
            busy_p99 <= 50.0 and still_running,
            f"busy p50 {busy_p50:.2f} ms, p99 {busy_p99:.2f} ms; idle p50 {idle_p50:.2f} ms, "
            f"p99 {idle_p99:.2f} ms (the reference column)",
        )
    )


# -- 3. two jobs in parallel -------------------------------------------------------------------


def overlap(jobs: list[dict[str, Any]]) -> float:
    """How much of the longer job's run (started_at -> finished_at) the jobs shared."""
    spans = [
        (datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["finished_at"]))
        for job in jobs
    ]
    shared = (min(end for _, end in spans) - max(start for start, _ in spans)).total_seconds()
    longest = max((end - start).total_seconds() for start, end in spans)
    return max(0.0, shared) / longest if longest > 0 else 1.0


def measure_parallel(server: Server, client: Client, quick: bool, follow: str) -> Row:
    repeats = 1 if quick else 3
    dataset_id = create_dataset(
        client, {"kind": "moons", "n_samples": 2000, "seed": 2, "test_fraction": 0}
    )
    job = {"hidden_layers": [32], "epochs": 400 if quick else 1000}
    timed_jobs(client, dataset_id, {**job, "epochs": 50}, 2, follow)  # warm both workers
    singles: list[float] = []
    pairs: list[float] = []
    single_usage: list[Usage] = []
    pair_usage: list[Usage] = []
    overlaps: list[float] = []
    for _ in range(repeats):  # alternate, so drift in machine load hits both alike
        for count, times, usages in ((1, singles, single_usage), (2, pairs, pair_usage)):
            start = server.usage()
            seconds, jobs = timed_jobs(client, dataset_id, job, count, follow)
            usages.append(server.usage() - start)
            times.append(seconds)
            if count == 2:
                overlaps.append(overlap(jobs))
    single, pair = statistics.median(singles), statistics.median(pairs)
    single_cpu = statistics.median(u.workers for u in single_usage)
    pair_cpu = statistics.median(u.workers for u in pair_usage) / 2
    print(f"  moons n=2000, [32], {job['epochs']} epochs full batch; median of {repeats}")
    print(
        f"  one alone {single:.3f} s ({single_cpu:.2f} s worker CPU); two together {pair:.3f} s "
        f"({pair_cpu:.2f} s worker CPU each); the pair's jobs ran at the same time for "
        f"{statistics.median(overlaps):.0%} of the longer one's run"
    )
    print(f"  one alone: {single_usage[-1].describe()}")
    print(f"  two together: {pair_usage[-1].describe()}")
    return report(
        Row(
            "3 two jobs vs one",
            pair,
            single,
            "s",
            "pair <= 1.30x single",
            pair <= 1.3 * single,
            f"single {single:.3f} s, pair {pair:.3f} s (POST to succeeded); worker CPU per job "
            f"{single_cpu:.2f} s alone, {pair_cpu:.2f} s in the pair",
        )
    )


# -- 4. decision-boundary picture --------------------------------------------------------------


def bare_render(model: Model, X: np.ndarray, resolution: int) -> bytes:
    """The same grid's probabilities drawn with imshow on a 640x480 Figure, saved as PNG."""
    low, high = X.min(axis=0), X.max(axis=0)
    pad = 0.1 * (high - low)
    xs = np.linspace(low[0] - pad[0], high[0] + pad[0], resolution)
    ys = np.linspace(low[1] - pad[1], high[1] + pad[1], resolution)
    xx, yy = np.meshgrid(xs, ys)  # (resolution, resolution)
    proba = model.predict_proba(np.column_stack([xx.ravel(), yy.ravel()]))  # (resolution², 2)
    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.imshow(
        proba[:, 1].reshape(resolution, resolution),
        origin="lower",
        extent=(xs[0], xs[-1], ys[0], ys[-1]),
        aspect="auto",
        cmap="RdBu",
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def local_model(dataset: dict[str, Any], hyperparameters: dict[str, Any]) -> tuple[Model, Any]:
    """The service's model trained again in this process (training is seeded: same weights),
    and the dataset content (points and split) it trained on."""
    _record, content = dataset_builders.build(DatasetCreate.model_validate(dataset), Settings())
    hp = Hyperparameters.model_validate(hyperparameters)
    split = content.split
    result = train(hp, split.X_train, split.y_train, content.dataset.n_classes)
    model = Model(
        weights=list(result.weights),
        biases=list(result.biases),
        activation=hp.activation,
        classes=content.dataset.classes,
        hyperparameters=hp,
        scaler=split.scaler,
        feature_names=content.dataset.feature_names,
    )
    return model, content


def measure_png(
    server: Server, client: Client, model_id: str, dataset: dict[str, Any], quick: bool
) -> Row:
    repeats = 5 if quick else 15
    path = f"/v1/models/{model_id}/decision-boundary.png?width=640&height=480&resolution=200"
    model, content = local_model(dataset, PICTURE_JOB)
    X = content.dataset.X  # (n_samples, 2) raw

    def served() -> bytes:
        status, content = client.request("GET", path)
        assert status == 200 and content.startswith(b"\x89PNG"), (status, content[:200])
        return content

    served()
    bare_render(model, X, 200)  # warm-up: fonts, caches
    server_times, bare_times, server_cpu, bare_cpu = [], [], [], []
    for _ in range(repeats):  # alternate, so drift in machine load hits both alike
        start = server.usage()
        server_png = served()
        spent = server.usage() - start
        server_times.append(spent.wall)
        server_cpu.append(spent.server)
        started, cpu_started = time.perf_counter(), time.process_time()
        bare_png = bare_render(model, X, 200)
        bare_times.append(time.perf_counter() - started)
        bare_cpu.append(time.process_time() - cpu_started)
    served_median, bare = statistics.median(server_times), statistics.median(bare_times)
    print(
        f"  service (picture cache off): median {served_median * 1e3:.1f} ms, CPU "
        f"{statistics.median(server_cpu) * 1e3:.1f} ms, {len(server_png) / 1024:.0f} KiB; bare "
        f"imshow + savefig: {bare * 1e3:.1f} ms, CPU {statistics.median(bare_cpu) * 1e3:.1f} ms, "
        f"{len(bare_png) / 1024:.0f} KiB; {repeats} each"
    )
    return report(
        Row(
            "4 decision-boundary PNG",
            served_median,
            bare,
            "s",
            "<= 1.50x bare render",
            served_median <= 1.5 * bare,
            f"service {served_median * 1e3:.1f} ms, bare matplotlib {bare * 1e3:.1f} ms",
        )
    )


# -- 5. the tutorial's job ---------------------------------------------------------------------


def measure_tutorial(server: Server, client: Client, quick: bool, follow: str) -> Row:
    repeats = 1 if quick else 3
    hyperparameters = {**TUTORIAL_JOB, "epochs": 5000 if quick else 20000}
    dataset_id = create_dataset(client, TUTORIAL_DATASET)
    _record, content = dataset_builders.build(
        DatasetCreate.model_validate(TUTORIAL_DATASET), Settings()
    )
    split = content.split
    hp = Hyperparameters.model_validate(hyperparameters)

    def in_process() -> dict[str, float | None]:
        return train(hp, split.X_train, split.y_train, content.dataset.n_classes).final_metrics()

    timed_jobs(client, dataset_id, {**hyperparameters, "epochs": 100}, 1, follow)  # warm-up
    in_process()
    service_times, local_times, training_times = [], [], []
    service_usage, local_cpu = [], []
    service_metrics: dict[str, Any] = {}
    local_metrics: dict[str, float | None] = {}
    for _ in range(repeats):  # alternate, so drift in machine load hits both alike
        start = server.usage()
        seconds, jobs = timed_jobs(client, dataset_id, hyperparameters, 1, follow)
        service_usage.append(server.usage() - start)
        service_times.append(seconds)
        training_times.append(jobs[0]["elapsed_seconds"])
        service_metrics = jobs[0]["metrics"]
        started, cpu_started = time.perf_counter(), time.process_time()
        local_metrics = in_process()
        local_times.append(time.perf_counter() - started)
        local_cpu.append(time.process_time() - cpu_started)
    service, local = statistics.median(service_times), statistics.median(local_times)
    same = service_metrics["train_loss"] == local_metrics["train_loss"]
    print(
        f"  moons 200, [3] tanh, sgd full batch, lr 2.0, l2 0.01, {hyperparameters['epochs']} "
        f"epochs; median of {repeats}"
    )
    print(
        f"  service: POST -> succeeded {service:.3f} s (started -> finished "
        f"{statistics.median(training_times):.3f} s), worker CPU "
        f"{statistics.median(u.workers for u in service_usage):.3f} s, service CPU "
        f"{statistics.median(u.server for u in service_usage):.3f} s ({FOLLOWING[follow]})"
    )
    print(f"  in process: {local:.3f} s, CPU {statistics.median(local_cpu):.3f} s")
    print(f"  service run: {service_usage[-1].describe()}")
    print(
        f"  final train loss: service {service_metrics['train_loss']!r}, in process "
        f"{local_metrics['train_loss']!r} ({'identical' if same else 'DIFFERENT'})"
    )
    return report(
        Row(
            "5 tutorial job overhead",
            service,
            local,
            "s",
            "<= 1.10x in process",
            service <= 1.1 * local,
            f"service {service:.3f} s, engine.training.train {local:.3f} s; same loss: {same}",
        )
    )


# -- main --------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'measurement':<32} {'service':>10} {'reference':>10} {'unit':<6} {'ratio':>7}  "
        f"{'target':<26} {'met':<4} {'others':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.measurement:<32} {row.service:>10.4g} {row.reference:>10.4g} {row.unit:<6} "
            f"{row.ratio:>7.3f}  {row.target:<26} {'yes' if row.met else 'NO':<4} "
            f"{row.others_cores:>6.2f}"
        )
        if row.note:
            print(f"{'':<4}{row.note}")
    print(
        f"others: cores of the machine's {psutil.cpu_count()} that other processes kept busy "
        "meanwhile; above ~0.3 they starve the workers and wall-clock ratios of CPU-bound "
        "work (3, 5) mostly measure that"
    )


def wait_quiet(server: Server, seconds: float, limit_cores: float = 0.25) -> None:
    """Wait up to `seconds` for a second in which other processes use under `limit_cores`."""
    deadline = time.perf_counter() + seconds
    while True:
        start = server.usage()
        time.sleep(1.0)
        spent = server.usage() - start
        busy = spent.others / spent.wall
        if busy < limit_cores:
            return
        if time.perf_counter() > deadline:
            print(f"  (the machine stayed busy: other processes use {busy:.2f} cores)")
            return


def run(
    chosen: list[str],
    quick: bool,
    server_env: dict[str, str],
    generator: str,
    follow: str,
    quiet_seconds: float,
) -> list[Row]:
    rows: list[Row] = []
    env = {"SCRATCHNET_PICTURE_CACHE_SIZE": "0", **server_env}
    with running_service(env) as server:
        extra = " ".join(f"{key}={value}" for key, value in env.items())
        print(f"service pid {server.process.pid} on port {server.port}, 2 workers, {extra}")
        print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        client = Client(server.port)
        try:
            model_id = ""
            if "predict" in chosen or "png" in chosen:
                dataset_id = create_dataset(client, TUTORIAL_DATASET)
                job_id = submit_job(client, dataset_id, PICTURE_JOB)
                model_id = wait_job(client, job_id)["model_id"]
            steps: dict[str, Callable[[], Row]] = {
                "predict": lambda: measure_predict(server, client, model_id, quick, generator),
                "latency": lambda: measure_latency(server, client, quick),
                "parallel": lambda: measure_parallel(server, client, quick, follow),
                "png": lambda: measure_png(server, client, model_id, TUTORIAL_DATASET, quick),
                "tutorial": lambda: measure_tutorial(server, client, quick, follow),
            }
            for name in chosen:
                print(f"[{name}]", flush=True)
                if quiet_seconds > 0:
                    wait_quiet(server, quiet_seconds)
                start = server.usage()
                row = steps[name]()
                spent = server.usage() - start
                row.others_cores = spent.others / spent.wall
                rows.append(row)
                print(f"  ({spent.wall:.0f} s)", flush=True)
        except Exception:
            print(f"service log (last lines):\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="scratchnet service benchmark")
    parser.add_argument("--only", action="append", choices=MEASUREMENTS)
    parser.add_argument("--quick", action="store_true", help="shorter runs, one repeat")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the service (e.g. SCRATCHNET_LOG_LEVEL=warning)",
    )
    parser.add_argument(
        "--load-generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="for predict: wrk when installed (auto), or the multi-process Python client",
    )
    parser.add_argument(
        "--follow",
        choices=list(FOLLOWING),
        default="events",
        help="how parallel and tutorial wait for a job to end: its event stream (default), "
        f"or polling every {POLL_SECONDS * 1e3:.0f} ms",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measurement, wait up to this long for other processes to leave the "
        "machine nearly idle (a shared machine)",
    )
    args = parser.parse_args()
    chosen = [name for name in MEASUREMENTS if name in (args.only or MEASUREMENTS)]
    server_env = dict(item.split("=", 1) for item in args.server_env)
    rows = run(chosen, args.quick, server_env, args.load_generator, args.follow, args.wait_quiet)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
