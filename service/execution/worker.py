"""The main loop of one worker process of `service.execution.process_pool.LocalProcessExecutor`.

The parent and the worker share one duplex pipe and one shared integer, the stop flag.

    parent -> worker   ("run", task_id) followed by the pickled task as raw bytes; ("stop",)
    worker -> parent   ("ready", pid)
                       ("started", task_id)
                       ("progress", task_id, pickled list of items)
                       ("succeeded", task_id, pickled result)
                       ("failed", task_id, failure, detail)         a Failure's value, str
                       ("stopped", task_id)                         the stop flag was set

The parent sets the flag (to cancel, on a deadline, on shutdown) and resets it before the next
task, so `should_stop()` is one read of shared memory, no system call. Everything a task hands
over travels pickled inside the messages, so a value that cannot be rebuilt on the other side
fails that one task, never the pipe.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from service.execution.executor import Failure, failure_of

MAX_DETAIL_CHARS = 2000
PARENT_CHECK_SECONDS = 0.5


def describe(exc: BaseException) -> str:
    """The exception's message as a plain string, whatever its __str__ does."""
    try:
        text = str(exc)
    except Exception:
        text = f"<{type(exc).__name__} with an unprintable message>"
    return text[:MAX_DETAIL_CHARS]


class _Channel:
    """Sends to the parent from the task thread and the flusher thread, one message at a time.

    `report` only appends to a deque (atomic, no lock): the flusher thread sends what has
    accumulated as one message every `flush_interval` seconds while a task runs, and `finish`
    sends the rest before the task's outcome.
    """

    def __init__(self, conn: Connection, flush_interval: float) -> None:
        self._conn = conn
        self._flush_interval = flush_interval
        self._send_lock = threading.Lock()
        self._task_running = threading.Event()
        self._task_id: str | None = None
        self._items: deque[Any] = deque()
        self._progress_error: str | None = None
        threading.Thread(target=self._flush_forever, name="progress-flusher", daemon=True).start()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self._conn.send(message)

    def begin(self, task_id: str) -> None:
        with self._send_lock:
            self._task_id = task_id
            self._items.clear()
            self._progress_error = None
            self._conn.send(("started", task_id))
        self._task_running.set()

    def report(self, item: Any) -> None:
        if self._progress_error is not None:
            raise TypeError(self._progress_error)
        self._items.append(item)

    def finish(self, outcome: tuple[Any, ...]) -> None:
        """Flush what is left, then send the task's outcome."""
        self._task_running.clear()
        with self._send_lock:
            self._flush_locked()
            if self._progress_error is not None and outcome[0] in ("succeeded", "failed"):
                outcome = (
                    "failed",
                    outcome[1],
                    Failure.PROGRESS_UNPICKLABLE.value,
                    self._progress_error,
                )
            self._conn.send(outcome)
            self._task_id = None
            self._items.clear()  # anything a thread the task left behind reported since

    def _flush_forever(self) -> None:
        try:
            while True:
                self._task_running.wait()
                time.sleep(self._flush_interval)
                with self._send_lock:
                    self._flush_locked()
        except OSError:
            return  # the parent is gone; the task thread notices on its next send

    def _flush_locked(self) -> None:
        if not self._items or self._task_id is None:
            return
        # only this side pops (under the send lock) while report() appends: no item is lost
        items = [self._items.popleft() for _ in range(len(self._items))]
        try:
            blob = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self._progress_error = f"a reported progress item cannot be pickled: {describe(exc)}"
            return
        self._conn.send(("progress", self._task_id, blob))


def _exit_when_orphaned(parent_pid: int) -> None:
    """Exit as soon as the parent is gone (even SIGKILLed): the worker is then re-parented."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(70)


def _run_task(
    channel: _Channel, task_id: str, blob: bytes, should_stop: Callable[[], bool]
) -> tuple[Any, ...]:
    try:
        task = pickle.loads(blob)
    except Exception as exc:
        detail = f"the task could not be rebuilt in the worker: {type(exc).__name__}: "
        return ("failed", task_id, Failure.TASK_UNPICKLABLE.value, detail + describe(exc))
    del blob  # the only other reference to the task's bytes: free them while it runs
    channel.begin(task_id)
    try:
        result = task.run(channel.report, should_stop)
    except BaseException as exc:  # SystemExit too: the worker outlives any one task
        if should_stop():
            return ("stopped", task_id)
        return ("failed", task_id, failure_of(exc).value, describe(exc))
    if should_stop():
        return ("stopped", task_id)  # the parent decides what a stopped task means; skip pickling
    try:
        return ("succeeded", task_id, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        detail = f"the task's result cannot be pickled: {type(exc).__name__}: {describe(exc)}"
        return ("failed", task_id, Failure.RESULT_UNPICKLABLE.value, detail)


def worker_main(
    conn: Connection, stop_flag: Any, preload: Sequence[str], flush_interval: float
) -> None:
    """Run tasks the parent sends over `conn` until it says stop or goes away.

    `stop_flag` is a shared `ctypes.c_int` (multiprocessing RawValue); `preload` names modules to
    import before reporting ready, so the first task starts warm.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; parent decides
    threading.Thread(
        target=_exit_when_orphaned, args=(os.getppid(),), name="orphan-watch", daemon=True
    ).start()
    for module_name in preload:
        importlib.import_module(module_name)

    channel = _Channel(conn, flush_interval)

    def should_stop() -> bool:
        return stop_flag.value != 0  # one read of shared memory

    try:
        channel.send(("ready", os.getpid()))
        while True:
            message = conn.recv()
            if message[0] != "run":
                return
            task_id: str = message[1]
            outcome = _run_task(channel, task_id, conn.recv_bytes(), should_stop)
            channel.finish(outcome)
    except (EOFError, OSError):
        return  # the parent closed its end or died
