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
from pydantic.json_schema import JsonDict

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


PROBLEM_EXAMPLE: JsonDict = {
    "type": "https://scratchnet.dev/problems/not-found",
    "title": "Not found",
    "status": 404,
    "detail": "dataset ds_0123456789abcdef does not exist",
}


class Problem(BaseModel):
    """An RFC 9457 problem detail: every error response has this shape."""

    model_config = ConfigDict(json_schema_extra={"examples": [PROBLEM_EXAMPLE]})

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

    def __init_subclass__(cls, **kwargs: object) -> None:
        """A subclass that sets no title has its slug in words (`not-found`: "Not found")."""
        super().__init_subclass__(**kwargs)
        if "title" not in cls.__dict__:
            cls.title = cls.slug.replace("-", " ").capitalize()


class MalformedRequest(ServiceError):
    status, slug = 400, "malformed-request"


class Unauthorized(ServiceError):
    status, slug = 401, "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ServiceError):
    status, slug = 404, "not-found"


class Conflict(ServiceError):
    status, slug = 409, "conflict"


class PayloadTooLarge(ServiceError):
    status, slug = 413, "payload-too-large"


class UnsupportedMediaType(ServiceError):
    status, slug = 415, "unsupported-media-type"


class InvalidRequest(ServiceError):
    status, slug = 422, "invalid-request"

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str, kind: str = "value_error") -> InvalidRequest:
        """One invalid value at `loc`; the detail repeats the message with the field name."""
        where = ".".join(str(part) for part in loc[1:]) or str(loc[0])
        return cls(f"{where}: {msg}", errors=[ValidationIssue(loc=list(loc), msg=msg, type=kind)])


class LimitExceeded(InvalidRequest):
    status, slug = 422, "limit-exceeded"


class TooManyJobs(ServiceError):
    status, slug, title = 429, "queue-full", "Too many queued jobs"


class RateLimited(ServiceError):
    status, slug, title = 429, "rate-limited", "Too many requests"


class NotReady(ServiceError):
    status, slug, title = 503, "not-ready", "Service not ready"


class InsufficientStorage(ServiceError):
    status, slug = 507, "insufficient-storage"
