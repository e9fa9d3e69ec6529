"""What the executor tests share: a listener that records events, and a bounded wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from service.execution.executor import (
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)

WAIT_SECONDS = 30.0
TERMINAL = (TaskSucceeded, TaskFailed, TaskCancelled)


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
