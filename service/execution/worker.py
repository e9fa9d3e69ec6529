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

`Channel` and `run_task` are the part of this loop that does not know the pipe: the Dask worker
(`service.execution.dask_worker`) runs tasks with them too, so both executors report a task's
progress and outcome with the same messages.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
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


Message = tuple[Any, ...]


class Channel:
    """Sends a task's messages from the task thread and the flusher thread, one at a time.

    `send` delivers one message (down the pipe, or as a Dask event). `report` only appends to a
    deque (atomic, no lock): the flusher thread sends what has accumulated as one message every
    `flush_interval` seconds while a task runs, and `end` sends the rest and returns the task's
    outcome for the caller to deliver.
    """

    def __init__(self, send: Callable[[Message], None], flush_interval: float) -> None:
        self._send = send
        self._flush_interval = flush_interval
        self._send_lock = threading.Lock()
        self._task_running = threading.Event()
        self._task_id: str | None = None
        self._items: deque[Any] = deque()
        self._progress_error: str | None = None
        threading.Thread(target=self._flush_forever, name="progress-flusher", daemon=True).start()

    def send(self, message: Message) -> None:
        with self._send_lock:
            self._send(message)

    def begin(self, task_id: str) -> None:
        with self._send_lock:
            self._task_id = task_id
            self._items.clear()
            self._progress_error = None
            self._send(("started", task_id))
        self._task_running.set()

    def report(self, item: Any) -> None:
        if self._progress_error is not None:
            raise TypeError(self._progress_error)
        self._items.append(item)

    def end(self, outcome: Message) -> Message:
        """Flush what is left; returns the task's outcome (a progress item that could not be
        pickled turns it into that failure). Nothing of this task is sent after it."""
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
            self._task_id = None
            self._items.clear()  # anything a thread the task left behind reported since
        return outcome

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
        self._send(("progress", self._task_id, blob))


def _exit_when_orphaned(parent_pid: int) -> None:
    """Exit as soon as the parent is gone (even SIGKILLed): the worker is then re-parented."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(70)


class _Unpickler(pickle.Unpickler):
    """Rebuilds a task whose shared values were pickled as references (see `run_task`)."""

    def __init__(self, blob: bytes, shared: Mapping[str, Any]) -> None:
        super().__init__(io.BytesIO(blob))
        self._shared = shared

    def persistent_load(self, pid: Any) -> Any:
        return self._shared[pid]


def run_task(
    channel: Channel,
    task_id: str,
    blob: bytes,
    should_stop: Callable[[], bool],
    shared: Mapping[str, Any] | None = None,
) -> Message:
    """Rebuild the task from `blob`, run it, and return its outcome message. `shared` resolves
    the persistent ids a task was pickled with (values sent once and shared by many tasks)."""
    try:
        task = pickle.loads(blob) if shared is None else _Unpickler(blob, shared).load()
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

    channel = Channel(conn.send, flush_interval)

    def should_stop() -> bool:
        return stop_flag.value != 0  # one read of shared memory

    try:
        channel.send(("ready", os.getpid()))
        while True:
            message = conn.recv()
            if message[0] != "run":
                return
            task_id: str = message[1]
            outcome = run_task(channel, task_id, conn.recv_bytes(), should_stop)
            channel.send(channel.end(outcome))
    except (EOFError, OSError):
        return  # the parent closed its end or died
