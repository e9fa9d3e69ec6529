"""DaskExecutor against a real cluster: `dask scheduler` and `dask worker` processes on
127.0.0.1 (tests/dask_support.py), tasks from tests/pool_tasks.py and the service's own.

As in the pool tests, waits are failure bounds only, and tests of a cooperative stop give the
executor a long grace, so a forced ending cannot pass for it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from engine.datasets import generate, split
from engine.hyperparameters import Hyperparameters
from engine.packed import DataShape, partition
from engine.training import HistoryPoint, ParameterSnapshot
from service.execution.dask_executor import SHARED_ARRAY_BYTES, DaskExecutor
from service.execution.executor import (
    Failure,
    QueueFull,
    TaskCancelled,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from service.execution.process_pool import LocalProcessExecutor
from service.execution.tasks import (
    ConfigurationEnded,
    PreparedSplit,
    SweepTask,
    TrainingOutcome,
    TrainingTask,
)
from service.main import create_app
from tests import pool_tasks
from tests.api_support import api_settings, assert_problem, free_port, state_of
from tests.dask_support import DaskCluster, dask_cluster
from tests.executor_support import PoolUnderTest, Recorder, wait_until

LONG_GRACE = 60.0

pytestmark = pytest.mark.dask


@pytest.fixture
def running(cluster: DaskCluster) -> Iterator[PoolUnderTest[DaskExecutor]]:
    """A DaskExecutor on the session's cluster; on exit, what a test submitted is cancelled
    and must have ended properly."""
    recorder = Recorder()
    executor = DaskExecutor(cluster.address, 4, cancel_grace_seconds=LONG_GRACE)
    executor.start(recorder)
    under_test = PoolUnderTest(executor, recorder)
    try:
        yield under_test
        under_test.settle()
    finally:
        executor.shutdown()


def moons_split(n_samples: int) -> PreparedSplit:
    dataset = generate("moons", n_samples=n_samples, seed=3)
    parts = split(dataset, test_fraction=0.2, standardize=True, seed=0)
    return PreparedSplit(parts.X_train, parts.y_train, parts.X_test, parts.y_test, 2)


def cluster_keys(cluster: DaskCluster) -> set[str]:
    """The keys the cluster's workers hold in memory."""
    from distributed import Client

    with Client(cluster.address, set_as_default=False) as client:
        held: dict[str, list[str]] = client.has_what()
    return {str(key) for keys in held.values() for key in keys}


def test_ready_with_the_cluster_s_training_workers(running: PoolUnderTest[DaskExecutor]) -> None:
    executor = running.pool
    assert executor.ready and executor.not_ready_reason() is None
    workers = executor.cluster()
    assert workers is not None and len(workers) == 2
    assert all(worker.resources == {"train": 1.0} for worker in workers)
    assert executor.worker_count == 2
    assert {worker.pid for worker in workers} == set(executor.worker_pids())


def test_history_matches_the_local_pool_bit_for_bit(
    running: PoolUnderTest[DaskExecutor], cluster: DaskCluster
) -> None:
    data = moons_split(21_000)  # X_train is big enough to be scattered, not sent in the task
    assert data.X_train.nbytes >= SHARED_ARRAY_BYTES
    task = TrainingTask(Hyperparameters(hidden_layers=[6], epochs=40, record_every=4), data)
    for task_id in ("first", "second"):
        running.submit(task_id, task)
        assert isinstance(running.recorder.terminal(task_id), TaskSucceeded)

    local = Recorder()
    pool = LocalProcessExecutor(1, 1)
    pool.start(local)
    try:
        pool.submit("local", task)
        expected = local.terminal("local")
    finally:
        pool.shutdown()
    assert isinstance(expected, TaskSucceeded)
    for task_id in ("first", "second"):
        events = running.recorder.of(task_id)
        outcome: TrainingOutcome = events[-1].result  # type: ignore[union-attr]
        assert outcome.history == expected.result.history
        assert all(
            (a == b).all() for a, b in zip(outcome.weights, expected.result.weights, strict=True)
        )
        # progress: every recorded epoch once, in order, before the result
        assert isinstance(events[0], TaskStarted)
        items = [p for e in events if isinstance(e, TaskProgress) for p in e.items]
        streamed = [p for p in items if isinstance(p, HistoryPoint)]
        assert streamed == outcome.history
        assert [p.epoch for p in streamed] == list(range(4, 41, 4))
        # and the one snapshot (snapshot_every 100 > 40 epochs: the last), the trained weights
        (snapshot,) = [p for p in items if isinstance(p, ParameterSnapshot)]
        assert snapshot.epoch == 40 and len(items) == len(streamed) + 1
        assert all((a == b).all() for a, b in zip(snapshot.weights, outcome.weights, strict=True))

    # the training split crossed once for both tasks; their results were released once read
    keys = cluster_keys(cluster)
    assert sum(key.startswith("scratchnet-array-") for key in keys) == 1
    wait_until(lambda: not any("first" in k or "second" in k for k in cluster_keys(cluster)))


def test_cancel_a_running_and_a_queued_task(running: PoolUnderTest[DaskExecutor]) -> None:
    recorder = running.recorder
    for task_id in ("a", "b"):  # both workers busy
        running.submit(task_id, pool_tasks.ReportThenWait(task_id))
        recorder.wait_for(task_id, TaskProgress)
    running.submit("waiting", pool_tasks.Echo(1))
    assert running.pool.counts() == {"queued": 1, "running": 2}
    assert running.pool.cancel("waiting")
    assert isinstance(recorder.terminal("waiting"), TaskCancelled)
    assert not any(isinstance(e, TaskStarted) for e in recorder.of("waiting"))

    assert running.pool.cancel("a")
    assert isinstance(recorder.terminal("a"), TaskCancelled)  # the task stopped: grace is 60 s
    running.submit("after", pool_tasks.Echo("done"))  # a's worker is free again
    assert recorder.terminal("after") == TaskSucceeded("after", "done")
    assert not running.pool.cancel("a")


def test_deadline_and_queue_limit(cluster: DaskCluster) -> None:
    recorder = Recorder()
    executor = DaskExecutor(cluster.address, 1, cancel_grace_seconds=LONG_GRACE)
    executor.start(recorder)
    try:
        executor.submit("slow", pool_tasks.SpinUntilStopped(), deadline_seconds=0.5)
        ended = recorder.terminal("slow")
        assert isinstance(ended, TaskFailed) and ended.kind is Failure.TIMEOUT, ended
        for task_id in ("a", "b", "queued"):
            executor.submit(task_id, pool_tasks.SpinUntilStopped())
        wait_until(lambda: executor.counts()["running"] == 2)
        with pytest.raises(QueueFull) as refused:
            executor.submit("refused", pool_tasks.Echo(1))
        assert refused.value.queued == 1 and refused.value.retry_after_seconds >= 1
        for task_id in ("a", "queued", "b"):  # "queued" may start on a's worker meanwhile
            executor.cancel(task_id)
        executor.shutdown()  # before the service may even hear that "queued" started
        for task_id in ("a", "b", "queued"):
            assert isinstance(recorder.terminal(task_id), TaskCancelled)
        recorder.assert_well_formed()
    finally:
        executor.shutdown()
    # every stop reached its task: both workers take new work at once
    again = Recorder()
    executor = DaskExecutor(cluster.address, 4)
    executor.start(again)
    try:
        for task_id in ("one", "two"):
            executor.submit(task_id, pool_tasks.ReportThenWait(task_id))
        for task_id in ("one", "two"):
            again.wait_for(task_id, TaskProgress)
            executor.cancel(task_id)
            assert isinstance(again.terminal(task_id), TaskCancelled)
    finally:
        executor.shutdown()


def test_a_supervisor_that_fails_ends_every_held_task(cluster: DaskCluster) -> None:
    recorder = Recorder()
    executor = DaskExecutor(cluster.address, 4, cancel_grace_seconds=LONG_GRACE)
    executor.start(recorder)
    try:
        executor.submit("running", pool_tasks.ReportThenWait("running"))
        recorder.wait_for("running", TaskProgress)

        def broken(*_args: object) -> None:
            raise RuntimeError("supervisor bug")

        executor._handle = broken  # type: ignore[method-assign]
        executor.cancel("running")  # the stop's answer meets the bug
        lost = TaskFailed("running", Failure.WORKER_LOST, "the executor stopped unexpectedly")
        assert recorder.terminal("running") == lost
        # it takes no more work: no supervisor would ever hand it to the cluster
        assert not executor.ready and executor.not_ready_reason() == "the Dask executor is closing"
        with pytest.raises(RuntimeError, match="takes no tasks"):
            executor.submit("after", pool_tasks.Echo(1))
    finally:
        executor.shutdown()
    recorder.assert_well_formed()


def test_a_killed_worker_fails_its_task_with_worker_lost(
    running: PoolUnderTest[DaskExecutor], cluster: DaskCluster
) -> None:
    recorder = running.recorder
    running.submit("victim", pool_tasks.ReportThenWait("x"))
    started = recorder.wait_for("victim", TaskStarted)
    recorder.wait_for("victim", TaskProgress)
    assert started.worker_pid in cluster.descendants()
    [worker] = [w for w in running.pool.cluster() or [] if w.pid == started.worker_pid]
    os.kill(started.worker_pid, signal.SIGKILL)
    failed = recorder.terminal("victim")
    assert isinstance(failed, TaskFailed) and failed.kind is Failure.WORKER_LOST, failed
    assert worker.name in failed.detail
    assert worker.name not in {w.name for w in running.pool.cluster() or []}  # gone at once
    running.submit("next", pool_tasks.Echo("still here"))
    assert recorder.terminal("next") == TaskSucceeded("next", "still here")


def test_a_sweep_spreads_over_both_workers(running: PoolUnderTest[DaskExecutor]) -> None:
    data = moons_split(400)
    hps = [
        Hyperparameters(hidden_layers=[h], epochs=300, learning_rate=lr, record_every=100)
        for h in (4, 8)
        for lr in (0.05, 0.1)
    ]
    assert data.y_test is not None
    shape = DataShape(len(data.y_train), len(data.y_test), 2, 2)
    shares = partition(hps, shape, running.pool.worker_count)
    assert len(shares) == 2
    for number, packs in enumerate(shares):
        positions = sorted(i for pack in packs for i in pack)
        task = SweepTask(
            configurations=tuple((i, hps[i]) for i in positions),
            packs=tuple(tuple(positions.index(i) for i in pack) for pack in packs),
            data=data,
        )
        running.submit(f"share-{number}", task)
    ended = [running.recorder.terminal(f"share-{number}") for number in range(2)]
    assert all(isinstance(event, TaskSucceeded) for event in ended), ended
    pids = {running.recorder.wait_for(f"share-{n}", TaskStarted).worker_pid for n in range(2)}
    assert len(pids) == 2
    finished = [
        item
        for number in range(2)
        for event in running.recorder.of(f"share-{number}")
        if isinstance(event, TaskProgress)
        for item in event.items
        if isinstance(item, ConfigurationEnded)
    ]
    assert sorted(item.index for item in finished) == [0, 1, 2, 3]
    assert all(item.status == "succeeded" for item in finished)


def test_workers_with_another_version_are_refused(tmp_path: Path) -> None:
    # a cluster of its own: a stranger worker joining the session's cluster would make every
    # service using it (the shared end-to-end server) log that its workers do not match
    (tmp_path / "cluster").mkdir()
    with dask_cluster(tmp_path / "cluster", workers=1) as cluster:
        refuses_another_version(cluster, tmp_path)


def refuses_another_version(cluster: DaskCluster, tmp_path: Path) -> None:
    fake = tmp_path / "site"
    (fake / "scratchnet-9.9.9.dist-info").mkdir(parents=True)
    (fake / "scratchnet-9.9.9.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: scratchnet\nVersion: 9.9.9\n"
    )
    recorder = Recorder()
    executor = DaskExecutor(cluster.address, 4, watch_interval_seconds=0.2)
    executor.start(recorder)
    try:
        assert executor.ready
        # no train resource: it must not take any other test's tasks while it is up
        group = cluster.add_workers(1, resources="", env={"PYTHONPATH": str(fake)})
        try:
            wait_until(lambda: not executor.ready)
            reason = executor.not_ready_reason()
            assert reason is not None and "scratchnet 9.9.9" in reason, reason
            [stranger] = [w.name for w in executor.cluster() or [] if not w.resources]
            assert stranger in reason
            with pytest.raises(RuntimeError, match=r"scratchnet 9\.9\.9"):
                DaskExecutor(cluster.address, 4).start(Recorder())
        finally:
            cluster.stop_group(group)
        wait_until(lambda: executor.ready)
    finally:
        executor.shutdown()


def test_a_scheduler_that_re_runs_lost_tasks_is_refused(tmp_path: Path) -> None:
    cluster = DaskCluster(tmp_path)
    cluster.start_scheduler(env={})  # Dask's default: a task may fail 3 times
    try:
        with pytest.raises(RuntimeError, match="ALLOWED_FAILURES=0") as refused:
            DaskExecutor(cluster.address, 4).start(Recorder())
        assert "lets a task fail 3 times" in str(refused.value)
    finally:
        cluster.stop()


@pytest.mark.anyio
async def test_readyz_says_why_an_unreachable_scheduler_keeps_the_service_unready() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    executor = DaskExecutor(address, 4, start_timeout_seconds=0.5)
    app = create_app(api_settings(executor=address), executor=executor)
    async with app.router.lifespan_context(app):
        with anyio.fail_after(30):
            while state_of(app).dispatcher.start_error is None:
                await anyio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            problem = assert_problem(await client.get("/readyz"), 503, "not-ready")
            assert f"could not reach the Dask scheduler at {address}" in problem["detail"]
            info = (await client.get("/v1/info")).json()
            assert (info["executor_backend"], info["ready"]) == ("DaskExecutor", False)
