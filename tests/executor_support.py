"""What the executor tests share: a listener that records events, a bounded wait, and an
executor under test that checks every task it was given ended properly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from service.execution.executor import (
    Executor,
    Task,
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)

WAIT_SECONDS = 30.0
TERMINAL = (TaskSucceeded, TaskFailed, TaskCancelled)
E = TypeVar("E", bound=Executor)


class Recorder:
    """An executor's listener: keeps every event and lets the test wait for one."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: TaskEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self.events.clear()

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
                    name = getattr(kind, "__name__", "ending event")
                    raise AssertionError(f"no {name} for {task_id}: {self.events}")
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


class PoolUnderTest(Generic[E]):
    """A started executor (the local pool, the Dask executor), its recorder, and the ids of the
    tasks a test submitted to it."""

    def __init__(self, pool: E, recorder: Recorder) -> None:
        self.pool = pool
        self.recorder = recorder
        self.submitted: list[str] = []

    def submit(self, task_id: str, task: Task, deadline_seconds: float | None = None) -> None:
        self.pool.submit(task_id, task, deadline_seconds=deadline_seconds)
        self.submitted.append(task_id)

    def run(self, task_id: str, task: Task) -> TaskEvent:
        self.submit(task_id, task)
        return self.recorder.terminal(task_id)

    def settle(self) -> None:
        """Cancel what the test left running or waiting; check every task ended properly."""
        for task_id in self.submitted:
            self.pool.cancel(task_id)
        for task_id in self.submitted:
            self.recorder.terminal(task_id)
        self.recorder.assert_well_formed()
