"""What `Client` and `AsyncClient` share, written once (httpx's own BaseClient pattern): each
operation is a method that builds a `Call` — the request, and how to read its answer — and the
two clients only differ in how they send it (`Client._send`, `AsyncClient._send`). The retry
rule, the event-stream decoder and the encoding of datasets live here too.

Retries: an answer of 429 (the job queue is full) or 503 (the workers are not up) that carries
`Retry-After` is retried after that many seconds (at most `max_retry_wait`), up to
`max_retries` times; then it raises TooManyRequests or ServiceUnavailable. Every POST that
creates a job or a sweep carries an `Idempotency-Key` (made per call unless given), so a retry
can never queue the work twice.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
from pydantic import BaseModel

from engine.hyperparameters import Hyperparameters, Task
from scratchnet.errors import (
    ConnectionFailed,
    TrainingCancelled,
    TrainingFailed,
    api_error,
    parse_retry_after,
)
from scratchnet.progress import ProgressBar, job_metrics
from scratchnet.types import (
    DatasetKind,
    DatasetPublic,
    DatasetsPublic,
    Info,
    JobHistory,
    JobPublic,
    JobSnapshots,
    JobsPublic,
    JobStatusName,
    ModelPublic,
    ModelsPublic,
    Prediction,
    ProgressEvent,
    SweepPointEvent,
    SweepPublic,
    SweepResultEvent,
    SweepsPublic,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", JobPublic, SweepPublic)

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "SCRATCHNET_URL"
API_KEY_ENV = "SCRATCHNET_API_KEY"
# Seconds to connect and to wait for an answer; training never blocks a request (jobs are
# queued and answered at once), so only large uploads and pictures come near this.
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3
# The longest single wait a Retry-After may impose; the service asks for 1-5 s.
DEFAULT_MAX_RETRY_WAIT = 30.0
RETRIED_STATUSES = (429, 503)
NPZ_MEDIA_TYPE = "application/octet-stream"
# Seconds between reconnections of an event stream that ended before its final event (a
# proxy's idle timeout, a dropped connection); the n-th in a row waits n times this.
RECONNECT_SECONDS = 0.5

# Something a resource id may be given as: the id, or the object the service answered.
DatasetRef = str | DatasetPublic
JobRef = str | JobPublic
ModelRef = str | ModelPublic  # a model id, an alias, or the model
SweepRef = str | SweepPublic
Destination = str | os.PathLike[str] | None
Show = Literal["all", "train", "test", "none"]


def ref(resource: str | BaseModel) -> str:
    """The id of a resource given by id or as the object the service answered, escaped for a
    URL path (an id with '/' or '?' names nothing, it does not reach another route)."""
    resource_id = resource if isinstance(resource, str) else getattr(resource, "id", None)
    if not isinstance(resource_id, str):
        raise TypeError(f"expected an id or a resource, got {resource!r}")
    return quote(resource_id, safe="")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its successful answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """The keyword arguments of httpx's `request` besides the method and path."""
        return {
            "params": self.params,
            "json": self.json,
            "content": self.content,
            "headers": self.headers,
        }


def model_reader(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def _nothing(response: httpx.Response) -> None:
    return None


def bytes_reader(destination: Destination) -> Callable[[httpx.Response], bytes]:
    """The body's bytes, also written to `destination` when one is given."""

    def read(response: httpx.Response) -> bytes:
        if destination is not None:
            Path(destination).write_bytes(response.content)
        return response.content

    return read


def _given(**values: Any) -> dict[str, Any]:
    """The values not left at None (None means: the service's default)."""
    return {key: value for key, value in values.items() if value is not None}


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters: the given values, booleans spelt as the service reads them."""
    return {
        key: (str(value).lower() if isinstance(value, bool) else value)
        for key, value in _given(**values).items()
    }


def hyperparameters_body(
    hyperparameters: Hyperparameters | Mapping[str, Any] | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The options to send: `hyperparameters` (a Hyperparameters or a mapping) updated with
    keyword options. Only what was given is sent, so the service fills in its defaults; a
    Hyperparameters object sends the fields that were set on it."""
    if isinstance(hyperparameters, Hyperparameters):
        given = hyperparameters.model_dump(mode="json", exclude_unset=True)
    else:
        given = dict(hyperparameters or {})
    given.update(options)
    if isinstance(given.get("hidden_layers"), tuple):
        given["hidden_layers"] = list(given["hidden_layers"])
    return given


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number or string JSON can carry."""
    return value.item() if isinstance(value, np.generic) else value


def points_and_labels(
    X: Any, y: Any
) -> tuple[list[list[float]], list[int | str] | None, list[str] | None]:
    """Rows of X (an array, nested lists or a pandas DataFrame, whose column names become the
    feature names), and y's labels as plain ints or strings (None when y is None). A
    DataFrame's column may be given as y by its name."""
    feature_names: list[str] | None = None
    is_frame = hasattr(X, "columns") and hasattr(X, "to_numpy")
    if isinstance(y, str) and not is_frame:
        raise ValueError(f"y names a label column ({y!r}), but X is not a DataFrame")
    if is_frame:  # a pandas DataFrame
        if isinstance(y, str):
            label_column = y
            y = X[label_column]
            X = X.drop(columns=[label_column])
        feature_names = [str(name) for name in X.columns]
        X = X.to_numpy()
    rows = np.asarray(X, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n_points, n_features), got {rows.shape}")
    labels = None
    if y is not None:
        if hasattr(y, "to_numpy"):  # a pandas Series
            y = y.to_numpy()
        labels = [_plain(label) for label in np.asarray(y).tolist()]
    return rows.tolist(), labels, feature_names


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event: its type, its data (a JSON text) and its id."""

    event: str
    data: str
    id: str | None


class EventDecoder:
    """Server-sent events from the lines of a stream (the text/event-stream format: `field:
    value` lines, a blank line ends an event, lines starting with ':' are comments)."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> StreamEvent | None:
        """The event this line completes, if it completes one."""
        if not line:
            if not self._data:
                self._event = "message"
                return None
            event = StreamEvent(self._event, "\n".join(self._data), self._id)
            self._event, self._data, self._id = "message", [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


@dataclass(frozen=True)
class EventStream(Generic[T]):
    """The events of one resource's stream: the path, and the model of each event type."""

    path: str
    models: Mapping[str, type[BaseModel]]

    def parse(self, event: StreamEvent) -> Any:
        model = self.models.get(event.event)
        return None if model is None else model.model_validate_json(event.data)


class StreamReader(Generic[T]):
    """Where a client stands in one resource's event stream, across reconnections: the id of
    the last event seen (to resume after), and the reconnections since an event arrived."""

    def __init__(self, stream: EventStream[T], since: int, max_reconnects: int) -> None:
        self.stream = stream
        self.since = since
        self.max_reconnects = max_reconnects
        self.reconnects = 0
        self.finished = False
        self._decoder = EventDecoder()

    def open(self) -> None:
        """A new connection starts: events are decoded afresh."""
        self._decoder = EventDecoder()

    def feed(self, line: str) -> T | None:
        """The parsed event this line completes (None if none); `finished` once it is the
        final `status` event."""
        event = self._decoder.feed(line)
        if event is None:
            return None
        if event.id is not None:
            self.since, self.reconnects = int(event.id), 0
        self.finished = event.event == "status"
        parsed: T | None = self.stream.parse(event)
        return parsed

    def reconnect_delay(self, cause: Exception | None) -> float:
        """Seconds to wait before reconnecting after the stream ended early (`cause`: the
        transport error, if one ended it); ConnectionFailed past max_reconnects."""
        self.reconnects += 1
        if self.reconnects > self.max_reconnects:
            reason = f": {cause}" if cause is not None else " before its final event"
            raise ConnectionFailed(f"event stream {self.stream.path} ended{reason}")
        return RECONNECT_SECONDS * self.reconnects


class JobWatch:
    """A job being waited for: the bar of its epochs, and its latest state."""

    def __init__(self, job: JobPublic, show: bool | None) -> None:
        self.job = job
        self.bar = ProgressBar(job.name, job.epochs, show=show)

    def see(self, event: ProgressEvent | JobPublic) -> None:
        start = self.job.initial_epoch  # a continued job's epochs count on from its model's
        if isinstance(event, ProgressEvent):
            metrics = job_metrics(event)
            self.bar.update(event.epoch - start, metrics)
        else:
            self.job = event
            self.bar.update(event.epoch - start)


class SweepWatch:
    """A sweep being waited for: the bar of its epochs over every configuration, and its
    latest state."""

    def __init__(self, sweep: SweepPublic, show: bool | None) -> None:
        self.sweep = sweep
        self.bar = ProgressBar(sweep.name, sweep.progress.epochs_total, show=show)
        self._epochs: dict[int, int] = {}

    def see(self, event: SweepPointEvent | SweepResultEvent | SweepPublic) -> None:
        if isinstance(event, SweepPointEvent):
            if event.index is not None:  # the baseline is not counted in epochs_total
                self._epochs[event.index] = event.epoch
                self.bar.update(sum(self._epochs.values()))
        elif isinstance(event, SweepPublic):
            self.sweep = event
            self.bar.update(event.progress.epochs_completed)


def succeeded(resource: R) -> R:
    """`resource` (a finished job or sweep) if it succeeded; TrainingFailed or
    TrainingCancelled otherwise."""
    if resource.status == "failed":
        raise TrainingFailed(resource)
    if resource.status == "cancelled":
        raise TrainingCancelled(resource)
    return resource


JobEvent = ProgressEvent | JobPublic
SweepEvent = SweepPointEvent | SweepResultEvent | SweepPublic


def job_stream(job_id: str) -> EventStream[JobEvent]:
    return EventStream(
        f"/v1/jobs/{job_id}/events", {"progress": ProgressEvent, "status": JobPublic}
    )


def sweep_stream(sweep_id: str) -> EventStream[SweepEvent]:
    return EventStream(
        f"/v1/sweeps/{sweep_id}/events",
        {"progress": SweepPointEvent, "result": SweepResultEvent, "status": SweepPublic},
    )


class BaseClient:
    """Configuration and every operation of the API, as `Call`s; see the module docstring."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
    ) -> None:
        """`url` defaults to $SCRATCHNET_URL, then http://127.0.0.1:8000; `api_key` to
        $SCRATCHNET_API_KEY, sent as `Authorization: Bearer <key>` when set."""
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_retry_wait < 0:
            raise ValueError(f"max_retry_wait must be >= 0, got {max_retry_wait}")
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait

    @property
    def stream_timeout(self) -> httpx.Timeout:
        """An event stream lasts as long as training does: no read timeout (the service sends
        a keep-alive comment every sse_ping_seconds anyway)."""
        return httpx.Timeout(self.timeout, read=None)

    def _http_options(self, event_hooks: Mapping[str, list[Any]] | None) -> dict[str, Any]:
        """The keyword arguments of the httpx client (sync or async) under this one."""
        return {
            "base_url": self.url,
            "headers": self._headers(),
            "timeout": self.timeout,
            "event_hooks": event_hooks,
        }

    def _unreachable(self, call: Call[Any], exc: httpx.TransportError) -> ConnectionFailed:
        return ConnectionFailed(f"{call.method} {self.url}{call.path}: {exc}")

    def _headers(self) -> dict[str, str]:
        from scratchnet import __version__

        headers = {"User-Agent": f"scratchnet/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending the request again (attempt = retries so far), or
        None to take this answer as final."""
        if response.status_code not in RETRIED_STATUSES or attempt >= self.max_retries:
            return None
        after = parse_retry_after(response.headers.get("Retry-After"))
        return None if after is None else min(after, self.max_retry_wait)

    @staticmethod
    def _result(call: Call[T], response: httpx.Response) -> T:
        if response.is_success:
            return call.read(response)
        raise api_error(response)

    # --- operations ---------------------------------------------------------------------------

    def _info(self) -> Call[Info]:
        """The service's version, workers and limits."""
        return Call("GET", "/v1/info", model_reader(Info))

    # datasets

    def _create_dataset(
        self,
        kind: DatasetKind,
        *,
        name: str | None = None,
        n_samples: int | None = None,
        noise: float | None = None,
        n_classes: int | None = None,
        n_features: int | None = None,
        seed: int | None = None,
        test_fraction: float | None = None,
        standardize: bool | None = None,
    ) -> Call[DatasetPublic]:
        """A generated (`moons`, `circles`, `blobs`, `xor`, `spiral`, `gaussian`; regression:
        `reg_plane`, `reg_gauss`, `friedman1`) or bundled (`iris`, `wine`, `breast_cancer`,
        `digits`; regression: `diabetes`) dataset; options left at None take the service's
        defaults."""
        body = _given(
            kind=kind,
            name=name,
            n_samples=n_samples,
            noise=noise,
            n_classes=n_classes,
            n_features=n_features,
            seed=seed,
            test_fraction=test_fraction,
            standardize=standardize,
        )
        return Call("POST", "/v1/datasets", model_reader(DatasetPublic), json=body)

    def _dataset_from_points(
        self,
        X: Any,
        y: Any,
        *,
        feature_names: Sequence[str] | None = None,
        name: str | None = None,
        seed: int | None = None,
        test_fraction: float | None = None,
        standardize: bool | None = None,
        task: Task = "classification",
    ) -> Call[DatasetPublic]:
        """A dataset of your points: X an array (n_points, n_features), nested lists or a
        pandas DataFrame (its column names become the feature names); y one label per point
        (ints or strings; with a DataFrame, also the name of its label column), or with
        task="regression" one target per point (a number, or a row of numbers)."""
        points, labels, frame_names = points_and_labels(X, y)
        if labels is None:
            raise ValueError("y must give one label per point")
        names = list(feature_names) if feature_names is not None else frame_names
        body: dict[str, Any] = {"kind": "custom", "points": points}
        if task == "regression":
            body |= {"task": task, "targets": labels}
        else:
            body["labels"] = labels
        body |= _given(
            feature_names=names,
            name=name,
            seed=seed,
            test_fraction=test_fraction,
            standardize=standardize,
        )
        return Call("POST", "/v1/datasets", model_reader(DatasetPublic), json=body)

    def _dataset_from_csv(
        self,
        source: str | os.PathLike[str] | bytes,
        *,
        label_column: str | None = None,
        name: str | None = None,
        seed: int | None = None,
        test_fraction: float | None = None,
        standardize: bool | None = None,
    ) -> Call[DatasetPublic]:
        """A dataset from a CSV file (a path) or its bytes: a header row, feature columns, the
        label column last unless `label_column` names another."""
        content = source if isinstance(source, bytes) else Path(source).read_bytes()
        params = _params(
            label_column=label_column,
            name=name,
            seed=seed,
            test_fraction=test_fraction,
            standardize=standardize,
        )
        return Call(
            "POST",
            "/v1/datasets",
            model_reader(DatasetPublic),
            params=params,
            content=content,
            headers={"Content-Type": "text/csv"},
        )

    def _get_dataset(
        self, dataset: DatasetRef, *, include_points: bool = False
    ) -> Call[DatasetPublic]:
        """One dataset; `include_points` adds its points, labels and each point's split."""
        params = _params(include_points=include_points or None)
        return Call("GET", f"/v1/datasets/{ref(dataset)}", model_reader(DatasetPublic), params)

    def _list_datasets(self, *, limit: int | None = None, offset: int = 0) -> Call[DatasetsPublic]:
        """A page of datasets, oldest first."""
        params = _params(limit=limit, offset=offset)
        return Call("GET", "/v1/datasets", model_reader(DatasetsPublic), params)

    def _delete_dataset(self, dataset: DatasetRef) -> Call[None]:
        """Delete a dataset (Conflict while a queued or running job or sweep uses it)."""
        return Call("DELETE", f"/v1/datasets/{ref(dataset)}", _nothing)

    def _dataset_image(
        self,
        dataset: DatasetRef,
        path: Destination = None,
        *,
        width: int | None = None,
        height: int | None = None,
    ) -> Call[bytes]:
        """A scatter plot of the dataset as PNG bytes, also saved to `path` if given."""
        params = _params(width=width, height=height)
        return Call("GET", f"/v1/datasets/{ref(dataset)}/image.png", bytes_reader(path), params)

    # jobs

    def _submit_job(
        self,
        dataset: DatasetRef,
        hyperparameters: Hyperparameters | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        baseline: bool = False,
        idempotency_key: str | None = None,
        init_model: ModelRef | None = None,
        **options: Any,
    ) -> Call[JobPublic]:
        """Queue a training job and answer at once (`train` waits for it). Options come as a
        Hyperparameters, a mapping, keyword arguments (`hidden_layers=[3]`), or a mix;
        `idempotency_key` defaults to a fresh one, so retries are safe. `init_model` (a model,
        its id or an alias) continues that model's training: the options left out are its."""
        body: dict[str, Any] = {
            "dataset_id": ref(dataset),
            "hyperparameters": hyperparameters_body(hyperparameters, options),
        }
        if name is not None:
            body["name"] = name
        if baseline:
            body["baseline"] = True
        if init_model is not None:
            body["init_model_id"] = ref(init_model)
        key = idempotency_key or uuid.uuid4().hex
        headers = {"Idempotency-Key": key}
        return Call("POST", "/v1/jobs", model_reader(JobPublic), json=body, headers=headers)

    def _get_job(self, job: JobRef) -> Call[JobPublic]:
        """One job: status, progress, metrics, and its model once succeeded."""
        return Call("GET", f"/v1/jobs/{ref(job)}", model_reader(JobPublic))

    def _list_jobs(
        self, *, status: JobStatusName | None = None, limit: int | None = None, offset: int = 0
    ) -> Call[JobsPublic]:
        """A page of jobs, oldest first, optionally only those in one state."""
        params = _params(status=status, limit=limit, offset=offset)
        return Call("GET", "/v1/jobs", model_reader(JobsPublic), params)

    def _job_history(
        self, job: JobRef, *, since: int = 0, max_points: int | None = None
    ) -> Call[JobHistory]:
        """The points a job recorded after epoch `since`, thinned to `max_points` if given."""
        params = _params(since=since, max_points=max_points)
        return Call("GET", f"/v1/jobs/{ref(job)}/history", model_reader(JobHistory), params)

    def _job_snapshots(self, job: JobRef) -> Call[JobSnapshots]:
        """The epochs of the job's kept parameter snapshots, oldest first."""
        return Call("GET", f"/v1/jobs/{ref(job)}/snapshots", model_reader(JobSnapshots))

    def _job_picture(
        self,
        job: JobRef,
        path: Destination = None,
        *,
        epoch: int | None = None,
        width: int | None = None,
        height: int | None = None,
        resolution: int | None = None,
        show: Show | None = None,
    ) -> Call[bytes]:
        """The class regions of a running or finished job's network at its latest snapshot
        (or at `epoch`, one of `job_snapshots`) as PNG bytes, also saved to `path`."""
        params = _params(epoch=epoch, width=width, height=height, resolution=resolution, show=show)
        path_ = f"/v1/jobs/{ref(job)}/decision-boundary.png"
        return Call("GET", path_, bytes_reader(path), params)

    def _job_evolution(
        self,
        job: JobRef,
        path: Destination = None,
        *,
        max_frames: int | None = None,
        width: int | None = None,
        height: int | None = None,
        resolution: int | None = None,
        show: Show | None = None,
    ) -> Call[bytes]:
        """The decision boundary over the job's snapshots as animated GIF bytes, also saved to
        `path`."""
        params = _params(
            max_frames=max_frames, width=width, height=height, resolution=resolution, show=show
        )
        return Call("GET", f"/v1/jobs/{ref(job)}/evolution.gif", bytes_reader(path), params)

    def _cancel_job(self, job: JobRef) -> Call[JobPublic]:
        """Ask a queued or running job to stop (Conflict once it has finished)."""
        return Call("POST", f"/v1/jobs/{ref(job)}/cancel", model_reader(JobPublic))

    # models

    def _get_model(self, model: ModelRef) -> Call[ModelPublic]:
        """One model: architecture, classes, feature names, metrics."""
        return Call("GET", f"/v1/models/{ref(model)}", model_reader(ModelPublic))

    def _list_models(self, *, limit: int | None = None, offset: int = 0) -> Call[ModelsPublic]:
        """A page of models, oldest first."""
        params = _params(limit=limit, offset=offset)
        return Call("GET", "/v1/models", model_reader(ModelsPublic), params)

    def _delete_model(self, model: ModelRef) -> Call[None]:
        """Delete a model."""
        return Call("DELETE", f"/v1/models/{ref(model)}", _nothing)

    def _set_alias(self, model: ModelRef, alias: str) -> Call[ModelPublic]:
        """Give the model a stable name (`moons-best`), taken in one step from whichever model
        had it; the alias then names the model wherever a model id is taken."""
        return Call(
            "PUT", f"/v1/models/{ref(model)}/aliases/{ref(alias)}", model_reader(ModelPublic)
        )

    def _delete_alias(self, model: ModelRef, alias: str) -> Call[None]:
        """Remove one of the model's aliases (NotFound when it is not one of them)."""
        return Call("DELETE", f"/v1/models/{ref(model)}/aliases/{ref(alias)}", _nothing)

    def _predict(self, model: ModelRef, X: Any) -> Call[Prediction]:
        """Classes and probabilities of raw points: X an array (n_points, n_features), nested
        lists or a DataFrame, in the dataset's units (the model applies its own scaling)."""
        points, _labels, _names = points_and_labels(X, None)
        return Call(
            "POST",
            f"/v1/models/{ref(model)}/predict",
            model_reader(Prediction),
            json={"points": points},
        )

    def _decision_boundary(
        self,
        model: ModelRef,
        path: Destination = None,
        *,
        width: int | None = None,
        height: int | None = None,
        resolution: int | None = None,
        show: Show | None = None,
    ) -> Call[bytes]:
        """The class regions of a 2-feature model as PNG bytes, also saved to `path`."""
        params = _params(width=width, height=height, resolution=resolution, show=show)
        return Call(
            "GET",
            f"/v1/models/{ref(model)}/decision-boundary.png",
            bytes_reader(path),
            params,
        )

    def _loss_curve(
        self,
        model: ModelRef,
        path: Destination = None,
        *,
        width: int | None = None,
        height: int | None = None,
        log_scale: bool | None = None,
    ) -> Call[bytes]:
        """Training and test loss by epoch as PNG bytes, also saved to `path`."""
        params = _params(width=width, height=height, log_scale=log_scale)
        path_ = f"/v1/models/{ref(model)}/loss-curve.png"
        return Call("GET", path_, bytes_reader(path), params)

    def _neurons(
        self,
        model: ModelRef,
        path: Destination = None,
        *,
        panel_size: int | None = None,
        resolution: int | None = None,
    ) -> Call[bytes]:
        """One panel per hidden unit of a 2-feature model (its activation over the plane) as
        PNG bytes, also saved to `path`."""
        params = _params(panel_size=panel_size, resolution=resolution)
        return Call("GET", f"/v1/models/{ref(model)}/neurons.png", bytes_reader(path), params)

    def _export_model(self, model: ModelRef, path: Destination = None) -> Call[bytes]:
        """The model as .npz bytes (weights, architecture, options, classes, scaling), also
        saved to `path`; `import_model` (or engine.serialize.model_from_npz) reads them."""
        return Call("GET", f"/v1/models/{ref(model)}/export", bytes_reader(path))

    def _import_model(
        self, source: bytes | str | os.PathLike[str], *, name: str | None = None
    ) -> Call[ModelPublic]:
        """A new model from exported .npz bytes or a file of them; it predicts identically."""
        content = source if isinstance(source, bytes) else Path(source).read_bytes()
        return Call(
            "POST",
            "/v1/models/import",
            model_reader(ModelPublic),
            params=_params(name=name),
            content=content,
            headers={"Content-Type": NPZ_MEDIA_TYPE},
        )

    # sweeps

    def _create_sweep(
        self,
        dataset: DatasetRef,
        grid: Mapping[str, Iterable[Any]],
        base: Hyperparameters | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        baseline: bool = False,
        idempotency_key: str | None = None,
    ) -> Call[SweepPublic]:
        """Queue a sweep over every combination of `grid`'s values (hyperparameter -> values
        to try) on top of the `base` options, and answer at once (`run_sweep` waits)."""
        body: dict[str, Any] = {
            "dataset_id": ref(dataset),
            "base": hyperparameters_body(base, {}),
            "grid": {
                key: [list(v) if isinstance(v, tuple) else v for v in values]
                for key, values in grid.items()
            },
        }
        if name is not None:
            body["name"] = name
        if baseline:
            body["baseline"] = True
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return Call("POST", "/v1/sweeps", model_reader(SweepPublic), json=body, headers=headers)

    def _get_sweep(self, sweep: SweepRef) -> Call[SweepPublic]:
        """One sweep: status, progress and its results table."""
        return Call("GET", f"/v1/sweeps/{ref(sweep)}", model_reader(SweepPublic))

    def _list_sweeps(
        self, *, status: JobStatusName | None = None, limit: int | None = None, offset: int = 0
    ) -> Call[SweepsPublic]:
        """A page of sweeps, oldest first, optionally only those in one state."""
        params = _params(status=status, limit=limit, offset=offset)
        return Call("GET", "/v1/sweeps", model_reader(SweepsPublic), params)

    def _cancel_sweep(self, sweep: SweepRef) -> Call[SweepPublic]:
        """Ask a sweep to stop; finished configurations keep their models."""
        return Call("POST", f"/v1/sweeps/{ref(sweep)}/cancel", model_reader(SweepPublic))

    def _sweep_grid_picture(
        self, sweep: SweepRef, path: Destination = None, *, columns: int | None = None
    ) -> Call[bytes]:
        """One decision-boundary panel per configuration as PNG bytes, also saved to `path`."""
        params = _params(columns=columns)
        return Call("GET", f"/v1/sweeps/{ref(sweep)}/grid.png", bytes_reader(path), params)

    def _sweep_curves_picture(
        self, sweep: SweepRef, path: Destination = None, *, log_scale: bool | None = None
    ) -> Call[bytes]:
        """Every configuration's loss curves on one chart as PNG bytes, also saved to `path`."""
        params = _params(log_scale=log_scale)
        return Call("GET", f"/v1/sweeps/{ref(sweep)}/curves.png", bytes_reader(path), params)
