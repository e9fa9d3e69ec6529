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
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import InvalidInput, TrainingCancelled, TrainingDiverged


class Task(Protocol):
    """Work to run in a worker. Must be picklable; `run` executes in the worker process."""

    def run(self, report: Callable[[Any], None], should_stop: Callable[[], bool]) -> Any:
        """Do the work, calling `report(item)` for progress and polling `should_stop()` often."""
        ...


@dataclass(frozen=True)
class TaskStarted:
    task_id: str
    worker_pid: int


@dataclass(frozen=True)
class TaskProgress:
    task_id: str
    items: list[Any]


@dataclass(frozen=True)
class TaskSucceeded:
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
    task_id: str


TaskEvent = TaskStarted | TaskProgress | TaskSucceeded | TaskFailed | TaskCancelled
EventListener = Callable[[TaskEvent], None]


class QueueFull(Exception):
    """The executor holds as many waiting tasks as it may; try again later."""

    def __init__(self, queued: int, retry_after_seconds: int) -> None:
        self.queued = queued
        self.retry_after_seconds = retry_after_seconds
        super().__init__(f"{queued} tasks are already waiting")


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
