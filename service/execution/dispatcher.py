"""The dispatcher: the one owner of the executor, and the fair queue in front of it.

Every kind of training work (jobs, sweeps) submits its tasks here with the handler that wants
their events and the key (owner) they run for; the dispatcher starts and stops the executor and
hands each event to the handler its task was submitted with, so no kind of work knows another
and nothing routes by id.

Fairness. The executor is given at most `worker_count` tasks at a time: the rest wait here, one
queue per owner, and a free worker takes the next task of the next owner in turn (round robin).
One key's hundred queued jobs make another key's single job wait for one task, not a hundred. At
most `max_queued` tasks wait; one more raises QueueFull with an estimate of the wait.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from service.execution.executor import (
    EventListener,
    Executor,
    QueueFull,
    Task,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)

logger = logging.getLogger("service.dispatcher")

ENDING_EVENTS = (TaskSucceeded, TaskFailed, TaskCancelled)
# What a task is taken to last before any has finished, for the first Retry-After estimates.
FIRST_TASK_SECONDS = 1.0
# Owners whose last turn is remembered; past it the half served longest ago are forgotten
# (they then count as never served, which only moves them forward once).
MAX_OWNERS_REMEMBERED = 10_000


@dataclass(frozen=True)
class _Pending:
    task_id: str
    task: Task
    deadline_seconds: float | None


class Dispatcher:
    """Starts, feeds and stops one executor; routes each task's events to its handler."""

    def __init__(self, executor: Executor, max_queued: int) -> None:
        self.executor = executor
        self.max_queued = max_queued
        self.started = False  # the workers came up
        self.start_error: str | None = None  # why they did not
        self.closing = False  # close() was called: event streams end, no new work
        self._handlers: dict[str, EventListener] = {}
        self._on_close: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._waiting: OrderedDict[str | None, deque[_Pending]] = OrderedDict()  # owner -> FIFO
        self._owner_of: dict[str, str | None] = {}  # waiting task -> owner
        self._in_executor: dict[str, float] = {}  # task -> when it was handed over
        self._mean_seconds = FIRST_TASK_SECONDS
        self._served: dict[str | None, int] = {}  # owner -> the turn it was last served in
        self._turn = 0

    def start(self) -> None:
        """Start the executor's workers (blocking: call from a thread)."""
        try:
            self.executor.start(self._route)
        except Exception as exc:
            self.start_error = str(exc)
            raise
        self.started = True
        self._pump()

    @property
    def ready(self) -> bool:
        return self.started and self.executor.ready

    def not_ready_reason(self) -> str:
        """Why the dispatcher is not ready, for operators."""
        if self.start_error is not None:
            return f"the training workers did not start: {self.start_error}"
        return self.executor.not_ready_reason() or "the training workers are not all up"

    def when_closing(self, callback: Callable[[], None]) -> None:
        """Call `callback` first thing in close() (to end event streams)."""
        self._on_close.append(callback)

    def close(self) -> None:
        """Run the closing callbacks, cancel what waits here, then stop the workers (blocking:
        call from a thread)."""
        self.closing = True
        for callback in self._on_close:
            callback()
        with self._lock:
            waiting = [p.task_id for queue in self._waiting.values() for p in queue]
        for task_id in waiting:
            self.cancel(task_id)
        self.executor.shutdown()

    def submit(
        self,
        task_id: str,
        task: Task,
        handler: EventListener,
        deadline_seconds: float | None,
        *,
        owner: str | None = None,
        bounded: bool = True,
    ) -> None:
        """Queue `task` for `owner`; its events go to `handler` (from the executor's thread).
        Raises QueueFull when `bounded` and max_queued tasks wait already, RuntimeError while
        the executor is not running (and what the executor raises)."""
        with self._lock:
            if self.closing:
                raise RuntimeError("the executor takes no tasks: it is closing")
            waiting = len(self._owner_of)
            free = len(self._in_executor) < self.executor.worker_count and not waiting
            if bounded and not free and waiting >= self.max_queued:
                raise QueueFull(waiting, self._retry_after(waiting))
            self._handlers[task_id] = handler
            self._waiting.setdefault(owner, deque()).append(
                _Pending(task_id, task, deadline_seconds)
            )
            self._owner_of[task_id] = owner
        self._pump(submitting=task_id)

    def _retry_after(self, waiting: int) -> int:
        workers = max(1, self.executor.worker_count)
        return max(1, math.ceil(self._mean_seconds * (waiting + 1) / workers))

    def _next(self) -> _Pending | None:
        """The oldest task of the waiting owner served longest ago (or never)."""
        if not self._waiting:
            return None
        owner = min(self._waiting, key=lambda o: self._served.get(o, -1))
        queue = self._waiting[owner]
        pending = queue.popleft()
        if not queue:
            del self._waiting[owner]
        del self._owner_of[pending.task_id]
        self._turn += 1
        self._served[owner] = self._turn
        if len(self._served) > MAX_OWNERS_REMEMBERED:  # forget the owners served longest ago
            for old in sorted(self._served, key=self._served.__getitem__)[: len(self._served) // 2]:
                del self._served[old]
        return pending

    def _pump(self, submitting: str | None = None) -> None:
        """Hand waiting tasks to the executor while it has a free worker. What the executor
        raises for the task being submitted (`submitting`) is raised to its submitter; any
        other task it refuses ends cancelled."""
        while True:
            with self._lock:
                if not self.started or len(self._in_executor) >= self.executor.worker_count:
                    return
                pending = self._next()
                if pending is None:
                    return
                self._in_executor[pending.task_id] = time.monotonic()
            try:
                self.executor.submit(
                    pending.task_id, pending.task, deadline_seconds=pending.deadline_seconds
                )
            except Exception as exc:  # the executor is stopping, or refused it
                with self._lock:
                    self._in_executor.pop(pending.task_id, None)
                    handler = self._handlers.pop(pending.task_id, None)
                if pending.task_id == submitting:
                    raise
                logger.warning("could not hand %s to the executor: %s", pending.task_id, exc)
                if handler is not None:
                    handler(TaskCancelled(pending.task_id))

    def cancel(self, task_id: str) -> bool:
        """Cancel a task waiting here (TaskCancelled at once) or ask the executor to."""
        with self._lock:
            waiting = task_id in self._owner_of
            handler = None
            if waiting:
                owner = self._owner_of.pop(task_id)
                queue = self._waiting[owner]
                queue.remove(next(p for p in queue if p.task_id == task_id))
                if not queue:
                    del self._waiting[owner]
                handler = self._handlers.pop(task_id, None)
        if not waiting:
            return self.executor.cancel(task_id)
        if handler is not None:
            handler(TaskCancelled(task_id))
        return True

    def counts(self) -> dict[str, int]:
        """{"queued": n, "running": n} (zeros until started): queued counts what waits here and
        in the executor."""
        with self._lock:
            waiting = len(self._owner_of)
        if not self.started:
            return {"queued": waiting, "running": 0}
        counts = self.executor.counts()
        return {
            "queued": waiting + counts.get("queued", 0),
            "running": counts.get("running", 0),
        }

    def worker_pids(self) -> list[int]:
        return self.executor.worker_pids() if self.started else []

    def _route(self, event: TaskEvent) -> None:
        ended = isinstance(event, ENDING_EVENTS)
        with self._lock:
            if ended:
                handler = self._handlers.pop(event.task_id, None)
                handed_at = self._in_executor.pop(event.task_id, None)
                if handed_at is not None and isinstance(event, TaskSucceeded | TaskFailed):
                    seconds = time.monotonic() - handed_at
                    self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * seconds
            else:
                handler = self._handlers.get(event.task_id)
        if handler is None:
            if not isinstance(event, TaskStarted):
                logger.warning("an event for unknown task %s: %r", event.task_id, event)
        else:
            try:
                handler(event)
            except Exception:  # never let bookkeeping kill the executor's thread
                logger.exception("could not apply %r", event)
        if ended:
            self._pump()
