"""What a Dask worker runs for `service.execution.dask_executor.DaskExecutor`.

The service submits `run` with `resources={"train": 1}`; it runs the task in the worker's task
thread with the local worker's `Channel` and `run_task`, so a task reports exactly what it
reports in a local worker process:

    service -> worker   run(task_id, source, blob, keys, *datasets)   (a Dask task)
                        request_stop(task_id)                         (Client.run on its worker)
    worker -> service   events on the scheduler topic TOPIC, each a list
                        [source, worker address, worker pid, *message], message one of
                            ("started", task_id)
                            ("progress", task_id, pickled list of items)
                        and run's return value, the outcome:
                            ("succeeded", task_id, pickled result)
                            ("failed", task_id, failure, detail)         a Failure's value, str
                            ("stopped", task_id)                         a stop was requested

`source` names the executor that submitted the task (several services may share a cluster).
Events are sent with `Worker.log_event`: they travel on the worker's batched stream to the
scheduler, so the last progress batch reaches the service before the outcome does, and sending
one never waits for the network (the scheduler keeps only a topic's last
`distributed.admin.low-level-log-length` events, 1,000 by default). `blob` is the task pickled
with its big arrays (a dataset's split) as persistent ids, `keys`; the arrays themselves arrive
as `datasets`, Dask futures the service scattered once per content, so a worker fetches each
once, not once per task.

`request_stop` adds the task's id to a set in the worker process: `should_stop()` is one set
lookup, no network.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from service.execution.worker import Channel, Message, run_task

TOPIC = "scratchnet"
# A worker keeps the ids of stop requests for tasks it never ran (requested just as they ended)
# up to this many; each is a short string.
MAX_REMEMBERED_STOPS = 10_000

_stops: set[str] = set()
_channels: dict[str, Channel] = {}
_channels_lock = threading.Lock()


def request_stop(task_id: str) -> None:
    """Ask the task `task_id` to stop when this worker runs it (now or later)."""
    if len(_stops) >= MAX_REMEMBERED_STOPS:
        _stops.clear()  # only stale ids: a running task's request is re-sent (see the executor)
    _stops.add(task_id)


def _channel(source: str, flush_interval: float) -> Channel:
    """This process's channel for events of `source`'s tasks (one task at a time per worker:
    the train resource is 1)."""
    from distributed import get_worker

    with _channels_lock:
        channel = _channels.get(source)
        if channel is None:
            worker = get_worker()
            pid = os.getpid()

            def send(message: Message) -> None:
                worker.log_event(TOPIC, [source, worker.address, pid, *message])

            channel = Channel(send, flush_interval)
            _channels[source] = channel
        return channel


def run(
    task_id: str,
    source: str,
    blob: bytes,
    keys: tuple[str, ...],
    flush_interval: float,
    *datasets: Any,
) -> Message:
    """Run one task in this Dask worker; returns its outcome message."""
    channel = _channel(source, flush_interval)
    should_stop: Callable[[], bool] = lambda: task_id in _stops  # noqa: E731
    try:
        outcome = run_task(
            channel, task_id, blob, should_stop, dict(zip(keys, datasets, strict=True))
        )
        return channel.end(outcome)
    finally:
        _stops.discard(task_id)
