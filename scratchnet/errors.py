"""Exceptions the client raises. Every answer of the service that is an error becomes an
`APIError` carrying its RFC 9457 problem document (`status`, `type`, `title`, `detail`,
`errors`):

    ScratchnetError               anything this package raises on purpose
    ├── ConnectionFailed          the service could not be reached (or the connection broke)
    ├── APIError                  the service answered with an error status
    │   ├── BadRequest            400  the body could not be parsed
    │   ├── NotFound              404  an id names nothing
    │   ├── Conflict              409  the resource's state forbids the request
    │   ├── PayloadTooLarge       413  the body is larger than the service accepts
    │   ├── UnsupportedMediaType  415  a content type the route does not take
    │   ├── InvalidRequest        422  well-formed but unacceptable; `errors` names the fields
    │   │                              (also a ValueError)
    │   ├── TooManyRequests       429  the job queue stayed full through every retry
    │   └── ServerError           5xx  the service failed
    │       └── ServiceUnavailable 503 the workers stayed down through every retry
    └── TrainingNotSucceeded      a job or sweep ended without succeeding (`resource` is it)
        ├── TrainingFailed        it failed (`resource.error` says why for a job)
        └── TrainingCancelled     it was cancelled
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from scratchnet.types import Problem, ValidationIssue

if TYPE_CHECKING:
    from scratchnet.types import JobPublic, SweepPublic

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ScratchnetError(Exception):
    """Base of every exception this package raises on purpose."""


class ConnectionFailed(ScratchnetError):
    """The service could not be reached, or the connection broke before an answer: nothing
    was answered, so nothing is known to have changed."""


class APIError(ScratchnetError):
    """The service answered with an error status; the attributes are its problem document."""

    def __init__(self, problem: Problem, response: httpx.Response) -> None:
        super().__init__(f"{problem.status} {problem.title}: {problem.detail}")
        self.problem = problem
        self.response = response

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self.problem.status

    @property
    def type(self) -> str:
        """URI naming the kind of problem."""
        return self.problem.type

    @property
    def title(self) -> str:
        """Short summary of the kind of problem."""
        return self.problem.title

    @property
    def detail(self) -> str:
        """What went wrong in this case and what to do about it."""
        return self.problem.detail

    @property
    def errors(self) -> list[ValidationIssue]:
        """Each invalid value with its location (every 422 has at least one)."""
        return list(self.problem.errors or ())


class BadRequest(APIError):
    """400: the request body could not be parsed (bad JSON, a CSV that is not UTF-8)."""


class NotFound(APIError):
    """404: an id in the path names nothing."""


class Conflict(APIError):
    """409: the resource is in a state that forbids the request (cancelling a finished job,
    deleting a dataset a job trains on)."""


class PayloadTooLarge(APIError):
    """413: the body exceeds the service's max_request_bytes."""


class UnsupportedMediaType(APIError):
    """415: the body's Content-Type is not one the route takes."""


class InvalidRequest(APIError, ValueError):
    """422: well-formed but unacceptable (an option out of bounds, a deployment limit, an
    unknown dataset); `errors` locates each offending value. Also a ValueError, as Python's
    own bad-value errors are (scikit-learn expects one from an estimator's bad parameters)."""


class TooManyRequests(APIError):
    """429: the job queue was still full after the client's retries; `retry_after` is the
    service's last advice, in seconds."""

    @property
    def retry_after(self) -> float | None:
        """Seconds the service asked to wait (None when it did not say)."""
        return parse_retry_after(self.response.headers.get("Retry-After"))


class ServerError(APIError):
    """5xx: the service failed to answer the request."""


class ServiceUnavailable(ServerError):
    """503: the training workers were still not up after the client's retries."""

    @property
    def retry_after(self) -> float | None:
        """Seconds the service asked to wait (None when it did not say)."""
        return parse_retry_after(self.response.headers.get("Retry-After"))


class TrainingNotSucceeded(ScratchnetError):
    """A job or sweep the client waited for ended without succeeding."""

    def __init__(self, resource: JobPublic | SweepPublic) -> None:
        error = getattr(resource, "error", None)
        reason = f": {error.type}: {error.detail}" if error is not None else ""
        super().__init__(f"{resource.id} {resource.status}{reason}")
        self.resource = resource


class TrainingFailed(TrainingNotSucceeded):
    """The job or sweep failed; a job's `resource.error` says why and what to do."""


class TrainingCancelled(TrainingNotSucceeded):
    """The job or sweep was cancelled before it finished."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidRequest,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: the delay-seconds form (an HTTP date counts as unknown)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def api_error(response: httpx.Response) -> APIError:
    """The exception for an error response: its problem document, or one made from the status
    line when the body is not one (a proxy's HTML page, say)."""
    problem: Problem | None = None
    if response.headers.get("content-type", "").startswith(PROBLEM_MEDIA_TYPE):
        try:
            problem = Problem.model_validate_json(response.content)
        except ValueError:
            problem = None
    if problem is None:
        problem = Problem(
            type="about:blank",
            title=response.reason_phrase or "Error",
            status=response.status_code,
            detail=response.text[:500] or response.reason_phrase or "no detail",
        )
    status = response.status_code
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    return cls(problem, response)
