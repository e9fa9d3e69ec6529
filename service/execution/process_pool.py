"""The local executor: persistent worker processes on this machine, one supervisor thread.

    submit() ─► waiting (FIFO) ─► supervisor ─► idle worker ──pipe──► service.worker.worker_main
                                      ▲                                       │
    listener ◄── events (in order) ───┴───── messages, process sentinels ◄────┘

Every worker has its own duplex pipe and a shared stop flag. The supervisor thread is the only
one that talks to the workers: it waits on every pipe, every process sentinel and a wake-up
socket at once, so a finished task, a progress batch or a dead worker is noticed immediately.
Every event goes through one outbox drained by the supervisor, so the listener is only ever
called from that thread, outside the lock, and the events of one task keep their order.

Stopping a running task (cancel, deadline, shutdown) sets the worker's flag; a worker that has
not finished `cancel_grace_seconds` later is SIGKILLed and replaced. A task that ends in any way
after its flag was set ends as the reason says (TaskCancelled, or TaskFailed "timeout"), so a
cancelled task's result is never reported.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from service.execution.executor import (
    ENDINGS,
    EventListener,
    Executor,
    Failure,
    Outbox,
    Phase,
    QueueFull,
    StopCause,
    Task,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    check_options,
    check_start,
    check_submission,
    deadline_at,
    ending_of,
    event_of,
    mean_seconds,
    retry_after_seconds,
    supervise,
)
from service.execution.worker import describe, worker_main

logger = logging.getLogger("scratchnet.executor")

KILL_AFTER_TERMINATE_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 30.0
MAX_MESSAGES_PER_WAKE = 64


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    stop_flag: Any  # ctypes.c_int in shared memory; the worker's should_stop() reads it
    ready: bool = False
    conn_open: bool = True
    stop_sent: bool = False
    terminated: bool = False
    killed: bool = False
    # the task it runs, if any
    task_id: str | None = None
    dispatched_at: float = 0.0
    deadline_seconds: float | None = None
    stop_reason: StopCause | None = None
    kill_at: float | None = None

    @property
    def pid(self) -> int:
        assert self.process.pid is not None  # started before it is stored
        return self.process.pid

    @property
    def takes_work(self) -> bool:
        return self.ready and self.task_id is None and self.conn_open and not self.killed


@dataclass(frozen=True)
class _Waiting:
    task: Task
    deadline_seconds: float | None


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class LocalProcessExecutor(Executor):
    """Runs tasks in `workers` persistent worker processes; at most `max_queued` wait for one.

    `mp_context`: "spawn" or "forkserver" (never "fork": the parent runs threads).
    `cancel_grace_seconds`: how long a running task may take to honour its stop flag before its
    worker is killed and replaced. `preload`: modules each worker imports before it reports
    ready. `progress_interval_seconds`: how often a worker flushes reported items.
    """

    def __init__(
        self,
        workers: int,
        max_queued: int,
        *,
        mp_context: str = "spawn",
        cancel_grace_seconds: float = 5.0,
        preload: Sequence[str] = ("numpy", "engine"),
        start_timeout_seconds: float = 60.0,
        progress_interval_seconds: float = 0.05,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        check_options(max_queued, cancel_grace_seconds)
        if mp_context not in ("spawn", "forkserver"):
            raise ValueError(
                f"mp_context must be 'spawn' or 'forkserver', got {mp_context!r}: "
                "forking a parent that runs threads can deadlock the child"
            )
        self._context: Any = multiprocessing.get_context(mp_context)
        self._worker_count = workers
        self._max_queued = max_queued
        self._grace = cancel_grace_seconds
        self._preload = tuple(preload)
        self._start_timeout = start_timeout_seconds
        self._progress_interval = progress_interval_seconds

        self._lock = threading.Lock()
        self._phase = Phase.NEW
        self._waiting: OrderedDict[str, _Waiting] = OrderedDict()
        self._workers: list[_Worker] = []
        self._restarts_due: list[float] = []
        self._failed_starts = 0  # consecutive workers that died before reporting ready
        self._outbox = Outbox(self._lock)
        self._started = threading.Event()
        self._start_error: str | None = None
        self._closing_since = 0.0
        self._mean_task_seconds = 1.0
        self._spawned = 0
        self._supervisor: threading.Thread | None = None
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None

    # ---- the Executor interface -------------------------------------------------------------

    def start(self, listener: EventListener) -> None:
        with self._lock:
            check_start(self._phase)
            self._phase = Phase.STARTING
            self._outbox.listener = listener
            self._wake_reader, self._wake_writer = socket.socketpair()
            self._wake_reader.setblocking(False)
            self._wake_writer.setblocking(False)
        try:
            for _ in range(self._worker_count):
                worker = self._spawn_worker()
                with self._lock:
                    self._workers.append(worker)
        except Exception as exc:
            self._start_error = f"a worker process could not be started: {describe(exc)}"
        self._supervisor = threading.Thread(
            target=self._supervise, name="scratchnet-executor", daemon=True
        )
        self._supervisor.start()
        ready_in_time = self._start_error is None and self._started.wait(self._start_timeout)
        with self._lock:
            if not ready_in_time and self._start_error is None:
                self._start_error = f"the workers were not ready within {self._start_timeout} s"
            if self._start_error is None and self._phase is Phase.STARTING:
                self._phase = Phase.RUNNING
                logger.info("executor ready: %d workers %s", self._worker_count, self._pids())
                return
        self.shutdown()
        raise RuntimeError(f"the executor could not start: {self._start_error}")

    def submit(self, task_id: str, task: Task, *, deadline_seconds: float | None = None) -> None:
        with self._lock:
            held = task_id in self._waiting or any(w.task_id == task_id for w in self._workers)
            check_submission(self._phase, task_id, held, deadline_seconds)
            # tasks an idle worker is about to take are not waiting: this one waits only if
            # no idle worker is left for it
            idle = sum(1 for w in self._workers if w.takes_work)
            waiting = max(0, len(self._waiting) - idle)
            if len(self._waiting) + 1 > idle and waiting >= self._max_queued:
                raise QueueFull(
                    waiting,
                    retry_after_seconds(self._mean_task_seconds, waiting, self._worker_count),
                )
            self._waiting[task_id] = _Waiting(task, deadline_seconds)
            self._wake()

    def cancel(self, task_id: str) -> bool:
        with self._lock:
            if self._waiting.pop(task_id, None) is not None:
                self._outbox.append(TaskCancelled(task_id))
                self._wake()
                return True
            for worker in self._workers:
                if worker.task_id == task_id:
                    if worker.stop_reason is None:
                        self._request_stop(worker, StopCause.CANCEL, time.monotonic())
                    return True
            return False

    def shutdown(self) -> None:
        with self._lock:
            if self._phase is Phase.NEW:
                self._phase = Phase.CLOSED
                return
            if self._phase in (Phase.STARTING, Phase.RUNNING):
                self._phase = Phase.CLOSING
                self._closing_since = time.monotonic()
                for task_id in self._waiting:
                    self._outbox.append(TaskCancelled(task_id))
                self._waiting.clear()
                self._restarts_due.clear()
                for worker in self._workers:
                    worker.stop_flag.value = 1
                    if worker.task_id is not None:
                        self._outbox.append(TaskCancelled(worker.task_id))
                        worker.task_id = None
                        worker.stop_reason = StopCause.SHUTDOWN
                self._wake()
            supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()

    @property
    def ready(self) -> bool:
        with self._lock:
            return (
                self._phase is Phase.RUNNING
                and len(self._workers) == self._worker_count
                and all(w.ready and not w.killed for w in self._workers)
            )

    @property
    def worker_count(self) -> int:
        return self._worker_count

    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes alive now, starting ones included."""
        with self._lock:
            return self._pids()

    def counts(self) -> dict[str, int]:
        with self._lock:
            running = sum(1 for w in self._workers if w.task_id is not None)
            return {"queued": len(self._waiting), "running": running}

    # ---- helpers callers may hold the lock for ----------------------------------------------

    def _pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def _wake(self) -> None:
        if self._wake_writer is None:
            return
        with contextlib.suppress(OSError):  # full: a wake-up is already pending
            self._wake_writer.send(b"\0")

    @staticmethod
    def _deadline_at(worker: _Worker) -> float | None:
        started = worker.dispatched_at if worker.task_id is not None else None
        return deadline_at(started, worker.stop_reason, worker.deadline_seconds)

    def _request_stop(self, worker: _Worker, reason: StopCause, now: float) -> None:
        worker.stop_reason = reason
        worker.stop_flag.value = 1
        worker.kill_at = now + self._grace
        self._wake()

    def _finish(self, worker: _Worker, event: TaskEvent) -> None:
        """End the worker's task with `event`, or as its stop reason says if it was stopped."""
        task_id = worker.task_id
        assert task_id is not None
        event = ending_of(event, worker.stop_reason, worker.deadline_seconds)
        elapsed = time.monotonic() - worker.dispatched_at
        self._mean_task_seconds = mean_seconds(self._mean_task_seconds, elapsed)
        worker.task_id = None
        worker.stop_reason = None
        worker.kill_at = None
        worker.deadline_seconds = None
        self._outbox.append(event)

    # ---- the supervisor thread --------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            supervise(self._supervise_once, self._abandon, self._outbox)
        finally:
            with self._lock:
                self._phase = Phase.CLOSED
                for sock in (self._wake_reader, self._wake_writer):
                    if sock is not None:
                        sock.close()
                self._wake_reader = self._wake_writer = None
                if self._start_error is None and not self._started.is_set():
                    self._start_error = "the executor was shut down while starting"
            self._started.set()

    def _supervise_once(self) -> bool:
        """One round: dispatch, deliver events, wait for anything, react. False when done."""
        self._dispatch()
        self._send_stops()
        self._outbox.deliver()
        with self._lock:
            if self._phase is Phase.CLOSING and not self._workers:
                return False
            assert self._wake_reader is not None
            conns = {w.conn: w for w in self._workers if w.conn_open}
            sentinels = {w.process.sentinel: w for w in self._workers}
            timeout = self._seconds_to_next_timer(time.monotonic())
            waitables: list[Any] = [self._wake_reader, *conns, *sentinels]
        ready = set(wait(waitables, timeout))
        if self._wake_reader in ready:
            self._drain_wake_socket()
        for conn, worker in conns.items():
            if conn in ready:
                self._read_messages(worker)
        for sentinel, worker in sentinels.items():
            if sentinel in ready:
                self._reap(worker)
        self._run_timers(time.monotonic())
        return True

    def _drain_wake_socket(self) -> None:
        assert self._wake_reader is not None
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _dispatch(self) -> None:
        """Hand waiting tasks, oldest first, to idle workers."""
        while True:
            with self._lock:
                if self._phase is not Phase.RUNNING or not self._waiting:
                    return
                worker = next((w for w in self._workers if w.takes_work), None)
                if worker is None:
                    return
                task_id, waiting = self._waiting.popitem(last=False)
                worker.task_id = task_id
                worker.dispatched_at = time.monotonic()
                worker.deadline_seconds = waiting.deadline_seconds
                worker.stop_reason = None
                worker.kill_at = None
                worker.stop_flag.value = 0
            try:
                blob = pickle.dumps(waiting.task, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                detail = f"the task cannot be pickled: {type(exc).__name__}: {describe(exc)}"
                with self._lock:
                    if worker.task_id == task_id:
                        self._finish(worker, TaskFailed(task_id, Failure.TASK_UNPICKLABLE, detail))
                continue
            try:
                worker.conn.send(("run", task_id))
                worker.conn.send_bytes(blob)
            except OSError:
                # The worker is gone (its sentinel will say so) and never saw the task:
                # put it back at the head of the queue.
                logger.warning("could not hand task %s to worker %d", task_id, worker.pid)
                with self._lock:
                    worker.conn_open = False
                    if worker.task_id == task_id:
                        if worker.stop_reason is None:
                            worker.task_id = None
                            self._waiting[task_id] = waiting
                            self._waiting.move_to_end(task_id, last=False)
                        else:
                            self._finish(worker, TaskCancelled(task_id))
            del blob

    def _send_stops(self) -> None:
        with self._lock:
            if self._phase is not Phase.CLOSING:
                return
            unsent = [w for w in self._workers if w.conn_open and not w.stop_sent]
            for worker in unsent:
                worker.stop_sent = True
        for worker in unsent:
            try:
                worker.conn.send(("stop",))
            except OSError:
                worker.conn_open = False

    def _read_messages(self, worker: _Worker, limit: int | None = MAX_MESSAGES_PER_WAKE) -> None:
        """Handle what the worker sent, up to `limit` messages (poll() is true at end of file)."""
        handled = 0
        try:
            while (limit is None or handled < limit) and worker.conn.poll():
                self._handle(worker, worker.conn.recv())
                handled += 1
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            worker.conn_open = False
            if worker.process.exitcode is None and not isinstance(exc, EOFError):
                logger.error("worker %d's pipe broke (%s); killing it", worker.pid, exc)
                worker.process.kill()
                worker.killed = True

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        # unpickle the task's own objects before taking the lock: they may import modules
        decoded: Any = None
        if kind in ("progress", "succeeded"):
            try:
                decoded = pickle.loads(message[2])
            except Exception as exc:
                detail = (
                    f"cannot be unpickled by the service: {type(exc).__name__}: {describe(exc)}"
                )
                if kind == "progress":
                    logger.error("dropped progress of task %s: it %s", message[1], detail)
                    return
                message = (
                    "failed",
                    message[1],
                    Failure.RESULT_UNPICKLABLE.value,
                    "the task's result " + detail,
                )
                kind = "failed"
        with self._lock:
            if kind == "ready":
                self._on_ready(worker)
                return
            task_id = message[1]
            if task_id is None or task_id != worker.task_id:
                return  # a task already ended (reported cancelled at shutdown, say)
            if kind in ("started", "progress"):
                self._outbox.append(event_of(task_id, message, decoded, worker.pid))
            elif kind in ENDINGS:
                self._finish(worker, event_of(task_id, message, decoded))

    def _on_ready(self, worker: _Worker) -> None:
        worker.ready = True
        self._failed_starts = 0
        logger.debug("worker %d ready", worker.pid)
        if self._phase is Phase.STARTING and all(w.ready for w in self._workers):
            self._started.set()

    def _reap(self, worker: _Worker) -> None:
        """The worker's process exited: end its task, replace it."""
        if worker.conn_open:
            self._read_messages(worker, limit=None)  # all it managed to send first
        worker.process.join()
        exitcode = worker.process.exitcode
        now = time.monotonic()
        with self._lock:
            self._workers.remove(worker)
            if worker.task_id is not None:
                detail = f"worker process {worker.pid} exited ({_exit_description(exitcode)})"
                self._finish(worker, TaskFailed(worker.task_id, Failure.WORKER_LOST, detail))
            if self._phase is Phase.STARTING and not worker.ready:
                self._start_error = (
                    f"worker {worker.pid} exited while starting ({_exit_description(exitcode)})"
                )
                self._started.set()
            elif self._phase in (Phase.STARTING, Phase.RUNNING):
                delay = 0.0
                if not worker.ready:
                    self._failed_starts += 1
                    delay = min(MAX_RESTART_DELAY_SECONDS, 0.5 * 2**self._failed_starts)
                    logger.error(
                        "worker %d exited while starting (%s); next attempt in %.1f s",
                        worker.pid,
                        _exit_description(exitcode),
                        delay,
                    )
                elif not worker.killed:
                    logger.warning(
                        "worker %d exited unexpectedly (%s); starting a replacement",
                        worker.pid,
                        _exit_description(exitcode),
                    )
                self._restarts_due.append(now + delay)
        worker.conn.close()
        worker.process.close()

    def _seconds_to_next_timer(self, now: float) -> float | None:
        moments = list(self._restarts_due)
        for worker in self._workers:
            due = self._deadline_at(worker)
            if due is not None:
                moments.append(due)
            if worker.kill_at is not None and not worker.killed:
                moments.append(worker.kill_at)
        if self._phase is Phase.CLOSING:
            moments.append(self._closing_since + self._grace)
            moments.append(self._closing_since + self._grace + KILL_AFTER_TERMINATE_SECONDS)
        if not moments:
            return None
        return max(0.0, min(moments) - now)

    def _run_timers(self, now: float) -> None:
        with self._lock:
            for worker in self._workers:
                deadline = self._deadline_at(worker)
                if deadline is not None and now >= deadline:
                    logger.info(
                        "task %s exceeded its %g s deadline",
                        worker.task_id,
                        worker.deadline_seconds,
                    )
                    self._request_stop(worker, StopCause.TIMEOUT, now)
                if worker.kill_at is not None and now >= worker.kill_at and not worker.killed:
                    logger.warning(
                        "worker %d did not stop task %s within %g s; killing it",
                        worker.pid,
                        worker.task_id,
                        self._grace,
                    )
                    worker.process.kill()
                    worker.killed = True
            if self._phase is Phase.CLOSING:
                self._escalate_shutdown(now)
            due = [moment for moment in self._restarts_due if moment <= now]
            self._restarts_due = [moment for moment in self._restarts_due if moment > now]
        for _ in due:
            self._replace_worker()

    def _escalate_shutdown(self, now: float) -> None:
        if now >= self._closing_since + self._grace:
            for worker in self._workers:
                if not worker.terminated:
                    logger.warning("worker %d did not stop when asked; terminating it", worker.pid)
                    worker.process.terminate()
                    worker.terminated = True
        if now >= self._closing_since + self._grace + KILL_AFTER_TERMINATE_SECONDS:
            for worker in self._workers:
                if not worker.killed:
                    logger.warning("worker %d survived SIGTERM; killing it", worker.pid)
                    worker.process.kill()
                    worker.killed = True

    def _replace_worker(self) -> None:
        try:
            worker = self._spawn_worker()
        except Exception:
            logger.exception("could not start a replacement worker; retrying")
            with self._lock:
                self._failed_starts += 1
                delay = min(MAX_RESTART_DELAY_SECONDS, 0.5 * 2**self._failed_starts)
                self._restarts_due.append(time.monotonic() + delay)
            return
        with self._lock:
            self._workers.append(worker)
            if self._phase is Phase.CLOSING:
                worker.stop_flag.value = 1  # shutdown began while it was spawning
        logger.info("started replacement worker %d", worker.pid)

    def _spawn_worker(self) -> _Worker:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        stop_flag = self._context.RawValue("i", 0)
        self._spawned += 1
        process = self._context.Process(
            target=worker_main,
            args=(child_conn, stop_flag, self._preload, self._progress_interval),
            name=f"scratchnet-worker-{self._spawned}",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()  # the child holds its own copy now
        return _Worker(process=process, conn=parent_conn, stop_flag=stop_flag)

    def _abandon(self) -> None:
        """After a supervisor failure: fail every held task and kill every worker."""
        with self._lock:
            self._phase = Phase.CLOSING
            if self._start_error is None and not self._started.is_set():
                self._start_error = "the executor's supervisor failed"
            detail = "the executor stopped unexpectedly"
            for task_id in self._waiting:
                self._outbox.append(TaskFailed(task_id, Failure.WORKER_LOST, detail))
            self._waiting.clear()
            workers, self._workers = self._workers, []
            for worker in workers:
                if worker.task_id is not None:
                    self._outbox.append(TaskFailed(worker.task_id, Failure.WORKER_LOST, detail))
                    worker.task_id = None
        for worker in workers:
            worker.process.kill()
            worker.process.join()
            worker.conn.close()
            worker.process.close()
