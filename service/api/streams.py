"""Server-sent event responses of the job and sweep event routes, and their OpenAPI entry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from service.settings import Settings
from service.state.callers import Caller
from service.state.lifecycle import Lifecycle, Snapshot

# Time an event stream gets to end by itself (cleanly) once the server is shutting down.
SHUTDOWN_GRACE_SECONDS = 2.0

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


def since_query(entries: str) -> Any:
    """The `since` query parameter (default None) of an event route whose cursor counts
    `entries`."""
    return Query(None, ge=0, description=f"Replay only {entries} > since.")


def last_event_id_header(cursor: str) -> Any:
    """The `Last-Event-ID` header (default None) of an event route whose event ids are
    `cursor`s."""
    return Header(
        None,
        alias="Last-Event-ID",
        ge=0,
        description=f"Resume after this {cursor} (sent by browsers on reconnect); "
        "ignored when `since` is given.",
    )


def follow_response(
    lifecycle: Lifecycle[Any, Any, Any],
    record_id: str,
    since: int | None,
    last_event_id: int | None,
    render: Callable[[Snapshot[Any, Any]], list[ServerSentEvent]],
    settings: Settings,
    caller: Caller,
) -> EventSourceResponse:
    """The event stream of a job or sweep: `since` first, else `Last-Event-ID`, else all; 404
    for an unknown id before the stream starts."""
    lifecycle.require(record_id, caller)
    after = since if since is not None else (last_event_id or 0)
    return event_stream_response(
        lambda stopping: lifecycle.follow(record_id, after, render, stopping, caller),
        settings.sse_ping_seconds,
    )
