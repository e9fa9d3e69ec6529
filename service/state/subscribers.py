"""Subscribers of a resource (a job, a sweep): event streams woken from any thread (the
executor's included) on their own event loops, when the resource changes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import anyio

Item = TypeVar("Item")


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
    """The waiters following each resource id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
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
