"""LocalProcessExecutor with real worker processes (tasks in tests/pool_tasks.py).

Waits use generous timeouts only as failure bounds; no assertion depends on how fast the machine
is. Tests that check a cooperative stop give the pool a long grace, so a kill cannot pass for it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from service.execution.executor import (
    Failure,
    QueueFull,
    Task,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from service.execution.process_pool import LocalProcessExecutor
from tests import pool_tasks
from tests.executor_support import TERMINAL, PoolUnderTest, Recorder, wait_until

LONG_GRACE = 60.0
SHORT_GRACE = 0.3
REPO_ROOT = Path(__file__).resolve().parent.parent


def child_pids() -> set[int]:
    """This process's children, bar multiprocessing's resource tracker (it lives on)."""
    return {
        child.pid
        for child in psutil.Process().children(recursive=True)
        if "resource_tracker" not in " ".join(child.cmdline())
    }


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[tuple[LocalProcessExecutor, Recorder]]:
    recorder = Recorder()
    pool = LocalProcessExecutor(2, 4, cancel_grace_seconds=LONG_GRACE)
    pool.start(recorder)
    yield pool, recorder
    pool.shutdown()


@pytest.fixture
def pool(shared_pool: tuple[LocalProcessExecutor, Recorder]) -> Iterator[PoolUnderTest]:
    """Two workers shared by the tests that leave them alive (checked after each test)."""
    executor, recorder = shared_pool
    recorder.clear()
    pids = sorted(executor.worker_pids())
    under_test = PoolUnderTest(executor, recorder)
    yield under_test
    under_test.settle()
    assert executor.counts() == {"queued": 0, "running": 0}
    assert sorted(executor.worker_pids()) == pids  # nothing killed: with a 60 s grace, no kill


PoolFactory = Callable[..., PoolUnderTest]


@pytest.fixture
def make_pool() -> Iterator[PoolFactory]:
    """Pools of their own, for tests that kill, replace or stop workers."""
    started: list[PoolUnderTest] = []
    children_before = child_pids()

    def make(
        workers: int = 1, max_queued: int = 4, cancel_grace_seconds: float = LONG_GRACE
    ) -> PoolUnderTest:
        executor = LocalProcessExecutor(
            workers, max_queued, cancel_grace_seconds=cancel_grace_seconds
        )
        recorder = Recorder()
        executor.start(recorder)
        started.append(PoolUnderTest(executor, recorder))
        return started[-1]

    yield make
    for under_test in started:
        under_test.pool.shutdown()
        under_test.recorder.assert_well_formed()
    assert child_pids() == children_before


# ---- lifecycle ------------------------------------------------------------------------------


def test_start_makes_ready_workers_and_shutdown_removes_them() -> None:
    children_before = child_pids()
    pool = LocalProcessExecutor(2, 4)
    assert not pool.ready
    pool.start(Recorder())
    pids = pool.worker_pids()
    assert pool.ready and pool.worker_count == 2
    assert len(set(pids)) == 2
    assert set(pids) == child_pids() - children_before
    assert pool.counts() == {"queued": 0, "running": 0}

    pool.shutdown()
    pool.shutdown()  # idempotent
    assert not pool.ready
    assert child_pids() == children_before
    assert not any(psutil.pid_exists(pid) for pid in pids)
    with pytest.raises(RuntimeError):
        pool.submit("late", pool_tasks.Echo(1))


def test_submit_before_start_is_refused() -> None:
    pool = LocalProcessExecutor(1, 1)
    with pytest.raises(RuntimeError):
        pool.submit("early", pool_tasks.Echo(1))
    pool.shutdown()


def test_fork_start_method_is_refused() -> None:
    with pytest.raises(ValueError, match="fork"):
        LocalProcessExecutor(1, 1, mp_context="fork")


def test_a_worker_that_cannot_start_fails_start_and_leaves_nothing_behind() -> None:
    children_before = child_pids()
    pool = LocalProcessExecutor(1, 1, preload=("no_such_module_for_scratchnet",))
    with pytest.raises(RuntimeError, match="exited while starting"):
        pool.start(Recorder())
    assert not pool.ready
    assert child_pids() == children_before


# ---- events (shared pool: two workers) ------------------------------------------------------


def test_events_arrive_in_order_with_progress_batched(pool: PoolUnderTest) -> None:
    count = 20_000
    outcome = pool.run("many", pool_tasks.ReportMany(count))

    assert outcome == TaskSucceeded("many", sum(range(count)))
    events = pool.recorder.of("many")
    assert isinstance(events[0], TaskStarted)
    assert events[0].worker_pid in pool.pool.worker_pids()
    progress = events[1:-1]
    assert all(isinstance(event, TaskProgress) for event in progress)
    reported = [item for event in progress for item in event.items]  # type: ignore[union-attr]
    assert reported == list(range(count))
    assert len(progress) < count // 100  # batched: a message per flush, not per item


def test_progress_is_flushed_while_the_task_keeps_running(pool: PoolUnderTest) -> None:
    pool.submit("quiet", pool_tasks.ReportThenWait("first epoch"))
    progress = pool.recorder.wait_for("quiet", TaskProgress)
    assert progress == TaskProgress("quiet", ["first epoch"])
    assert pool.pool.counts() == {"queued": 0, "running": 1}
    assert pool.pool.cancel("quiet")
    assert pool.recorder.terminal("quiet") == TaskCancelled("quiet")


def test_waiting_tasks_start_in_submission_order(make_pool: PoolFactory, tmp_path: Path) -> None:
    # One worker, so the order of TaskStarted events is the dispatch order itself (with two,
    # the workers' start reports may cross).
    pool = make_pool(workers=1)
    release = tmp_path / "release"
    pool.submit("blocker", pool_tasks.WaitForFile(str(release)))
    pool.recorder.wait_for("blocker", TaskStarted)
    for name in ("first", "second", "third"):
        pool.submit(name, pool_tasks.Echo(name))
    release.touch()
    for name in ("first", "second", "third"):
        assert pool.recorder.terminal(name) == TaskSucceeded(name, name)
    starts = [e.task_id for e in pool.recorder.events if isinstance(e, TaskStarted)]
    assert starts == ["blocker", "first", "second", "third"]


def test_an_exception_fails_the_task_with_its_kind(pool: PoolUnderTest) -> None:
    assert pool.run("diverges", pool_tasks.Diverge(3)) == TaskFailed(
        "diverges", Failure.DIVERGED, "training diverged at epoch 3: loss is nan"
    )
    assert pool.run("exits", pool_tasks.CallSysExit()) == TaskFailed("exits", Failure.INTERNAL, "4")
    assert pool.run("after", pool_tasks.Echo("ok")) == TaskSucceeded("after", "ok")


@pytest.mark.parametrize(
    ("task", "kind", "detail_part"),
    [
        (pool_tasks.HoldsALambda(), Failure.TASK_UNPICKLABLE, "cannot be pickled"),
        (pool_tasks.BreaksInWorker(), Failure.TASK_UNPICKLABLE, "only unpickles in the service"),
        (pool_tasks.UnpicklableResult(), Failure.RESULT_UNPICKLABLE, "result cannot be pickled"),
        (pool_tasks.UnpicklableProgress(), Failure.PROGRESS_UNPICKLABLE, "progress item"),
    ],
)
def test_values_that_do_not_pickle_fail_only_their_task(
    pool: PoolUnderTest, task: Task, kind: Failure, detail_part: str
) -> None:
    outcome = pool.run("bad", task)
    assert isinstance(outcome, TaskFailed)
    assert outcome.kind is kind
    assert detail_part in outcome.detail
    assert pool.run("next", pool_tasks.Echo(2)) == TaskSucceeded("next", 2)


def test_a_large_dataset_goes_in_and_large_weights_come_out(pool: PoolUnderTest) -> None:
    X = np.tile(np.array([1.0, 2.0]), (1_000_000, 1))  # (1_000_000, 2), 16 MB
    outcome = pool.run("big", pool_tasks.FitLike(X, (256, 512)))  # 1 MB back
    assert isinstance(outcome, TaskSucceeded)
    np.testing.assert_array_equal(outcome.result, np.full((256, 512), 3.0))
    assert pool.recorder.wait_for("big", TaskProgress) == TaskProgress("big", [(1_000_000, 2)])


def test_two_workers_run_two_tasks_at_the_same_time(pool: PoolUnderTest, tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    pool.submit("a", pool_tasks.Rendezvous(a, b))  # each waits until the other has started
    pool.submit("b", pool_tasks.Rendezvous(b, a))
    a_done, b_done = pool.recorder.terminal("a"), pool.recorder.terminal("b")
    assert isinstance(a_done, TaskSucceeded) and isinstance(b_done, TaskSucceeded)
    assert a_done.result != b_done.result  # two worker processes
    pids = {e.worker_pid for e in pool.recorder.events if isinstance(e, TaskStarted)}
    assert pids == {a_done.result, b_done.result}


def test_a_listener_that_raises_is_logged_and_the_pool_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()

    def listener(event: TaskEvent) -> None:
        recorder(event)
        if isinstance(event, TaskStarted):
            raise RuntimeError("listener bug")

    executor = LocalProcessExecutor(1, 1)
    executor.start(listener)
    try:
        with caplog.at_level(logging.ERROR, logger="scratchnet.executor"):
            for task_id in ("a", "b"):
                executor.submit(task_id, pool_tasks.Echo(task_id))
                assert recorder.terminal(task_id) == TaskSucceeded(task_id, task_id)
    finally:
        executor.shutdown()
    errors = [str(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert errors == ["listener bug", "listener bug"]


def test_a_supervisor_that_fails_ends_every_held_task_and_stops_its_workers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    children_before = child_pids()
    recorder = Recorder()
    executor = LocalProcessExecutor(1, 4)
    executor.start(recorder)
    try:
        executor.submit("running", pool_tasks.WaitForFile(str(tmp_path / "go")))
        recorder.wait_for("running", TaskStarted)
        executor.submit("waiting", pool_tasks.Echo(1))

        def broken(*_args: object) -> None:
            raise RuntimeError("supervisor bug")

        with caplog.at_level(logging.ERROR, logger="scratchnet.executor"):
            executor._handle = broken  # type: ignore[method-assign]
            (tmp_path / "go").touch()  # the running task ends: its message meets the bug
            lost = "the executor stopped unexpectedly"
            for task_id in ("running", "waiting"):
                assert recorder.terminal(task_id) == TaskFailed(task_id, Failure.WORKER_LOST, lost)
        assert [str(r.exc_info[1]) for r in caplog.records if r.exc_info] == ["supervisor bug"]
        wait_until(lambda: child_pids() == children_before)
        assert executor.counts() == {"queued": 0, "running": 0}
    finally:
        executor.shutdown()
    recorder.assert_well_formed()


# ---- cancellation and deadlines -------------------------------------------------------------


def test_cancel_a_waiting_task(pool: PoolUnderTest, tmp_path: Path) -> None:
    for blocker in ("blocker 1", "blocker 2"):
        pool.submit(blocker, pool_tasks.WaitForFile(str(tmp_path / "never")))
        pool.recorder.wait_for(blocker, TaskStarted)
    pool.submit("waiting", pool_tasks.Echo(1))
    assert pool.pool.cancel("waiting")
    assert pool.recorder.terminal("waiting") == TaskCancelled("waiting")
    assert pool.recorder.of("waiting") == [TaskCancelled("waiting")]
    assert not pool.pool.cancel("waiting")
    assert not pool.pool.cancel("unknown")
    assert not any(isinstance(e, TERMINAL) for e in pool.recorder.events if e.task_id != "waiting")
    assert pool.pool.counts() == {"queued": 0, "running": 2}


@pytest.mark.parametrize("return_when_stopped", [False, True])
def test_cancel_a_running_task_that_polls_should_stop(
    pool: PoolUnderTest, return_when_stopped: bool
) -> None:
    pool.submit("spin", pool_tasks.SpinUntilStopped(return_when_stopped))
    pool.recorder.wait_for("spin", TaskStarted)
    assert pool.pool.cancel("spin")
    assert pool.recorder.terminal("spin") == TaskCancelled("spin")  # never its result
    assert pool.pool.counts() == {"queued": 0, "running": 0}
    assert pool.run("next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)
    # the fixture checks no worker was replaced: it stopped by itself within a 60 s grace


def test_a_task_that_polls_should_stop_fails_at_its_deadline(pool: PoolUnderTest) -> None:
    pool.submit("slow", pool_tasks.SpinUntilStopped(), deadline_seconds=0.2)
    assert pool.recorder.terminal("slow") == TaskFailed(
        "slow", Failure.TIMEOUT, "the task exceeded the 0.2 s limit"
    )
    assert pool.run("next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)


def test_a_task_that_ignores_cancel_is_killed_after_the_grace(make_pool: PoolFactory) -> None:
    pool = make_pool(cancel_grace_seconds=SHORT_GRACE)
    [old_pid] = pool.pool.worker_pids()
    pool.submit("stubborn", pool_tasks.IgnoreStop(600))
    pool.recorder.wait_for("stubborn", TaskStarted)
    assert pool.pool.cancel("stubborn")
    assert pool.recorder.terminal("stubborn") == TaskCancelled("stubborn")
    wait_until(lambda: pool.pool.ready)
    assert old_pid not in pool.pool.worker_pids()
    assert not psutil.pid_exists(old_pid)
    assert pool.run("next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)


def test_a_task_that_ignores_its_deadline_is_killed_and_fails(make_pool: PoolFactory) -> None:
    pool = make_pool(cancel_grace_seconds=SHORT_GRACE)
    [old_pid] = pool.pool.worker_pids()
    pool.submit("stubborn", pool_tasks.IgnoreStop(600), deadline_seconds=0.2)
    assert pool.recorder.terminal("stubborn") == TaskFailed(
        "stubborn", Failure.TIMEOUT, "the task exceeded the 0.2 s limit"
    )
    assert pool.run("next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)
    assert old_pid not in pool.pool.worker_pids()


# ---- lost workers ---------------------------------------------------------------------------


def test_a_worker_killed_mid_task_loses_only_that_task(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    pool = make_pool(workers=2)
    pool.submit("doomed", pool_tasks.WaitForFile(str(tmp_path / "never")))
    pool.submit("bystander", pool_tasks.WaitForFile(str(tmp_path / "go")))
    doomed_pid = pool.recorder.wait_for("doomed", TaskStarted).worker_pid
    bystander_pid = pool.recorder.wait_for("bystander", TaskStarted).worker_pid

    os.kill(doomed_pid, signal.SIGKILL)
    assert pool.recorder.terminal("doomed") == TaskFailed(
        "doomed",
        Failure.WORKER_LOST,
        f"worker process {doomed_pid} exited (signal 9)",
    )
    (tmp_path / "go").touch()
    assert pool.recorder.terminal("bystander") == TaskSucceeded("bystander", bystander_pid)
    assert pool.run("next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)
    wait_until(lambda: pool.pool.ready)
    pids = pool.pool.worker_pids()
    assert doomed_pid not in pids and bystander_pid in pids and len(pids) == 2


def test_a_task_that_exits_its_worker_is_lost_and_the_worker_replaced(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool()
    [pid] = pool.pool.worker_pids()
    assert pool.run("exits", pool_tasks.ExitAbruptly(3)) == TaskFailed(
        "exits", Failure.WORKER_LOST, f"worker process {pid} exited (exit code 3)"
    )
    assert pool.run("next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)


def test_an_idle_worker_that_dies_is_replaced(make_pool: PoolFactory) -> None:
    pool = make_pool()
    [old_pid] = pool.pool.worker_pids()
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: pool.pool.ready and pool.pool.worker_pids() != [old_pid])
    assert pool.run("next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)
    assert pool.recorder.events[0] == TaskStarted("next", pool.pool.worker_pids()[0])


def test_workers_exit_when_the_service_is_killed() -> None:
    script = (
        "import threading, time\n"
        "from service.execution.executor import TaskStarted\n"
        "from service.execution.process_pool import LocalProcessExecutor\n"
        "from tests.pool_tasks import IgnoreStop\n"
        "started = threading.Event()\n"
        "def listener(event):\n"
        "    if isinstance(event, TaskStarted):\n"
        "        started.set()\n"
        "pool = LocalProcessExecutor(2, 1)\n"
        "pool.start(listener)\n"
        "pool.submit('busy', IgnoreStop(600))\n"
        "started.wait(30)\n"
        "print(*pool.worker_pids(), flush=True)\n"
        "time.sleep(600)\n"
    )
    service = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert service.stdout is not None
        worker_pids = [int(pid) for pid in service.stdout.readline().split()]
        assert len(worker_pids) == 2  # one busy, one idle: both must go
    finally:
        service.kill()
        service.wait()
        assert service.stdout is not None
        service.stdout.close()

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(lambda: all(gone(pid) for pid in worker_pids))


# ---- limits and shutdown --------------------------------------------------------------------


def test_queue_full_past_the_limit_and_duplicate_ids(pool: PoolUnderTest, tmp_path: Path) -> None:
    for blocker in ("running 1", "running 2"):
        pool.submit(blocker, pool_tasks.WaitForFile(str(tmp_path / "never")))
        pool.recorder.wait_for(blocker, TaskStarted)
    for waiting in range(4):  # max_queued = 4; the running tasks do not count
        pool.submit(f"waiting {waiting}", pool_tasks.Echo(waiting))
    with pytest.raises(QueueFull) as raised:
        pool.pool.submit("one too many", pool_tasks.Echo(-1))
    assert raised.value.queued == 4
    assert raised.value.retry_after_seconds >= 1
    for duplicate in ("running 1", "waiting 0"):
        with pytest.raises(ValueError, match="already"):
            pool.pool.submit(duplicate, pool_tasks.Echo(-1))
    assert pool.pool.counts() == {"queued": 4, "running": 2}
    assert pool.recorder.of("one too many") == []


def test_shutdown_cancels_every_held_task(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=2, cancel_grace_seconds=SHORT_GRACE)
    pool.submit("polite", pool_tasks.SpinUntilStopped())
    pool.submit("stubborn", pool_tasks.IgnoreStop(600))
    pool.recorder.wait_for("polite", TaskStarted)
    pool.recorder.wait_for("stubborn", TaskStarted)
    pool.submit("waiting", pool_tasks.Echo(1))
    pids = pool.pool.worker_pids()

    pool.pool.shutdown()
    for task_id in ("polite", "stubborn", "waiting"):
        assert pool.recorder.of(task_id)[-1] == TaskCancelled(task_id)
    assert pool.pool.counts() == {"queued": 0, "running": 0}
    assert not any(psutil.pid_exists(pid) for pid in pids)
