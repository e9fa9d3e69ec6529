"""Logs: one JSON object a line (SCRATCHNET_LOG_FORMAT=json, the default) or plain text lines.

Every log line, the service's own and uvicorn's, goes through one structlog formatter on the
standard library's root handler, with `time` (ISO 8601, UTC), `level`, `logger` and, inside a
request, its `request_id`. The service writes one line per request and one per transition of a
job or sweep:

    {"event": "request", "method": "GET", "route": "/v1/jobs/{job_id}", "status": 200,
     "duration_ms": 1.9, "key": "alice", "request_id": "…", "level": "INFO", ...}
    {"event": "work", "kind": "job", "id": "job_…", "from": "running", "to": "succeeded",
     "reason": "completed", ...}

`route` is the path template, never the raw path; `key` is the API key's name, never the key.
The request id is the client's `X-Request-ID` (letters, digits, `.`, `_`, `-`; at most 128)
or a new one, and is returned in the response's `X-Request-ID`.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from typing import Any

import structlog
from asgi_correlation_id import CorrelationIdMiddleware, correlation_id

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _request_id(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    request_id = correlation_id.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def _upper_level(_logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["level"] = str(event.get("level", method)).upper()
    return event


def configure(log_format: str, level: str) -> None:
    """Route every log record through structlog's formatter, as JSON or as text."""
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        _upper_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        _request_id,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []  # propagate to the root handler
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    """A structlog logger: `log.info("event", key=value, ...)`."""
    return structlog.stdlib.get_logger(name)


def request_id_middleware() -> dict[str, Any]:
    """The options of asgi-correlation-id's middleware for X-Request-ID."""
    return {
        "header_name": REQUEST_ID_HEADER,
        "generator": lambda: uuid.uuid4().hex,
        "validator": lambda value: REQUEST_ID.fullmatch(value) is not None,
        "transformer": lambda value: value,
    }


__all__ = ["CorrelationIdMiddleware", "configure", "get_logger", "request_id_middleware"]
