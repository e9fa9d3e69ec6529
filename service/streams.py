"""Event-stream plumbing shared by jobs and sweeps: subscribers of a resource, woken from any
thread (the executor's included) on their own event loops."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

Item = TypeVar("Item")

# Time an event stream gets to end by itself (cleanly) once the server is shutting down.
SHUTDOWN_GRACE_SECONDS = 2.0


class Waiter:
    """Wakes one subscriber's event loop when its resource changes (callable from any thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        # a closed loop raises RuntimeError: nobody is listening any more
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.event.set)


async def first_of(*events: asyncio.Event | anyio.Event) -> None:
    """Return as soon as any of `events` is set."""
    async with anyio.create_task_group() as group:

        async def wait(event: asyncio.Event | anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)


class Subscribers:
    """The waiters following each resource id, guarded by `lock` (the registry's)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._waiters: dict[str, set[Waiter]] = {}

    def wake(self, resource_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(resource_id, ()))
        for waiter in waiters:
            waiter.wake()

    def wake_all(self) -> None:
        with self._lock:
            waiters = [w for group in self._waiters.values() for w in group]
        for waiter in waiters:
            waiter.wake()

    def count(self) -> int:
        """Event streams following a resource now."""
        with self._lock:
            return sum(len(group) for group in self._waiters.values())

    async def follow(
        self,
        resource_id: str,
        step: Callable[[], tuple[list[Item], bool]],
        stopping: anyio.Event,
        closing: Callable[[], bool],
    ) -> AsyncIterator[Item]:
        """Yield the items `step` returns (what is new since its last call, and whether the
        resource has finished), again each time the resource is woken; end once it has
        finished, `closing()` is true (the service is closing) or `stopping` is set (the server
        is shutting down)."""
        waiter = Waiter()
        with self._lock:
            self._waiters.setdefault(resource_id, set()).add(waiter)
        try:
            while True:
                waiter.event.clear()
                items, finished = step()
                for item in items:
                    yield item
                if finished or closing() or stopping.is_set():
                    return
                await first_of(waiter.event, stopping)
        finally:
            with self._lock:
                group = self._waiters.get(resource_id)
                if group is not None:
                    group.discard(waiter)
                    if not group:
                        del self._waiters[resource_id]


# One event of a stream, as OpenAPI 3.2 describes server-sent events (`itemSchema`; FastAPI
# writes its own event streams the same way): `data` is a JSON document, comments (pings) are
# not events.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def event_stream_200(description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI 200 entry of an event-stream route: the schema of each event."""
    return {
        200: {
            "content": {"text/event-stream": {"itemSchema": SSE_EVENT_SCHEMA}},
            "description": description,
        }
    }


def event_stream_response(
    events: Callable[[anyio.Event], AsyncIterator[ServerSentEvent]], ping_seconds: float
) -> EventSourceResponse:
    """Server-sent `events(stopping)`: what is recorded already, then live events; `stopping`
    is set by EventSourceResponse when the server shuts down."""
    stopping = anyio.Event()
    return EventSourceResponse(
        events(stopping),
        ping=ping_seconds,
        shutdown_event=stopping,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
