"""PNG pictures: rendered in a worker thread (never on the event loop), kept in a small LRU cache.

Datasets and models never change once created, so a picture is identified by what it shows: the
resource id, the picture kind and its parameters. That key is also the ETag.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from engine import plotting
from engine.errors import deadline
from service.api.problems import problem_responses
from service.state.records import DatasetContent

PNG_MEDIA_TYPE = "image/png"
CACHE_CONTROL = "private, max-age=3600"


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


def resolution_query(default: int, description: str) -> Any:
    """The `resolution` query parameter of a picture of class regions."""
    return Query(
        default, ge=plotting.MIN_RESOLUTION, le=plotting.MAX_RESOLUTION, description=description
    )


Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def png_route(
    router: APIRouter, path: str, summary: str, *statuses: int, description: str | None = None
) -> Callable[[Endpoint], Endpoint]:
    """Declare a GET route answering a PNG (200, or 304 for a matching ETag), with the problem
    statuses it can answer; `description` describes the 200."""
    ok = dict(PNG_200[200]) if description is None else {**PNG_200[200], "description": description}
    return router.get(
        path,
        response_class=PNGResponse,
        summary=summary,
        responses={200: ok, 304: PNG_200[304], **problem_responses(*statuses, 503)},
    )


class PNGResponse(Response):
    media_type = PNG_MEDIA_TYPE


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
    request: Request, cache: PictureCache, key: tuple[Hashable, ...], render: Callable[[], bytes]
) -> Response:
    """The PNG for `key`: 304 when the client already has it, from the cache when there, else
    rendered in a thread (engine InvalidInput propagates as a 422 problem)."""
    etag = _etag(key)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    png = cache.get(key)
    if png is None:
        state = request.app.state.scratchnet
        with deadline(state.settings.request_timeout_seconds):  # the thread copies the context
            png = await anyio.to_thread.run_sync(render)
        cache.put(key, png)
    return PNGResponse(png, headers=headers)


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
