"""Pictures (PNG, and GIF animations): rendered in a worker thread (never on the event loop),
kept in a small LRU cache.

Datasets and models never change once created, and a job's snapshot never changes once taken, so
a picture is identified by what it shows: the resource id, the picture kind and its parameters
(for a job: the snapshot epochs drawn). That key is also the ETag.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Annotated, Any, Literal, TypedDict, TypeVar

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from engine import plotting
from engine.errors import deadline
from engine.model import Model
from service.api.problems import problem_responses
from service.errors import Conflict
from service.state.records import DatasetContent
from service.state.store import Store

PNG_MEDIA_TYPE = "image/png"
GIF_MEDIA_TYPE = "image/gif"
CACHE_CONTROL = "private, max-age=3600"
# A running job's latest picture changes with its next snapshot: kept, but asked for again
# (a matching ETag answers 304).
REVALIDATE = "private, no-cache"


Points = tuple[np.ndarray, np.ndarray]  # (n, n_features) values, (n,) class indices

PNG_200: dict[int | str, dict[str, Any]] = {
    200: {"content": {PNG_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
    304: {"description": "Not modified (If-None-Match matched the ETag)."},
}
Width = Annotated[int, Query(ge=plotting.MIN_PIXELS, le=plotting.MAX_PIXELS, description="Pixels.")]
Height = Annotated[
    int, Query(ge=plotting.MIN_PIXELS, le=plotting.MAX_PIXELS, description="Pixels.")
]
LogScale = Annotated[bool, Query(description="Logarithmic loss axis.")]
ShowQuery = Annotated[
    Literal["all", "train", "test", "none"],
    Query(description="Which of the dataset's points to draw over the class regions."),
]


def resolution_query(default: int, description: str, le: int = plotting.MAX_RESOLUTION) -> Any:
    """The `resolution` query parameter of a picture of class regions."""
    return Query(default, ge=plotting.MIN_RESOLUTION, le=le, description=description)


def require_plane(what: str, n_features: int, instead: str = "") -> None:
    """409 unless `what` (a model, a job) has 2 features: what it is, not the request, forbids
    drawing it over the plane; `instead` names a picture that can be drawn."""
    if n_features != 2:
        raise Conflict(
            f"{what} has {n_features} features; decision boundaries are drawn for 2-feature "
            "models only" + (f" ({instead})" if instead else "")
        )


def require_classifier(what: str, task: str, instead: str) -> None:
    """409 when `what` (a model, a job) is a regression: a picture of class regions or of
    units coloured by class; `instead` names what can be drawn."""
    if task == "regression":
        raise Conflict(f"{what} is a regression; this picture is drawn for classifiers ({instead})")


def dataset_points(store: Store, dataset_id: str | None) -> DatasetContent | None:
    """The points of a model's or job's dataset while it exists (None once deleted)."""
    dataset = store.datasets.get(dataset_id) if dataset_id else None
    return store.datasets.content(dataset.id) if dataset is not None else None


class PointArguments(TypedDict):
    X_train: np.ndarray  # (n_train, 2) raw features
    y_train: np.ndarray  # (n_train,) class indices; regression: (n_train, n_targets) raw targets
    X_test: np.ndarray  # (n_test, 2)
    y_test: np.ndarray  # (n_test,)


def point_arguments(dataset: DatasetContent | None) -> PointArguments:
    """X_train, y_train, X_test, y_test of a picture of class regions: the dataset's split
    (none when the dataset is gone)."""
    (X_train, y_train), (X_test, y_test) = split_points(dataset)
    return PointArguments(X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test)


def boundary_png(model: Model, dataset: DatasetContent | None, **options: Any) -> bytes:
    """A model's decision boundary (a regression model's prediction surface) over its
    dataset's points (none without a dataset); `options` are decision_boundary_png's width,
    height, resolution and show."""
    return plotting.decision_boundary_png(model, **point_arguments(dataset), **options)


Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def png_route(
    router: APIRouter,
    path: str,
    summary: str,
    *statuses: int,
    description: str | None = None,
    media_type: str = PNG_MEDIA_TYPE,
) -> Callable[[Endpoint], Endpoint]:
    """Declare a GET route answering a picture, a PNG unless `media_type` says otherwise (200,
    or 304 for a matching ETag), with the problem statuses it can answer; `description`
    describes the 200."""
    ok: dict[str, Any] = {"content": {media_type: PNG_200[200]["content"][PNG_MEDIA_TYPE]}}
    if description is not None:
        ok["description"] = description
    return router.get(
        path,
        response_class=PNGResponse if media_type == PNG_MEDIA_TYPE else GIFResponse,
        summary=summary,
        responses={200: ok, 304: PNG_200[304], **problem_responses(*statuses, 503)},
    )


class PNGResponse(Response):
    media_type = PNG_MEDIA_TYPE


class GIFResponse(Response):
    media_type = GIF_MEDIA_TYPE


class PictureCache:
    """Thread-safe LRU of rendered PNG bytes; size 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            png = self._items.get(key)
            if png is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return png

    def put(self, key: Hashable, png: bytes) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._items[key] = png
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def forget(self, resource_id: str) -> None:
        """Drop every picture of a deleted resource (keys start with its id)."""
        with self._lock:
            for key in [k for k in self._items if isinstance(k, tuple) and k[0] == resource_id]:
                del self._items[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _etag(key: Hashable) -> str:
    return '"' + hashlib.sha256(repr(key).encode()).hexdigest()[:32] + '"'


async def picture_response(
    request: Request,
    cache: PictureCache,
    key: tuple[Hashable, ...],
    render: Callable[[], bytes],
    media_type: str = PNG_MEDIA_TYPE,
    *,
    cache_control: str = CACHE_CONTROL,
) -> Response:
    """The picture for `key`: 304 when the client already has it, from the cache when there,
    else rendered in a thread (engine InvalidInput propagates as a 422 problem)."""
    etag = _etag(key)
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    png = cache.get(key)
    if png is None:
        state = request.app.state.scratchnet
        with deadline(state.settings.request_timeout_seconds):  # the thread copies the context
            png = await anyio.to_thread.run_sync(render)
        cache.put(key, png)
    return Response(png, headers=headers, media_type=media_type)


def split_points(dataset: DatasetContent | None) -> tuple[Points, Points]:
    """The (train, test) points to draw over a model's class regions: none when its dataset is
    gone (or it never had one)."""
    if dataset is None:
        no_points = np.empty((0, 2)), np.empty(0, dtype=np.int64)
        return no_points, no_points
    data, split = dataset.dataset, dataset.split
    train = data.X[split.train_index], data.y[split.train_index]
    test = data.X[split.test_index], data.y[split.test_index]
    return train, test
