"""`Client` (blocking) and `AsyncClient` (asyncio or trio) for the scratchnet service.

    with scratchnet.Client("http://127.0.0.1:8000") as client:
        dataset = client.create_dataset("moons", n_samples=200, noise=0.2)
        job = client.train(dataset, hidden_layers=[3], activation="tanh", optimizer="sgd",
                           learning_rate=2.0, l2=0.01, epochs=20000)
        client.predict(job.model_id, [[0.0, 0.5]]).classes

Every operation is defined once, in `scratchnet._base.BaseClient` (its request and how to read
the answer); the two clients below send it, retrying as that module's docstring says. Only the
operations that follow an event stream (`follow`, `wait`, `train`, and their sweep
counterparts) are written for each client.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import anyio
import httpx

from engine.hyperparameters import Hyperparameters
from scratchnet._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_TIMEOUT,
    BaseClient,
    Call,
    DatasetRef,
    EventStream,
    JobEvent,
    JobRef,
    JobWatch,
    ModelRef,
    StreamReader,
    SweepEvent,
    SweepRef,
    SweepWatch,
    job_stream,
    ref,
    succeeded,
    sweep_stream,
)
from scratchnet.errors import api_error
from scratchnet.types import JobPublic, SweepPublic

P = ParamSpec("P")
T = TypeVar("T")


def _named_after(method: Callable[..., Any], build: Callable[..., Any], owner: str) -> None:
    """Give `method` the public name, docstring and signature of the operation `build` makes
    (`help()` and editors show them), returning what the Call reads."""
    functools.update_wrapper(method, build)
    del method.__wrapped__  # type: ignore[attr-defined]
    name = build.__name__.removeprefix("_")
    method.__name__, method.__qualname__ = name, f"{owner}.{name}"
    signature = inspect.signature(build)
    returned = str(signature.return_annotation).removeprefix("Call[").removesuffix("]")
    method.__signature__ = signature.replace(return_annotation=returned)  # type: ignore[attr-defined]


def _blocking(
    build: Callable[Concatenate[BaseClient, P], Call[T]],
) -> Callable[Concatenate[Client, P], T]:
    """The blocking method sending the Call that `build` makes."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(self, *args, **kwargs))

    _named_after(method, build, "Client")
    return method


def _awaitable(
    build: Callable[Concatenate[BaseClient, P], Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """The coroutine method sending the Call that `build` makes."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(self, *args, **kwargs))

    _named_after(method, build, "AsyncClient")
    return method


class Client(BaseClient):
    """A blocking client; use it as a context manager (or call `close`).

    `url`, `api_key`, `timeout` (seconds), `max_retries` and `max_retry_wait` as BaseClient
    says; `transport` and `event_hooks` go to the underlying httpx.Client (to log each request,
    say).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        transport: httpx.BaseTransport | None = None,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        super().__init__(
            url, api_key, timeout=timeout, max_retries=max_retries, max_retry_wait=max_retry_wait
        )
        self._http = httpx.Client(transport=transport, **self._http_options(event_hooks))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, **call.options())
            except httpx.TransportError as exc:
                raise self._unreachable(call, exc) from exc
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return self._result(call, response)
            attempt += 1
            time.sleep(delay)

    info = _blocking(BaseClient._info)
    create_dataset = _blocking(BaseClient._create_dataset)
    dataset_from_points = _blocking(BaseClient._dataset_from_points)
    dataset_from_csv = _blocking(BaseClient._dataset_from_csv)
    get_dataset = _blocking(BaseClient._get_dataset)
    list_datasets = _blocking(BaseClient._list_datasets)
    delete_dataset = _blocking(BaseClient._delete_dataset)
    dataset_image = _blocking(BaseClient._dataset_image)
    submit_job = _blocking(BaseClient._submit_job)
    get_job = _blocking(BaseClient._get_job)
    list_jobs = _blocking(BaseClient._list_jobs)
    job_history = _blocking(BaseClient._job_history)
    cancel_job = _blocking(BaseClient._cancel_job)
    get_model = _blocking(BaseClient._get_model)
    list_models = _blocking(BaseClient._list_models)
    delete_model = _blocking(BaseClient._delete_model)
    set_alias = _blocking(BaseClient._set_alias)
    delete_alias = _blocking(BaseClient._delete_alias)
    predict = _blocking(BaseClient._predict)
    decision_boundary = _blocking(BaseClient._decision_boundary)
    loss_curve = _blocking(BaseClient._loss_curve)
    neurons = _blocking(BaseClient._neurons)
    job_snapshots = _blocking(BaseClient._job_snapshots)
    job_picture = _blocking(BaseClient._job_picture)
    job_evolution = _blocking(BaseClient._job_evolution)
    export_model = _blocking(BaseClient._export_model)
    import_model = _blocking(BaseClient._import_model)
    create_sweep = _blocking(BaseClient._create_sweep)
    get_sweep = _blocking(BaseClient._get_sweep)
    list_sweeps = _blocking(BaseClient._list_sweeps)
    cancel_sweep = _blocking(BaseClient._cancel_sweep)
    sweep_grid_picture = _blocking(BaseClient._sweep_grid_picture)
    sweep_curves_picture = _blocking(BaseClient._sweep_curves_picture)

    # --- event streams ---------------------------------------------------------------------

    def _events(self, stream: EventStream[T], since: int) -> Iterator[T]:
        """The parsed events of `stream` after event `since`, through its final `status`
        event; reconnects, resuming after the last event seen, when it ends early."""
        reader = StreamReader(stream, since, self.max_retries)
        while True:
            cause: Exception | None = None
            try:
                with self._http.stream(
                    "GET", stream.path, params={"since": reader.since}, timeout=self.stream_timeout
                ) as response:
                    if not response.is_success:
                        response.read()
                        raise api_error(response)
                    reader.open()
                    for line in response.iter_lines():
                        item = reader.feed(line)
                        if item is not None:
                            yield item
                        if reader.finished:
                            return
            except httpx.TransportError as exc:
                cause = exc
            time.sleep(reader.reconnect_delay(cause))

    def follow(self, job: JobRef, *, since: int = 0) -> Iterator[JobEvent]:
        """The job's progress live: a ProgressEvent per recorded epoch after `since` (those
        recorded already first), then the finished JobPublic."""
        return self._events(job_stream(ref(job)), since)

    def wait(self, job: JobRef, *, progress: bool | None = None) -> JobPublic:
        """Wait for the job to finish and return it once succeeded (TrainingFailed or
        TrainingCancelled otherwise); `progress` shows a bar (None: in terminals and
        notebooks only). Interrupting the wait (Ctrl-C) cancels the job."""
        watch = JobWatch(job if isinstance(job, JobPublic) else self.get_job(job), progress)
        with watch.bar:
            try:
                for event in self.follow(watch.job.id):
                    watch.see(event)
            except KeyboardInterrupt:
                self.cancel_job(watch.job.id)
                raise
        return succeeded(watch.job)

    def train(
        self,
        dataset: DatasetRef,
        hyperparameters: Hyperparameters | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        baseline: bool = False,
        progress: bool | None = None,
        init_model: ModelRef | None = None,
        **options: Any,
    ) -> JobPublic:
        """Train on the service and return the succeeded job (its `model_id`, `metrics`):
        `submit_job` then `wait`. Options (and `init_model`) as for `submit_job`."""
        job = self.submit_job(
            dataset, hyperparameters, name=name, baseline=baseline, init_model=init_model, **options
        )
        return self.wait(job, progress=progress)

    def follow_sweep(self, sweep: SweepRef, *, since: int = 0) -> Iterator[SweepEvent]:
        """The sweep live: a SweepPointEvent per recorded point, a SweepResultEvent as each
        configuration ends, then the finished SweepPublic."""
        return self._events(sweep_stream(ref(sweep)), since)

    def wait_sweep(self, sweep: SweepRef, *, progress: bool | None = None) -> SweepPublic:
        """Wait for the sweep to finish and return it once succeeded (TrainingFailed or
        TrainingCancelled otherwise), with a bar of epochs over every configuration.
        Interrupting the wait (Ctrl-C) cancels the sweep."""
        current = sweep if isinstance(sweep, SweepPublic) else self.get_sweep(sweep)
        watch = SweepWatch(current, progress)
        with watch.bar:
            try:
                for event in self.follow_sweep(current.id):
                    watch.see(event)
            except KeyboardInterrupt:
                self.cancel_sweep(current.id)
                raise
        return succeeded(watch.sweep)

    def run_sweep(
        self,
        dataset: DatasetRef,
        grid: Mapping[str, Any],
        base: Hyperparameters | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        baseline: bool = False,
        progress: bool | None = None,
    ) -> SweepPublic:
        """Run a sweep and return it once succeeded: `create_sweep` then `wait_sweep`."""
        sweep = self.create_sweep(dataset, grid, base, name=name, baseline=baseline)
        return self.wait_sweep(sweep, progress=progress)


class AsyncClient(BaseClient):
    """A client for asyncio or trio programs: every operation is a coroutine, the streams are
    async iterators. Use it as an async context manager (or await `aclose`). Arguments as for
    Client, `transport` an httpx.AsyncBaseTransport."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        transport: httpx.AsyncBaseTransport | None = None,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        super().__init__(
            url, api_key, timeout=timeout, max_retries=max_retries, max_retry_wait=max_retry_wait
        )
        self._http = httpx.AsyncClient(transport=transport, **self._http_options(event_hooks))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, **call.options())
            except httpx.TransportError as exc:
                raise self._unreachable(call, exc) from exc
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return self._result(call, response)
            attempt += 1
            await anyio.sleep(delay)

    info = _awaitable(BaseClient._info)
    create_dataset = _awaitable(BaseClient._create_dataset)
    dataset_from_points = _awaitable(BaseClient._dataset_from_points)
    dataset_from_csv = _awaitable(BaseClient._dataset_from_csv)
    get_dataset = _awaitable(BaseClient._get_dataset)
    list_datasets = _awaitable(BaseClient._list_datasets)
    delete_dataset = _awaitable(BaseClient._delete_dataset)
    dataset_image = _awaitable(BaseClient._dataset_image)
    submit_job = _awaitable(BaseClient._submit_job)
    get_job = _awaitable(BaseClient._get_job)
    list_jobs = _awaitable(BaseClient._list_jobs)
    job_history = _awaitable(BaseClient._job_history)
    cancel_job = _awaitable(BaseClient._cancel_job)
    get_model = _awaitable(BaseClient._get_model)
    list_models = _awaitable(BaseClient._list_models)
    delete_model = _awaitable(BaseClient._delete_model)
    set_alias = _awaitable(BaseClient._set_alias)
    delete_alias = _awaitable(BaseClient._delete_alias)
    predict = _awaitable(BaseClient._predict)
    decision_boundary = _awaitable(BaseClient._decision_boundary)
    loss_curve = _awaitable(BaseClient._loss_curve)
    neurons = _awaitable(BaseClient._neurons)
    job_snapshots = _awaitable(BaseClient._job_snapshots)
    job_picture = _awaitable(BaseClient._job_picture)
    job_evolution = _awaitable(BaseClient._job_evolution)
    export_model = _awaitable(BaseClient._export_model)
    import_model = _awaitable(BaseClient._import_model)
    create_sweep = _awaitable(BaseClient._create_sweep)
    get_sweep = _awaitable(BaseClient._get_sweep)
    list_sweeps = _awaitable(BaseClient._list_sweeps)
    cancel_sweep = _awaitable(BaseClient._cancel_sweep)
    sweep_grid_picture = _awaitable(BaseClient._sweep_grid_picture)
    sweep_curves_picture = _awaitable(BaseClient._sweep_curves_picture)

    # --- event streams ---------------------------------------------------------------------

    async def _events(self, stream: EventStream[T], since: int) -> AsyncIterator[T]:
        """As Client._events."""
        reader = StreamReader(stream, since, self.max_retries)
        while True:
            cause: Exception | None = None
            try:
                async with self._http.stream(
                    "GET", stream.path, params={"since": reader.since}, timeout=self.stream_timeout
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        raise api_error(response)
                    reader.open()
                    async for line in response.aiter_lines():
                        item = reader.feed(line)
                        if item is not None:
                            yield item
                        if reader.finished:
                            return
            except httpx.TransportError as exc:
                cause = exc
            await anyio.sleep(reader.reconnect_delay(cause))

    def follow(self, job: JobRef, *, since: int = 0) -> AsyncIterator[JobEvent]:
        """As Client.follow, as an async iterator."""
        return self._events(job_stream(ref(job)), since)

    async def wait(self, job: JobRef, *, progress: bool | None = None) -> JobPublic:
        """As Client.wait; cancelling the waiting task cancels the job."""
        watch = JobWatch(job if isinstance(job, JobPublic) else await self.get_job(job), progress)
        with watch.bar:
            try:
                async for event in self.follow(watch.job.id):
                    watch.see(event)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self.cancel_job(watch.job.id)
                raise
        return succeeded(watch.job)

    async def train(
        self,
        dataset: DatasetRef,
        hyperparameters: Hyperparameters | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        baseline: bool = False,
        progress: bool | None = None,
        init_model: ModelRef | None = None,
        **options: Any,
    ) -> JobPublic:
        """As Client.train."""
        job = await self.submit_job(
            dataset, hyperparameters, name=name, baseline=baseline, init_model=init_model, **options
        )
        return await self.wait(job, progress=progress)

    def follow_sweep(self, sweep: SweepRef, *, since: int = 0) -> AsyncIterator[SweepEvent]:
        """As Client.follow_sweep, as an async iterator."""
        return self._events(sweep_stream(ref(sweep)), since)

    async def wait_sweep(self, sweep: SweepRef, *, progress: bool | None = None) -> SweepPublic:
        """As Client.wait_sweep; cancelling the waiting task cancels the sweep."""
        current = sweep if isinstance(sweep, SweepPublic) else await self.get_sweep(sweep)
        watch = SweepWatch(current, progress)
        with watch.bar:
            try:
                async for event in self.follow_sweep(current.id):
                    watch.see(event)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self.cancel_sweep(current.id)
                raise
        return succeeded(watch.sweep)

    async def run_sweep(
        self,
        dataset: DatasetRef,
        grid: Mapping[str, Any],
        base: Hyperparameters | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        baseline: bool = False,
        progress: bool | None = None,
    ) -> SweepPublic:
        """As Client.run_sweep."""
        sweep = await self.create_sweep(dataset, grid, base, name=name, baseline=baseline)
        return await self.wait_sweep(sweep, progress=progress)
