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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from service.executor import (
    QueueFull,
    Task,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from service.process_pool import LocalProcessExecutor
from tests import pool_tasks

WAIT_SECONDS = 30.0
LONG_GRACE = 60.0
SHORT_GRACE = 0.3
TERMINAL = (TaskSucceeded, TaskFailed, TaskCancelled)
REPO_ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """The pool's listener: keeps every event and lets the test wait for one."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: TaskEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def of(self, task_id: str) -> list[TaskEvent]:
        with self._changed:
            return [event for event in self.events if event.task_id == task_id]

    def wait_for(self, task_id: str, kind: type[Any]) -> Any:
        deadline = time.monotonic() + WAIT_SECONDS
        with self._changed:
            while True:
                found = [e for e in self.events if e.task_id == task_id and isinstance(e, kind)]
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {kind.__name__} for {task_id}: {self.events}")
                self._changed.wait(remaining)

    def terminal(self, task_id: str) -> TaskEvent:
        return self.wait_for(task_id, TERMINAL)  # type: ignore[arg-type]

    def assert_well_formed(self) -> None:
        """Per task: at most one TaskStarted, first; exactly one terminal event, last."""
        with self._changed:
            task_ids = {event.task_id for event in self.events}
            for task_id in task_ids:
                events = [event for event in self.events if event.task_id == task_id]
                started = [i for i, e in enumerate(events) if isinstance(e, TaskStarted)]
                terminal = [i for i, e in enumerate(events) if isinstance(e, TERMINAL)]
                assert started in ([], [0]), events
                assert terminal == [len(events) - 1], events


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def worker_children() -> list[psutil.Process]:
    """This process's children, bar multiprocessing's resource tracker (it lives on)."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "resource_tracker" not in " ".join(child.cmdline())
    ]


PoolFactory = Callable[..., tuple[LocalProcessExecutor, Recorder]]


@pytest.fixture
def make_pool() -> Iterator[PoolFactory]:
    started: list[tuple[LocalProcessExecutor, Recorder]] = []

    def make(
        workers: int = 1, max_queued: int = 4, cancel_grace_seconds: float = LONG_GRACE
    ) -> tuple[LocalProcessExecutor, Recorder]:
        pool = LocalProcessExecutor(workers, max_queued, cancel_grace_seconds=cancel_grace_seconds)
        recorder = Recorder()
        pool.start(recorder)
        started.append((pool, recorder))
        return pool, recorder

    yield make
    for pool, recorder in started:
        pool.shutdown()
        recorder.assert_well_formed()
    assert worker_children() == []


def run(pool: LocalProcessExecutor, recorder: Recorder, task_id: str, task: Task) -> TaskEvent:
    pool.submit(task_id, task)
    return recorder.terminal(task_id)


# ---- lifecycle ------------------------------------------------------------------------------


def test_start_makes_ready_workers_and_shutdown_removes_them() -> None:
    pool = LocalProcessExecutor(2, 4)
    assert not pool.ready
    pool.start(Recorder())
    pids = pool.worker_pids()
    assert pool.ready and pool.worker_count == 2
    assert len(set(pids)) == 2
    assert sorted(pids) == sorted(child.pid for child in worker_children())
    assert pool.counts() == {"queued": 0, "running": 0}

    pool.shutdown()
    pool.shutdown()  # idempotent
    assert not pool.ready
    assert worker_children() == []
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
    pool = LocalProcessExecutor(1, 1, preload=("no_such_module_for_scratchnet",))
    with pytest.raises(RuntimeError, match="exited while starting"):
        pool.start(Recorder())
    assert not pool.ready
    assert worker_children() == []


# ---- events ---------------------------------------------------------------------------------


def test_events_arrive_in_order_with_progress_batched(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool()
    count = 20_000
    outcome = run(pool, recorder, "many", pool_tasks.ReportMany(count))

    assert outcome == TaskSucceeded("many", sum(range(count)))
    events = recorder.of("many")
    assert events[0] == TaskStarted("many", pool.worker_pids()[0])
    progress = events[1:-1]
    assert all(isinstance(event, TaskProgress) for event in progress)
    reported = [item for event in progress for item in event.items]  # type: ignore[union-attr]
    assert reported == list(range(count))
    assert len(progress) < count // 100  # batched: a message per flush, not per item


def test_progress_is_flushed_while_the_task_keeps_running(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool()
    pool.submit("quiet", pool_tasks.ReportThenWait("first epoch"))
    assert recorder.wait_for("quiet", TaskProgress) == TaskProgress("quiet", ["first epoch"])
    assert pool.counts() == {"queued": 0, "running": 1}
    pool.cancel("quiet")
    assert recorder.terminal("quiet") == TaskCancelled("quiet")


def test_waiting_tasks_start_in_submission_order(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool(max_queued=3)
    release = tmp_path / "release"
    pool.submit("blocker", pool_tasks.WaitForFile(str(release)))
    for name in ("first", "second", "third"):
        pool.submit(name, pool_tasks.Echo(name))
    release.touch()
    for name in ("first", "second", "third"):
        assert recorder.terminal(name) == TaskSucceeded(name, name)
    starts = [e.task_id for e in recorder.events if isinstance(e, TaskStarted)]
    assert starts == ["blocker", "first", "second", "third"]


def test_an_exception_fails_the_task_with_its_class_name(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool()
    pid = pool.worker_pids()[0]
    assert run(pool, recorder, "diverges", pool_tasks.Diverge(3)) == TaskFailed(
        "diverges", "TrainingDiverged", "training diverged at epoch 3: loss is nan"
    )
    assert run(pool, recorder, "exits", pool_tasks.CallSysExit()) == TaskFailed(
        "exits", "SystemExit", "4"
    )
    assert run(pool, recorder, "after", pool_tasks.Echo("ok")) == TaskSucceeded("after", "ok")
    assert pool.worker_pids() == [pid]


@pytest.mark.parametrize(
    ("task", "error_type", "detail_part"),
    [
        (pool_tasks.HoldsALambda(), "task_unpicklable", "cannot be pickled"),
        (pool_tasks.BreaksInWorker(), "task_unpicklable", "only unpickles in the service"),
        (pool_tasks.UnpicklableResult(), "result_unpicklable", "result cannot be pickled"),
        (pool_tasks.UnpicklableProgress(), "progress_unpicklable", "progress item"),
    ],
)
def test_values_that_do_not_pickle_fail_only_their_task(
    make_pool: PoolFactory, task: Task, error_type: str, detail_part: str
) -> None:
    pool, recorder = make_pool()
    pid = pool.worker_pids()[0]
    outcome = run(pool, recorder, "bad", task)
    assert isinstance(outcome, TaskFailed)
    assert outcome.error_type == error_type
    assert detail_part in outcome.detail
    assert run(pool, recorder, "next", pool_tasks.Echo(2)) == TaskSucceeded("next", 2)
    assert pool.worker_pids() == [pid]


def test_a_listener_that_raises_is_logged_and_the_pool_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()

    def listener(event: TaskEvent) -> None:
        recorder(event)
        if isinstance(event, TaskStarted):
            raise RuntimeError("listener bug")

    pool = LocalProcessExecutor(1, 1)
    pool.start(listener)
    try:
        with caplog.at_level(logging.ERROR, logger="scratchnet.executor"):
            pool.submit("a", pool_tasks.Echo("a"))
            assert recorder.terminal("a") == TaskSucceeded("a", "a")
            pool.submit("b", pool_tasks.Echo("b"))
            assert recorder.terminal("b") == TaskSucceeded("b", "b")
    finally:
        pool.shutdown()
    errors = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert errors == ["listener bug", "listener bug"]


def test_a_large_dataset_goes_in_and_large_weights_come_out(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool()
    X = np.tile(np.array([1.0, 2.0]), (1_000_000, 1))  # (1_000_000, 2), 16 MB
    outcome = run(pool, recorder, "big", pool_tasks.FitLike(X, (256, 512)))  # 1 MB back
    assert isinstance(outcome, TaskSucceeded)
    np.testing.assert_array_equal(outcome.result, np.full((256, 512), 3.0))
    assert recorder.wait_for("big", TaskProgress) == TaskProgress("big", [(1_000_000, 2)])


def test_two_workers_run_two_tasks_at_the_same_time(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(workers=2)
    pool.submit("a", pool_tasks.Timed(3_000_000))
    pool.submit("b", pool_tasks.Timed(3_000_000))
    a, b = recorder.terminal("a"), recorder.terminal("b")
    assert isinstance(a, TaskSucceeded) and isinstance(b, TaskSucceeded)
    (a_start, a_end), (b_start, b_end) = a.result, b.result
    assert a_start < b_end and b_start < a_end  # the intervals overlap
    pids = {e.worker_pid for e in recorder.events if isinstance(e, TaskStarted)}
    assert len(pids) == 2


# ---- cancellation and deadlines -------------------------------------------------------------


def test_cancel_a_waiting_task(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool()
    pool.submit("running", pool_tasks.WaitForFile(str(tmp_path / "never")))
    recorder.wait_for("running", TaskStarted)
    pool.submit("waiting", pool_tasks.Echo(1))
    assert pool.cancel("waiting")
    assert recorder.terminal("waiting") == TaskCancelled("waiting")
    assert recorder.of("waiting") == [TaskCancelled("waiting")]
    assert not pool.cancel("waiting")
    assert not pool.cancel("unknown")
    assert not any(isinstance(event, TERMINAL) for event in recorder.of("running"))
    assert pool.counts() == {"queued": 0, "running": 1}


@pytest.mark.parametrize("return_when_stopped", [False, True])
def test_cancel_a_running_task_that_polls_should_stop(
    make_pool: PoolFactory, return_when_stopped: bool
) -> None:
    pool, recorder = make_pool()
    pids = pool.worker_pids()
    pool.submit("spin", pool_tasks.SpinUntilStopped(return_when_stopped))
    recorder.wait_for("spin", TaskStarted)
    assert pool.cancel("spin")
    assert recorder.terminal("spin") == TaskCancelled("spin")  # never its result
    assert pool.worker_pids() == pids  # it stopped by itself: no kill within a 60 s grace
    assert pool.counts() == {"queued": 0, "running": 0}
    assert run(pool, recorder, "next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)


def test_a_task_that_ignores_cancel_is_killed_after_the_grace(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(cancel_grace_seconds=SHORT_GRACE)
    [old_pid] = pool.worker_pids()
    pool.submit("stubborn", pool_tasks.IgnoreStop(600))
    recorder.wait_for("stubborn", TaskStarted)
    assert pool.cancel("stubborn")
    assert recorder.terminal("stubborn") == TaskCancelled("stubborn")
    wait_until(lambda: pool.ready)
    assert old_pid not in pool.worker_pids()
    assert not psutil.pid_exists(old_pid)
    assert run(pool, recorder, "next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)


@pytest.mark.parametrize(
    ("task", "replaced"),
    [(pool_tasks.SpinUntilStopped(), False), (pool_tasks.IgnoreStop(600), True)],
)
def test_a_task_past_its_deadline_fails_with_timeout(
    make_pool: PoolFactory, task: Task, replaced: bool
) -> None:
    pool, recorder = make_pool(cancel_grace_seconds=SHORT_GRACE)
    [old_pid] = pool.worker_pids()
    pool.submit("slow", task, deadline_seconds=0.2)
    assert recorder.terminal("slow") == TaskFailed(
        "slow", "timeout", "the task exceeded the 0.2 s limit"
    )
    wait_until(lambda: pool.ready)
    assert (old_pid not in pool.worker_pids()) is replaced
    assert run(pool, recorder, "next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)


# ---- lost workers ---------------------------------------------------------------------------


def test_a_worker_killed_mid_task_loses_only_that_task(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    pool, recorder = make_pool(workers=2)
    pool.submit("doomed", pool_tasks.WaitForFile(str(tmp_path / "never")))
    pool.submit("bystander", pool_tasks.WaitForFile(str(tmp_path / "go")))
    doomed_pid = recorder.wait_for("doomed", TaskStarted).worker_pid
    bystander_pid = recorder.wait_for("bystander", TaskStarted).worker_pid

    os.kill(doomed_pid, signal.SIGKILL)
    assert recorder.terminal("doomed") == TaskFailed(
        "doomed",
        "worker_lost",
        "the worker process running this task exited unexpectedly (signal 9)",
    )
    (tmp_path / "go").touch()
    assert recorder.terminal("bystander") == TaskSucceeded("bystander", bystander_pid)
    assert run(pool, recorder, "next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)
    wait_until(lambda: pool.ready)
    assert doomed_pid not in pool.worker_pids() and bystander_pid in pool.worker_pids()


def test_a_task_that_exits_the_worker_is_lost_and_the_worker_replaced(
    make_pool: PoolFactory,
) -> None:
    pool, recorder = make_pool()
    assert run(pool, recorder, "exits", pool_tasks.ExitAbruptly(3)) == TaskFailed(
        "exits",
        "worker_lost",
        "the worker process running this task exited unexpectedly (exit code 3)",
    )
    assert run(pool, recorder, "next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)


def test_an_idle_worker_that_dies_is_replaced(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool()
    [old_pid] = pool.worker_pids()
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: pool.ready and pool.worker_pids() != [old_pid])
    assert run(pool, recorder, "next", pool_tasks.Echo(1)) == TaskSucceeded("next", 1)
    assert recorder.events[0] == TaskStarted("next", pool.worker_pids()[0])


def test_workers_exit_when_the_service_is_killed() -> None:
    script = (
        "import threading, time\n"
        "from service.executor import TaskStarted\n"
        "from service.process_pool import LocalProcessExecutor\n"
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


def test_queue_full_past_the_limit_and_duplicate_ids(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    pool, recorder = make_pool(max_queued=1)
    pool.submit("running", pool_tasks.WaitForFile(str(tmp_path / "never")))
    recorder.wait_for("running", TaskStarted)
    pool.submit("waiting", pool_tasks.Echo(1))  # the running task does not count
    with pytest.raises(QueueFull) as raised:
        pool.submit("one too many", pool_tasks.Echo(2))
    assert raised.value.queued == 1
    assert raised.value.retry_after_seconds >= 1
    for duplicate in ("running", "waiting"):
        with pytest.raises(ValueError, match="already"):
            pool.submit(duplicate, pool_tasks.Echo(3))
    assert pool.counts() == {"queued": 1, "running": 1}
    assert recorder.of("one too many") == []


def test_shutdown_cancels_every_held_task(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(workers=2, cancel_grace_seconds=SHORT_GRACE)
    pool.submit("polite", pool_tasks.SpinUntilStopped())
    pool.submit("stubborn", pool_tasks.IgnoreStop(600))
    recorder.wait_for("polite", TaskStarted)
    recorder.wait_for("stubborn", TaskStarted)
    pool.submit("waiting", pool_tasks.Echo(1))
    pids = pool.worker_pids()

    pool.shutdown()
    for task_id in ("polite", "stubborn", "waiting"):
        assert recorder.of(task_id)[-1] == TaskCancelled(task_id)
    assert pool.counts() == {"queued": 0, "running": 0}
    assert worker_children() == []
    assert not any(psutil.pid_exists(pid) for pid in pids)
