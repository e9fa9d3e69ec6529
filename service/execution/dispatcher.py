"""The dispatcher: the one owner of the executor.

Every kind of training work (jobs, sweeps) submits its tasks here with the handler that wants
their events; the dispatcher starts and stops the executor and hands each event to the handler
its task was submitted with, so no kind of work knows another and nothing routes by id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.execution.executor import (
    EventListener,
    Executor,
    Task,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskSucceeded,
)

logger = logging.getLogger("service.dispatcher")

ENDING_EVENTS = (TaskSucceeded, TaskFailed, TaskCancelled)


class Dispatcher:
    """Starts, feeds and stops one executor; routes each task's events to its handler."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.started = False  # the workers came up
        self.start_error: str | None = None  # why they did not
        self.closing = False  # close() was called: event streams end, no new work
        self._handlers: dict[str, EventListener] = {}
        self._on_close: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the executor's workers (blocking: call from a thread)."""
        try:
            self.executor.start(self._route)
        except Exception as exc:
            self.start_error = str(exc)
            raise
        self.started = True

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
        """Run the closing callbacks, then stop the workers (blocking: call from a thread)."""
        self.closing = True
        for callback in self._on_close:
            callback()
        self.executor.shutdown()

    def submit(
        self, task_id: str, task: Task, handler: EventListener, deadline_seconds: float | None
    ) -> None:
        """Queue `task`; its events go to `handler` (from the executor's thread). Raises what
        the executor raises (QueueFull; RuntimeError while it is not running)."""
        with self._lock:
            self._handlers[task_id] = handler
        try:
            self.executor.submit(task_id, task, deadline_seconds=deadline_seconds)
        except BaseException:
            with self._lock:
                self._handlers.pop(task_id, None)
            raise

    def cancel(self, task_id: str) -> bool:
        return self.executor.cancel(task_id)

    def counts(self) -> dict[str, int]:
        """{"queued": n, "running": n} (zeros until started)."""
        if not self.started:
            return {"queued": 0, "running": 0}
        counts = self.executor.counts()
        return {"queued": counts.get("queued", 0), "running": counts.get("running", 0)}

    def worker_pids(self) -> list[int]:
        return self.executor.worker_pids() if self.started else []

    def _route(self, event: TaskEvent) -> None:
        with self._lock:
            if isinstance(event, ENDING_EVENTS):
                handler = self._handlers.pop(event.task_id, None)
            else:
                handler = self._handlers.get(event.task_id)
        if handler is None:
            logger.warning("an event for unknown task %s: %r", event.task_id, event)
            return
        try:
            handler(event)
        except Exception:  # never let bookkeeping kill the executor's thread
            logger.exception("could not apply %r", event)
