"""Where training runs: the executor interface the service talks to.

The service hands an executor a `Task` (a picklable object with a `run` method) under an id; the
executor runs it somewhere else — worker processes on this machine
(`service.execution.process_pool`) or the workers of a Dask cluster
(`service.execution.dask_executor`) — and reports what happens as
events to one listener (in the service, `service.execution.dispatcher.Dispatcher`):

    TaskStarted     a worker picked the task up
    TaskProgress    items the task reported while running (batched)
    TaskSucceeded   run() returned; `result` is its return value
    TaskFailed      run() raised, the worker died, or the deadline passed (`kind`: a Failure)
    TaskCancelled   cancel() was honoured (queued: at once; running: within one epoch)

Exactly one of the last three ends every submitted task, and nothing follows it.
"""

from __future__ import annotations

import abc
import enum
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import InvalidInput, TrainingCancelled, TrainingDiverged

logger = logging.getLogger("scratchnet.executor")


class Task(Protocol):
    """Work to run in a worker. Must be picklable; `run` executes in the worker process."""

    def run(self, report: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        """Do the work, calling `report(item)` for progress and polling `should_stop()` often."""
        ...


@dataclass(frozen=True)
class TaskStarted:
    """A worker picked the task up; `worker_pid` is the process that runs it."""

    task_id: str
    worker_pid: int


@dataclass(frozen=True)
class TaskProgress:
    """What the task reported since the last one (`report(item)`'s items, in order)."""

    task_id: str
    items: list[Any]


@dataclass(frozen=True)
class TaskSucceeded:
    """run() returned `result`; nothing of the task follows."""

    task_id: str
    result: Any


class Failure(enum.Enum):
    """Why a task (or one configuration of a sweep task) failed."""

    DIVERGED = "diverged"  # the engine's TrainingDiverged
    INVALID_INPUT = "invalid_input"  # the engine's InvalidInput
    CANCELLED = "cancelled"  # the engine's TrainingCancelled: it honoured a stop request
    TIMEOUT = "timeout"  # the executor stopped it at its deadline
    WORKER_LOST = "worker_lost"  # the process running it died
    TASK_UNPICKLABLE = "task_unpicklable"  # a value could not cross to or from the worker
    RESULT_UNPICKLABLE = "result_unpicklable"
    PROGRESS_UNPICKLABLE = "progress_unpicklable"
    INTERNAL = "internal"  # any other exception: its detail is not for clients


_RAISED: tuple[tuple[type[BaseException], Failure], ...] = (
    (TrainingDiverged, Failure.DIVERGED),
    (InvalidInput, Failure.INVALID_INPUT),
    (TrainingCancelled, Failure.CANCELLED),
)


def failure_of(exc: BaseException) -> Failure:
    """The Failure an exception raised by a task stands for."""
    return next((kind for raised, kind in _RAISED if isinstance(exc, raised)), Failure.INTERNAL)


@dataclass(frozen=True)
class TaskFailed:
    """`kind` says why; `detail` is the message (an INTERNAL failure's is for the log only)."""

    task_id: str
    kind: Failure
    detail: str


@dataclass(frozen=True)
class TaskCancelled:
    """cancel() was honoured; nothing of the task follows (a result it returned is dropped)."""

    task_id: str


TaskEvent = TaskStarted | TaskProgress | TaskSucceeded | TaskFailed | TaskCancelled
EventListener = Callable[[TaskEvent], None]


class QueueFull(Exception):
    """The executor holds as many waiting tasks as it may; try again later."""

    def __init__(self, queued: int, retry_after_seconds: int) -> None:
        self.queued = queued
        self.retry_after_seconds = retry_after_seconds
        super().__init__(f"{queued} tasks are already waiting")


class Phase(enum.Enum):
    """An executor's life: new -> starting -> running -> closing -> closed."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class StopCause(enum.Enum):
    """Why an executor asked a running task to stop."""

    CANCEL = "cancel"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"


def ending_of(
    event: TaskEvent, reason: StopCause | None, deadline_seconds: float | None
) -> TaskEvent:
    """How a task ends: as `event` says, unless it was asked to stop; then, however it ended,
    as the reason says (a cancelled task's result is never reported)."""
    if reason is StopCause.CANCEL:
        return TaskCancelled(event.task_id)
    if reason is StopCause.TIMEOUT:
        detail = f"the task exceeded the {deadline_seconds:g} s limit"
        return TaskFailed(event.task_id, Failure.TIMEOUT, detail)
    return event


# The worker protocol's messages (`service.execution.worker`) that end a task.
ENDINGS = ("succeeded", "failed", "stopped")


def event_of(
    task_id: str, message: tuple[Any, ...], decoded: Any = None, worker_pid: int = 0
) -> TaskEvent:
    """The event a worker's message about task `task_id` stands for, in either executor:
    `decoded` is the unpickled payload of a progress or succeeded message, `worker_pid` the
    process that sent a started one."""
    kind = message[0]
    if kind == "started":
        return TaskStarted(task_id, worker_pid)
    if kind == "progress":
        return TaskProgress(task_id, decoded)
    if kind == "succeeded":
        return TaskSucceeded(task_id, decoded)
    if kind == "failed":
        return TaskFailed(task_id, Failure(message[2]), message[3])
    return TaskCancelled(task_id)  # stopped


def deadline_at(
    started_at: float | None, stop_reason: StopCause | None, deadline_seconds: float | None
) -> float | None:
    """When a task's deadline passes (monotonic seconds); None while it is not running, once it
    was asked to stop, or without a deadline."""
    if started_at is None or stop_reason is not None or deadline_seconds is None:
        return None
    return started_at + deadline_seconds


def check_start(phase: Phase) -> None:
    """RuntimeError unless the executor is new: an executor starts once."""
    if phase is not Phase.NEW:
        raise RuntimeError(f"the executor cannot start: it is {phase.value}")


def mean_seconds(mean: float, elapsed: float) -> float:
    """The running mean of task times that Retry-After estimates from (recent tasks weigh most)."""
    return 0.8 * mean + 0.2 * elapsed


def check_options(max_queued: int, cancel_grace_seconds: float) -> None:
    """ValueError for option values no executor can work with."""
    if max_queued < 0:
        raise ValueError(f"max_queued must be >= 0, got {max_queued}")
    if not cancel_grace_seconds > 0:
        raise ValueError(f"cancel_grace_seconds must be > 0, got {cancel_grace_seconds}")


def check_submission(
    phase: Phase, task_id: str, held: bool, deadline_seconds: float | None
) -> None:
    """What submit() refuses before queueing: a bad deadline (ValueError), an executor that is
    not running (RuntimeError), a task id it already holds (ValueError)."""
    if deadline_seconds is not None and not deadline_seconds > 0:
        raise ValueError(f"deadline_seconds must be > 0, got {deadline_seconds}")
    if phase is not Phase.RUNNING:
        raise RuntimeError(f"the executor takes no tasks: it is {phase.value}")
    if held:
        raise ValueError(f"task id {task_id!r} is already queued or running")


class Outbox:
    """The events an executor owes its listener, in order: appended under the executor's
    `lock` from any thread, delivered by one thread outside it (so the listener may call the
    executor back)."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._events: deque[TaskEvent] = deque()
        self.listener: EventListener | None = None  # set by start(), before any event

    def append(self, event: TaskEvent) -> None:
        """Queue an event (the caller holds the lock)."""
        self._events.append(event)

    def __bool__(self) -> bool:
        return bool(self._events)

    def deliver(self) -> None:
        """Hand every queued event to the listener; one that raises is logged and skipped."""
        while True:
            with self._lock:
                if not self._events:
                    return
                event = self._events.popleft()
                listener = self.listener
            assert listener is not None
            try:
                listener(event)
            except Exception:
                logger.exception("the executor's listener raised on %r", event)


def supervise(once: Callable[[], bool], abandon: Callable[[], None], outbox: Outbox) -> None:
    """An executor's supervisor thread: `once` until it answers False. Should it raise, the
    failure is logged and `abandon` ends every task the executor holds (under its lock); the
    events owed are delivered either way."""
    try:
        while once():
            pass
    except Exception:
        logger.exception("the executor's supervisor failed; ending every task it held")
        abandon()
    finally:
        outbox.deliver()


def retry_after_seconds(mean_task_seconds: float, waiting: int, workers: int) -> int:
    """When a refused task may try again: the waiting tasks (and it) shared among the workers at
    the mean task time seen so far, between 1 s and an hour."""
    estimate = mean_task_seconds * (waiting + 1) / max(1, workers)
    return max(1, min(3600, math.ceil(estimate)))


@dataclass(frozen=True)
class WorkerInfo:
    """One worker of a cluster, as an executor sees it."""

    name: str  # the worker's address, e.g. tcp://10.0.0.5:40123
    pid: int
    resources: dict[str, float]  # e.g. {"train": 1.0}


class Executor(abc.ABC):
    """Runs tasks away from the event loop and reports their events to `listener`.

    The listener is called from the executor's own thread(s); it must be quick and thread-safe.
    """

    @abc.abstractmethod
    def start(self, listener: EventListener) -> None:
        """Start the workers; returns once they are ready to take tasks."""

    @abc.abstractmethod
    def submit(self, task_id: str, task: Task, *, deadline_seconds: float | None = None) -> None:
        """Queue a task. Raises QueueFull when the waiting queue is at its limit."""

    @abc.abstractmethod
    def cancel(self, task_id: str) -> bool:
        """Ask a queued or running task to stop; False if the executor does not hold it."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop the workers; tasks still held are reported as cancelled."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True while every worker is up and the executor takes tasks."""

    @property
    @abc.abstractmethod
    def worker_count(self) -> int: ...

    @abc.abstractmethod
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for operations and tests)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """{"queued": n, "running": n}."""

    def not_ready_reason(self) -> str | None:
        """Why the executor is not ready, when it knows (for /readyz); None otherwise."""
        return None

    def cluster(self) -> list[WorkerInfo] | None:
        """The workers of the cluster training runs on; None for workers on this machine."""
        return None
