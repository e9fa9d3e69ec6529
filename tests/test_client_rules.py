"""The rules the two clients share, on real httpx responses and event-stream text: which
answers are retried and after how long, how Retry-After reads, how events are decoded, and
how an error answer becomes an exception."""

from __future__ import annotations

import importlib.util
import io
import json

import httpx
import pytest
from rich.console import Console

import scratchnet
from scratchnet._base import BaseClient, EventDecoder, StreamEvent, StreamReader, job_stream
from scratchnet.errors import api_error, parse_retry_after
from scratchnet.progress import interactive
from scratchnet.types import JobPublic, ProgressEvent


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1:8000/v1/jobs")
    return httpx.Response(status, headers=headers, content=body, request=request)


@pytest.mark.parametrize(
    ("status", "retry_after", "attempt", "expected"),
    [
        (429, "2", 0, 2.0),
        (503, "1", 2, 1.0),
        (429, "120", 0, 30.0),  # capped at max_retry_wait
        (429, "2", 3, None),  # max_retries spent
        (429, None, 0, None),  # no advice: not retried
        (503, "Wed, 21 Oct 2026 07:28:00 GMT", 0, None),  # a date is not a delay we trust
        (500, "1", 0, None),
        (422, "1", 0, None),
        (202, None, 0, None),
    ],
)
def test_which_answers_are_retried(
    status: int, retry_after: str | None, attempt: int, expected: float | None
) -> None:
    client = BaseClient("http://127.0.0.1:8000", max_retries=3, max_retry_wait=30.0)
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    assert client._retry_delay(answer(status, headers), attempt) == expected


def test_retry_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_retries must be >= 0, got -1"):
        BaseClient(max_retries=-1)
    assert parse_retry_after(" 3 ") == 3.0 and parse_retry_after("-1") is None


def test_error_answers_become_the_exception_of_their_status() -> None:
    problem = {
        "type": "https://scratchnet.dev/problems/queue-full",
        "title": "Too many queued jobs",
        "status": 429,
        "detail": "16 jobs are already waiting",
    }
    headers = {"content-type": "application/problem+json", "Retry-After": "4"}
    error = api_error(answer(429, headers, json.dumps(problem).encode()))
    assert isinstance(error, scratchnet.TooManyRequests) and error.retry_after == 4.0
    assert (error.status, error.title, error.errors) == (429, "Too many queued jobs", [])
    assert str(error) == "429 Too many queued jobs: 16 jobs are already waiting"
    # not a problem document (a proxy's page): the status line stands in for it
    proxy = api_error(answer(502, {"content-type": "text/html"}, b"<h1>Bad gateway</h1>"))
    assert isinstance(proxy, scratchnet.ServerError) and proxy.type == "about:blank"
    assert proxy.status == 502 and "Bad gateway" in proxy.detail
    assert isinstance(api_error(answer(503)), scratchnet.ServiceUnavailable)
    assert type(api_error(answer(418))) is scratchnet.APIError


def test_event_stream_decoding() -> None:
    decoder = EventDecoder()
    lines = [
        ": ping",
        "event: progress",
        "id: 20",
        'data: {"a":',
        "data: 1}",
        "",
        "",
        "data: x",
        "",
    ]
    events = [event for line in lines if (event := decoder.feed(line)) is not None]
    assert events == [
        StreamEvent("progress", '{"a":\n1}', "20"),
        StreamEvent("message", "x", None),
    ]


def test_a_stream_reader_resumes_after_the_last_event_and_gives_up_in_time() -> None:
    reader = StreamReader(job_stream("job_1"), since=0, max_reconnects=2)
    point = {"job_id": "job_1", "epoch": 20, "train_loss": 0.5, "train_accuracy": 0.8,
             "test_loss": None, "test_accuracy": None, "learning_rate": 0.01}  # fmt: skip
    for line in ["event: progress", "id: 20", "data: " + json.dumps(point)]:
        assert reader.feed(line) is None
    parsed = reader.feed("")
    assert isinstance(parsed, ProgressEvent) and parsed.epoch == 20
    assert reader.since == 20 and not reader.finished
    assert reader.reconnect_delay(None) == 0.5 and reader.reconnect_delay(None) == 1.0
    with pytest.raises(scratchnet.ConnectionFailed, match="ended before its final event"):
        reader.reconnect_delay(None)
    assert JobPublic in job_stream("job_1").models.values()


def test_where_a_progress_bar_shows() -> None:
    assert interactive(Console(file=io.StringIO(), force_terminal=True))
    assert not interactive(Console(file=io.StringIO()))  # a file or a pipe
    widgets = importlib.util.find_spec("ipywidgets") is not None
    assert interactive(Console(file=io.StringIO(), force_jupyter=True)) is widgets
