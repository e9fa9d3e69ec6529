"""The one place that turns exceptions into RFC 9457 `application/problem+json` responses.

A `service.errors.ServiceError` answers its own status, problem type and detail (see the tree
there). Engine errors map as: InvalidInput -> 422 invalid-input, DeadlinePassed -> 503
request-timeout (request_timeout_seconds), ModelFormatError -> 422
invalid-model-file; they name no field, so their one `errors` entry points at the body (the
path for requests without one). FastAPI's request validation -> 422 validation-error (400 for
unparseable JSON, 415 for a body whose Content-Type is not JSON); Starlette's 404/405 keep
their status (405 with Allow). Anything else -> 500 with a generic detail, logged with its
traceback. Every 422 carries `errors`.

The Open Inference Protocol's paths (under /v2) answer the same errors in that protocol's
shape instead: `{"error": "<detail>"}` as application/json, with the same status and headers,
except that a 422 is the protocol's 400 (its clients know no 422). `problem_response` decides,
from the path, for every handler here and for the middleware.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from engine.errors import DeadlinePassed, InvalidInput, ModelFormatError
from service.errors import PROBLEM_BASE, Problem, ServiceError, ValidationIssue

logger = logging.getLogger("service.errors")

BODY_METHODS = ("POST", "PUT", "PATCH")
PROBLEM_MEDIA_TYPE = "application/problem+json"
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PROTOCOL_PREFIX = "/v2"  # the Open Inference Protocol (service.api.routers.inference)


def protocol_path(path: str) -> bool:
    """Whether `path` belongs to the Open Inference Protocol, which has its own error shape."""
    return path == PROTOCOL_PREFIX or path.startswith(PROTOCOL_PREFIX + "/")


# status -> (type slug, title) for statuses raised without a more specific problem type.
_GENERIC: dict[int, tuple[str, str]] = {
    400: ("malformed-request", "Malformed request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Invalid request"),
    429: ("queue-full", "Too many queued jobs"),
    500: ("internal-error", "Internal server error"),
    503: ("not-ready", "Service not ready"),
}


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    errors: Iterable[ValidationIssue] | None = None,
    headers: Mapping[str, str] | None = None,
    path: str = "",
) -> JSONResponse:
    """The error for a request to `path`: problem+json, or the protocol's shape on /v2."""
    if protocol_path(path):
        return JSONResponse(
            {"error": detail}, status_code=400 if status == 422 else status, headers=headers
        )
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = [issue.model_dump() for issue in errors]
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _issues(raw_errors: Sequence[Any]) -> list[ValidationIssue]:
    issues = []
    for error in raw_errors:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        issues.append(ValidationIssue(loc=loc, msg=str(error.get("msg", "")), type=error["type"]))
    return issues


Body = TypeVar("Body", bound=BaseModel)


def parse_json_body(model: type[Body], raw: bytes) -> Body:
    """A body a route reads by hand, validated as `model` by pydantic's own JSON parser (it
    bounds nesting and number size, where `json.loads` recurses or raises on either). Errors
    raise RequestValidationError located under 'body': 400 for bytes that are not JSON, 422
    otherwise, as for the bodies FastAPI parses."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body",)}
            if error["type"] == "json_invalid"
            else {**error, "loc": ("body", *error["loc"])}
            for error in exc.errors()
        ]
        raise RequestValidationError(errors) from None


def validation_problem(raw_errors: Sequence[Any], path: str = "") -> JSONResponse:
    """A 422 for pydantic errors (400 when the body was not valid JSON at all)."""
    for error in raw_errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error") or error.get("msg", "")
            position = error.get("loc", ("body", None))[-1]
            where = f" at character {position}" if isinstance(position, int) else ""
            return problem_response(
                400,
                "malformed-request",
                "Malformed request",
                f"the body is not valid JSON: {reason}{where}",
                path=path,
            )
    issues = _issues(raw_errors)
    detail = "; ".join(
        f"{'.'.join(str(part) for part in issue.loc[1:]) or issue.loc[0]}: {issue.msg}"
        if issue.loc
        else issue.msg
        for issue in issues[:5]
    )
    if len(issues) > 5:
        detail += f"; and {len(issues) - 5} more"
    return problem_response(
        422, "validation-error", "Invalid request", detail, errors=issues, path=path
    )


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    errors = exc.errors
    if errors is None and exc.status == 422:
        errors = _whole_request(request, exc.detail, exc.slug.replace("-", "_"))
    return problem_response(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        errors=errors,
        headers=exc.headers,
        path=request.url.path,
    )


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw_errors = exc.errors()
    if any(_unparsed_body(error) for error in raw_errors):
        given = request.headers.get("content-type")
        return problem_response(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"Content-Type {given!r} is not accepted; send the body as application/json"
            if given
            else "the body has no Content-Type; send it as application/json",
            path=request.url.path,
        )
    return validation_problem(raw_errors, request.url.path)


def _unparsed_body(error: Any) -> bool:
    """FastAPI hands a JSON route its body as raw bytes only when the Content-Type is not
    JSON (parsed JSON never holds bytes): that is a 415, not a malformed object. (A body that
    is not JSON at all also carries its bytes, as json_invalid: a 400.)"""
    return (
        tuple(error.get("loc", ())) == ("body",)
        and isinstance(error.get("input"), bytes)
        and error.get("type") != "json_invalid"
    )


def _whole_request(request: Request, msg: str, kind: str) -> list[ValidationIssue]:
    """The one issue of an error that names no field: the body, or the path without one."""
    where = "body" if request.method in BODY_METHODS else "path"
    return [ValidationIssue(loc=[where], msg=msg, type=kind)]


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def _whole_request_problem(slug: str, detail_of: Callable[[Exception], str]) -> Handler:
    """A handler answering 422 `slug` (titled with it in words; its `errors` entry of that
    kind) for an engine error about the whole request, worded by `detail_of`."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        detail = detail_of(exc)
        return problem_response(
            422,
            slug,
            slug.replace("-", " ").capitalize(),
            detail,
            errors=_whole_request(request, detail, slug.replace("-", "_")),
            path=request.url.path,
        )

    return handle


_invalid_input = _whole_request_problem("invalid-input", str)
_model_format = _whole_request_problem(
    "invalid-model-file", lambda exc: f"not a scratchnet model file: {exc}"
)


async def _deadline_passed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DeadlinePassed)
    return problem_response(
        503,
        "request-timeout",
        "Request took too long",
        f"this request took longer than request_timeout_seconds = {exc.seconds:g} and was "
        "abandoned; ask for fewer points or a smaller picture",
        headers={"Retry-After": "1"},
        path=request.url.path,
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug, title = _GENERIC.get(exc.status_code, ("http-error", "HTTP error"))
    if exc.status_code == 404:
        detail = f"no resource at {request.url.path}"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request)
        headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        detail = (
            f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
        )
        return problem_response(405, slug, title, detail, headers=headers, path=request.url.path)
    else:
        detail = str(exc.detail)
    return problem_response(
        exc.status_code, slug, title, detail, headers=exc.headers, path=request.url.path
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette's Allow names only the first
    route that matched the path)."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500,
        "internal-error",
        "Internal server error",
        "an unexpected error occurred",
        path=request.url.path,
    )


def install(app: FastAPI) -> None:
    """Register every handler on `app`."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(ModelFormatError, _model_format)
    app.add_exception_handler(DeadlinePassed, _deadline_passed)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries declaring the Problem schema for each status (see main.openapi)."""
    descriptions = {
        400: "The body is not valid JSON (or not decodable).",
        401: "No API key, or one this service does not know (when it has keys).",
        404: "No such resource.",
        409: "The resource's state forbids this request.",
        413: "The request body is larger than max_request_bytes.",
        415: "Unsupported Content-Type.",
        422: "The request is well-formed but invalid; `errors` names each field.",
        429: "The job queue (or this key's share of it) is full, or this key sent more "
        "requests than its rate limit; retry after Retry-After seconds.",
        503: "The training workers are not up yet, the service is stopping, or (a prediction, "
        "a picture) the request took longer than request_timeout_seconds.",
        507: "Storing this would pass max_stored_bytes, or the disk refused the write; "
        "nothing was changed.",
    }
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer"},
        }
    }
    return {
        status: {"model": Problem, "description": descriptions[status]}
        | ({"headers": retry_after} if status in (429, 503) else {})
        for status in statuses
    }


LOCATION_HEADER: dict[str, Any] = {
    "Location": {"description": "Path of the resource.", "schema": {"type": "string"}}
}


def answers(
    status: int, description: str, problems: tuple[int, ...], *, location: bool = False
) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: its success `status` (with the Location header when
    `location`), then the problem statuses it can answer."""
    success: dict[str, Any] = {"description": description}
    if location:
        success["headers"] = LOCATION_HEADER
    return {status: success, **problem_responses(*problems)}
