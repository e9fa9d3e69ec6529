"""The errors the service raises, as a typed tree; `service.api.problems` is the one place that
turns them (and every other exception) into RFC 9457 `application/problem+json` responses.

    ServiceError              carries status and a client-facing detail
    ├── MalformedRequest      400  the body is not parseable (bad JSON, bad CSV encoding)
    ├── Unauthorized          401  no API key, or a wrong one (WWW-Authenticate: Bearer)
    ├── NotFound              404  an id in the path names nothing
    ├── Conflict              409  the resource is in a state that forbids the request
    ├── PayloadTooLarge       413  the body exceeds max_request_bytes
    ├── UnsupportedMediaType  415  a Content-Type the route does not take
    ├── InvalidRequest        422  well-formed but unacceptable; `errors` names the fields
    │   └── LimitExceeded     422  a deployment limit (layers, units, epochs, work, points)
    ├── TooManyJobs           429  the job queue, or the key's share of it, is full (Retry-After)
    ├── RateLimited           429  the key sent more requests than its rate (Retry-After)
    ├── NotReady              503  the training workers are not up yet (Retry-After)
    └── InsufficientStorage   507  max_stored_bytes reached, or the disk refused the write
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

PROBLEM_BASE = "https://scratchnet.dev/problems/"


class ValidationIssue(BaseModel):
    """One thing wrong with a request: where, what, and a machine-readable kind."""

    loc: list[str | int] = Field(
        description="Path to the offending value: where it came from ('body', 'query', "
        "'path', 'header') then field names and list indices.",
        examples=[["body", "hyperparameters", "learning_rate"]],
    )
    msg: str = Field(
        description="What is wrong, in words.", examples=["Input should be greater than 0"]
    )
    type: str = Field(description="Kind of error.", examples=["greater_than"])


class Problem(BaseModel):
    """An RFC 9457 problem detail: every error response has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "https://scratchnet.dev/problems/not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "dataset ds_0123456789abcdef does not exist",
                }
            ]
        }
    )

    type: str = Field(description="URI naming the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong in this case and what to do about it.")
    errors: list[ValidationIssue] | None = Field(
        default=None,
        description="On every 422: each invalid value with its location (one entry locating "
        "the body, or the path, when the problem is not in one field).",
    )


class ServiceError(Exception):
    """An error with a status, a problem type and a client-facing detail."""

    status = 500
    slug = "internal-error"
    title = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[ValidationIssue] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})


class MalformedRequest(ServiceError):
    status, slug, title = 400, "malformed-request", "Malformed request"


class Unauthorized(ServiceError):
    status, slug, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ServiceError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ServiceError):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ServiceError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(ServiceError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class InvalidRequest(ServiceError):
    status, slug, title = 422, "invalid-request", "Invalid request"

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str, kind: str = "value_error") -> InvalidRequest:
        """One invalid value at `loc`; the detail repeats the message with the field name."""
        where = ".".join(str(part) for part in loc[1:]) or str(loc[0])
        return cls(f"{where}: {msg}", errors=[ValidationIssue(loc=list(loc), msg=msg, type=kind)])


class LimitExceeded(InvalidRequest):
    status, slug, title = 422, "limit-exceeded", "Limit exceeded"


class TooManyJobs(ServiceError):
    status, slug, title = 429, "queue-full", "Too many queued jobs"


class RateLimited(ServiceError):
    status, slug, title = 429, "rate-limited", "Too many requests"


class NotReady(ServiceError):
    status, slug, title = 503, "not-ready", "Service not ready"


class InsufficientStorage(ServiceError):
    status, slug, title = 507, "insufficient-storage", "Insufficient storage"
