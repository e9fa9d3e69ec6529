"""A real Dask cluster for tests and benchmarks: `dask scheduler` and `dask worker` processes
on 127.0.0.1, started with the commands README gives operators."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psutil

from tests.api_support import REPO, free_port

CLUSTER_START_SECONDS = 60.0
DASK = str(Path(sys.executable).with_name("dask"))
SCHEDULER_ENV = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}


class DaskCluster:
    """A scheduler process and `dask worker` processes (each a nanny with its worker
    processes); `address` is the scheduler's."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.worker_groups: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}-{len(self.worker_groups)}.log"
        with log.open("wb") as sink:
            return subprocess.Popen(
                [DASK, *args],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO), **env},
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the test run is for pytest
            )

    def start_scheduler(self, env: Mapping[str, str] = SCHEDULER_ENV) -> None:
        self.scheduler = self._spawn(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
            env,
        )

    def add_workers(
        self, count: int, *, resources: str = "train=1", env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`dask worker` with `count` worker processes (one thread each)."""
        args = ["worker", self.address, "--nworkers", str(count), "--nthreads", "1"]
        args += ["--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "30"]
        if resources:
            args += ["--resources", resources]
        group = self._spawn("worker", args, env or {})
        self.worker_groups.append(group)
        return group

    def descendants(self) -> set[int]:
        """Every process the `dask worker` commands started (nannies' worker processes)."""
        pids = set()
        for group in self.worker_groups:
            if group.poll() is None:
                pids |= {child.pid for child in psutil.Process(group.pid).children(recursive=True)}
        return pids

    def wait_for_workers(self, count: int) -> None:
        """Wait until `count` workers have joined (and the scheduler listens, at first)."""
        from distributed import Client

        deadline = time.monotonic() + CLUSTER_START_SECONDS
        while True:
            try:
                with Client(self.address, timeout=CLUSTER_START_SECONDS, set_as_default=False) as c:
                    c.wait_for_workers(count, timeout=CLUSTER_START_SECONDS)
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop_group(self, group: subprocess.Popen[bytes]) -> None:
        if group.poll() is None:
            os.killpg(group.pid, signal.SIGTERM)
            try:
                group.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(group.pid, signal.SIGKILL)
                group.wait()
        if group in self.worker_groups:
            self.worker_groups.remove(group)

    def stop(self) -> None:
        for group in list(self.worker_groups):
            self.stop_group(group)
        if self.scheduler is not None:
            self.stop_group(self.scheduler)


@contextmanager
def dask_cluster(directory: Path, workers: int = 2) -> Iterator[DaskCluster]:
    """A scheduler and `workers` training worker processes, ready; stopped on exit."""
    cluster = DaskCluster(directory)
    try:
        cluster.start_scheduler()
        if workers:
            cluster.add_workers(workers)
        cluster.wait_for_workers(workers)
        yield cluster
    finally:
        cluster.stop()
