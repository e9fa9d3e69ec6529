"""What /v1 predictions and the Open Inference Protocol's /v2 share: finding the model a name
gives (an id or an alias), the predict_max_points limit, the overflow check, and where the
arithmetic runs (on the event loop when small, else in a thread under request_timeout_seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio.to_thread
import numpy as np
from fastapi import Request

from engine.errors import deadline
from engine.model import Label, Model
from service.api.auth import Caller
from service.api.deps import StateDep, loaded, seen
from service.errors import InvalidRequest, LimitExceeded, UnsupportedMediaType
from service.state.records import ModelContent, ModelRecord

# Predictions up to this many multiply-adds (points x parameters) run on the event loop: a few
# microseconds of NumPy, cheaper than a hop to a thread.
INLINE_PREDICT_WORK = 50_000
# Request bodies up to this size are parsed on the event loop; larger ones in a thread.
INLINE_PARSE_BYTES = 32 * 1024

T = TypeVar("T")


def media_type(request: Request) -> str:
    """The Content-Type without parameters, lower case ('' when there is none)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def accept_json(request: Request, also: tuple[str, ...], what: str) -> None:
    """UnsupportedMediaType (415) unless the body is application/json (or `also`, or has no
    Content-Type)."""
    content_type = media_type(request)
    if content_type not in ("application/json", "", *also):
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not accepted; send {what} as application/json"
        )


async def parsed(parse: Callable[[bytes], T], raw: bytes) -> T:
    """`parse(raw)`: on the event loop for a small body, in a thread for a large one (parsing
    megabytes of JSON would stall the event loop)."""
    if len(raw) <= INLINE_PARSE_BYTES:
        return parse(raw)
    return await anyio.to_thread.run_sync(parse, raw)


def require_model(state: StateDep, model_id: str, caller: Caller) -> ModelRecord:
    """The model `model_id` names for this caller: its id, or one of the caller's aliases;
    NotFound (404) otherwise, and for a model of another key."""
    return seen(state.store.find_model(model_id, caller), "model", model_id, caller)


def require_weights(state: StateDep, model_id: str) -> ModelContent:
    return loaded(state.store.models.content(model_id), "model", model_id)


def check_point_count(state: StateDep, count: int, loc: list[str | int]) -> None:
    """LimitExceeded (422) past predict_max_points."""
    limit = state.settings.predict_max_points
    if count > limit:
        raise LimitExceeded.at(
            loc,
            f"{count} points exceed predict_max_points = {limit}; split the request",
            "limit_exceeded",
        )


def plain(label: Any) -> Label:
    """A class label as JSON carries it (a NumPy scalar becomes a Python one)."""
    value: Label = label.item() if isinstance(label, np.generic) else label
    return value


def probabilities(model: Model, points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Class probabilities (n_points, n_classes), or a regression model's predicted values
    (n_points, n_targets); InvalidRequest (422) naming the first point whose values are so
    large that the network's arithmetic overflows."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught just below
        # (n_points, n_targets) or (n_points, n_classes)
        predict = model.predict_values if model.regression else model.predict_proba
        result = predict(points)
    if not np.isfinite(result).all():
        index = int(np.argmin(np.isfinite(result).all(axis=1)))
        what = "predicted values" if model.regression else "class probabilities"
        raise InvalidRequest.at(
            ["body", "points", index],
            f"point {index} is too large for this model: its {what} are not "
            "finite numbers; send values on the scale of the training data",
            "not_finite_output",
        )
    return result


def classified(
    model: Model, points: Sequence[Sequence[float]] | np.ndarray
) -> tuple[np.ndarray, list[Label]]:
    """The class probabilities (n_points, n_classes) and each point's most probable label."""
    result = probabilities(model, points)  # (n_points, n_classes)
    classes = [plain(c) for c in model.classes]
    return result, [classes[i] for i in result.argmax(axis=1).tolist()]


async def predicted(
    state: StateDep,
    record: ModelRecord,
    n_points: int,
    answer: Callable[[Model], T],
) -> T:
    """`answer(model)` for the record's model: on the event loop when the work is small, else
    in a thread, abandoned past request_timeout_seconds (DeadlinePassed: 503)."""
    model = require_weights(state, record.id).model
    if n_points * record.n_parameters <= INLINE_PREDICT_WORK:
        return answer(model)
    with deadline(state.settings.request_timeout_seconds):  # the thread copies the context
        return await anyio.to_thread.run_sync(answer, model)
