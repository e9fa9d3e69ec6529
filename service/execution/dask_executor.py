"""The Dask executor: training runs on the workers of a Dask cluster, with the local pool's
semantics (a client cannot tell which executor ran its job).

    submit() ─► held (queued) ─► supervisor ─► client.submit(dask_worker.run, resources train=1)
                                     ▲                                   │ scheduler ─► a worker
    listener ◄── events (in order) ──┴── topic events, future outcomes ◄─┘

The service holds one `distributed.Client`. Every task is one Dask task needing the `train`
resource, so a worker started with `--resources train=1 --nthreads 1` trains one task at a
time, and tasks beyond the free workers wait in the scheduler (they count as queued here, up to
`max_queued`, as in the local pool). What a task reports comes back as scheduler topic events
(see `service.execution.dask_worker`); its outcome is the Dask task's result, read once and
released at once, so no worker keeps it and nothing is recomputed when a worker leaves.

- Progress: the worker's `Channel` batches items every `progress_interval_seconds`, exactly as
  in a local worker. The outcome carries the authoritative history; a progress event lost on
  the way changes nothing in the end.
- Cancel, deadline, shutdown: the service asks the task's worker (`Client.run`) to add the
  task's id to its stop set, which `should_stop()` reads; a task not yet seen to start is
  cancelled in the scheduler, reported cancelled at once, and every worker is asked to stop it
  (one may be starting it just then: Dask cannot interrupt a running task). A task that has
  not ended `cancel_grace_seconds` after its stop request is reported ended and its worker
  restarted.
- A worker that dies (its process killed, its machine gone past the scheduler's `worker-ttl`)
  fails its task with Failure.WORKER_LOST naming the worker: the scheduler must run with
  `distributed.scheduler.allowed-failures` 0 so that it fails the task instead of re-running it
  elsewhere; the executor refuses to become ready otherwise. If a task starts on a second
  worker anyway, it is failed the same way.
- Arrays of at least SHARED_ARRAY_BYTES inside a task (a dataset's split) are scattered to the
  cluster once per content (their BLAKE2 hash) and passed to tasks as Dask futures; the most
  recently used KEPT_ARRAYS stay on the cluster after their last task ends.
- Readiness: at start and whenever the workers change, every worker must run the service's
  scratchnet and NumPy versions and at least one must offer the `train` resource; otherwise
  the executor is not ready and `not_ready_reason()` names the problem (at start, the start
  fails with it).

The dashboard is the scheduler's own business: the service never serves or proxies it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import logging
import os
import pickle
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.execution import dask_worker, executor
from service.execution.worker import describe

if TYPE_CHECKING:
    from distributed import Client, Future

logger = logging.getLogger("scratchnet.executor")

# An array this big or bigger is scattered once per content instead of travelling inside each
# task. Measured on loopback (medians of 30, a loaded 2-core machine): a task round trip took
# ~16-19 ms; scattering added ~4 ms for a 16 KiB array, and at 256 KiB sending it inside the task
# (22.7 ms) cost as much as scattering it (20.4 ms): past that, scattering wins, and more so on
# a real network and for every further task on the same data.
SHARED_ARRAY_BYTES = 256 * 1024
KEPT_ARRAYS = 8  # scattered arrays no task uses any more that stay on the cluster
VERSIONED_PACKAGES = ("scratchnet", "numpy")  # must match between the service and every worker
TRAIN_RESOURCE = "train"
ALLOWED_FAILURES_SETTING = "distributed.scheduler.allowed-failures"


@dataclass(eq=False)
class _Held:
    """A task the executor holds, from submit() to its ending event."""

    task: executor.Task | None  # until it is handed to Dask
    deadline_seconds: float | None
    submitted_at: float
    future: Future[Any] | None = None
    arrays: tuple[str, ...] = ()  # keys of the scattered arrays it uses
    started_at: float | None = None
    worker: str | None = None  # the address of the worker running it
    stop_reason: executor.StopCause | None = None
    end_at: float | None = None  # when a stopped task that has not ended is ended anyway


@dataclass(eq=False)
class _Shared:
    future: Future[Any]
    users: int = 0


class _Pickler(pickle.Pickler):
    """Pickles a task with every array of at least SHARED_ARRAY_BYTES as a reference (its
    content's hash) and collects those arrays."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared: dict[str, np.ndarray] = {}

    def persistent_id(self, obj: Any) -> str | None:
        if isinstance(obj, np.ndarray) and obj.nbytes >= SHARED_ARRAY_BYTES:
            key = content_key(obj)
            self.shared[key] = obj
            return key
        return None


def content_key(array: np.ndarray) -> str:
    """A key naming the array's content (dtype, shape and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return f"scratchnet-array-{digest.hexdigest()}"


def versions_problem(local: dict[str, str | None], workers: dict[str, Any]) -> str | None:
    """What differs between the service's package versions and the workers' (from
    `Client.get_versions`), worded for an operator; None when they all match."""
    problems = []
    for address, described in sorted(workers.items()):
        packages = described.get("packages", {}) if isinstance(described, dict) else {}
        for package in VERSIONED_PACKAGES:
            theirs = packages.get(package)
            if theirs != local[package]:
                problems.append(
                    f"worker {address} runs {package} {theirs or 'not installed'}, the service "
                    f"runs {local[package]}"
                )
    if not problems:
        return None
    return "; ".join(problems) + ": install the same versions on every worker"


class DaskExecutor(executor.Executor):
    """Runs tasks on the workers of the Dask cluster whose scheduler is at `address`
    (tcp://host:8786, or tls://… with the TLS settings of Dask's own configuration); at most
    `max_queued` wait for a free `train` resource.

    `cancel_grace_seconds`: how long a stopped task may take to end before it is reported ended
    and its worker restarted. `watch_interval_seconds`: how often the worker list is refreshed.
    """

    def __init__(
        self,
        address: str,
        max_queued: int,
        *,
        cancel_grace_seconds: float = 5.0,
        start_timeout_seconds: float = 60.0,
        progress_interval_seconds: float = 0.05,
        watch_interval_seconds: float = 1.0,
    ) -> None:
        if importlib.util.find_spec("distributed") is None:
            raise RuntimeError(
                f"the executor {address} is a Dask cluster, and Dask is not installed: "
                "pip install 'scratchnet[dask]'"
            )
        executor.check_options(max_queued, cancel_grace_seconds)
        self._address = address
        self._max_queued = max_queued
        self._grace = cancel_grace_seconds
        self._start_timeout = start_timeout_seconds
        self._progress_interval = progress_interval_seconds
        self._watch_interval = watch_interval_seconds
        self._source = uuid.uuid4().hex  # this executor's tasks, on a cluster others may share

        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._phase = executor.Phase.NEW
        self._client: Client | None = None
        self._held: dict[str, _Held] = {}
        self._to_submit: deque[str] = deque()
        self._inbox: deque[tuple[Any, ...]] = deque()  # from the client's threads
        # (task id, the address of its worker, or None: every worker, as it may have started
        # on one the service has not heard from yet)
        self._to_stop: deque[tuple[str, str | None]] = deque()
        self._to_cancel: deque[Future[Any]] = deque()
        self._to_restart: deque[str] = deque()
        self._shared: OrderedDict[str, _Shared] = OrderedDict()
        self._outbox = executor.Outbox(self._lock)
        self._workers: dict[str, executor.WorkerInfo] = {}
        self._gone: set[str] = set()  # addresses of workers that died (a new one gets a new port)
        self._versions_checked: set[str] = set()
        self._problem: str | None = "not connected to the Dask scheduler yet"
        self._mismatch: str | None = None  # workers whose versions differ from the service's
        self._stopping = threading.Event()  # ends the watch thread
        self._mean_task_seconds = 1.0
        self._threads: list[threading.Thread] = []

    # ---- the Executor interface -----------------------------------------------------------------

    def start(self, listener: executor.EventListener) -> None:
        from distributed import Client

        with self._lock:
            executor.check_start(self._phase)
            self._phase = executor.Phase.STARTING
            self._outbox.listener = listener
        try:
            client = Client(self._address, timeout=self._start_timeout, set_as_default=False)
        except Exception as exc:
            with self._lock:
                self._phase = executor.Phase.CLOSED
            raise RuntimeError(
                f"the executor could not reach the Dask scheduler at {self._address}: "
                f"{describe(exc)}"
            ) from None
        self._client = client
        client.subscribe_topic(dask_worker.TOPIC, self._on_topic)
        try:
            problem = self._scheduler_problem() or self._wait_for_workers()
        except Exception as exc:
            problem = f"the cluster could not be inspected: {describe(exc)}"
        if problem is not None:
            self._close_client()
            with self._lock:
                self._phase = executor.Phase.CLOSED
            raise RuntimeError(f"the Dask cluster is not usable: {problem}")
        with self._lock:
            self._phase = executor.Phase.RUNNING
            workers = sorted(self._workers)
        for target, name in ((self._supervise, "supervisor"), (self._watch, "watch")):
            thread = threading.Thread(target=target, name=f"scratchnet-dask-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("executor ready: Dask scheduler %s, workers %s", self._address, workers)

    def submit(
        self, task_id: str, task: executor.Task, *, deadline_seconds: float | None = None
    ) -> None:
        with self._lock:
            executor.check_submission(self._phase, task_id, task_id in self._held, deadline_seconds)
            # tasks a free worker is about to take are not waiting
            running = sum(1 for held in self._held.values() if held.started_at is not None)
            free = max(0, self._slots() - running)
            waiting = max(0, len(self._held) - running - free)
            if waiting >= self._max_queued:
                mean, slots = self._mean_task_seconds, self._slots()
                raise executor.QueueFull(
                    waiting, executor.retry_after_seconds(mean, waiting, slots)
                )
            self._held[task_id] = _Held(task, deadline_seconds, time.monotonic())
            self._to_submit.append(task_id)
            self._wakeup.notify()

    def cancel(self, task_id: str) -> bool:
        with self._lock:
            held = self._held.get(task_id)
            if held is None:
                return False
            if held.started_at is None:
                del self._held[task_id]
                if held.future is not None:  # Dask has it: a worker may be starting it now
                    self._to_stop.append((task_id, None))
                    self._to_cancel.append(held.future)
                self._release_arrays(held)
                self._outbox.append(executor.TaskCancelled(task_id))
                self._wakeup.notify()
            elif held.stop_reason is None:
                self._request_stop(task_id, held, executor.StopCause.CANCEL, time.monotonic())
            return True

    def shutdown(self) -> None:
        with self._lock:
            if self._phase in (executor.Phase.NEW, executor.Phase.CLOSED):
                self._phase = executor.Phase.CLOSED
                return
            self._phase = executor.Phase.CLOSING
            for task_id, held in self._held.items():
                if held.future is not None:
                    self._to_stop.append((task_id, held.worker))
                    self._to_cancel.append(held.future)
                self._outbox.append(executor.TaskCancelled(task_id))
            self._held.clear()
            self._to_submit.clear()
            self._wakeup.notify_all()
        self._stopping.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self._outbox.deliver()
        self._close_client()
        with self._lock:
            self._phase = executor.Phase.CLOSED

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._phase is executor.Phase.RUNNING and self._problem is None

    @property
    def worker_count(self) -> int:
        """The cluster's training workers (its `train` resources), at least 1."""
        with self._lock:
            return max(1, self._slots())

    def worker_pids(self) -> list[int]:
        """Process ids of the cluster's workers (on their own machines)."""
        with self._lock:
            return [info.pid for info in self._workers.values()]

    def counts(self) -> dict[str, int]:
        with self._lock:
            running = sum(1 for held in self._held.values() if held.started_at is not None)
            return {"queued": len(self._held) - running, "running": running}

    def not_ready_reason(self) -> str | None:
        with self._lock:
            if self._phase is not executor.Phase.RUNNING:
                return f"the Dask executor is {self._phase.value}"
            return self._problem

    def cluster(self) -> list[executor.WorkerInfo] | None:
        with self._lock:
            return [self._workers[name] for name in sorted(self._workers)]

    # ---- helpers callers hold the lock for --------------------------------------------------

    def _slots(self) -> int:
        return sum(int(info.resources.get(TRAIN_RESOURCE, 0)) for info in self._workers.values())

    def _request_stop(
        self, task_id: str, held: _Held, reason: executor.StopCause, now: float
    ) -> None:
        held.stop_reason = reason
        held.end_at = now + self._grace
        assert held.worker is not None  # only started tasks are stopped this way
        self._to_stop.append((task_id, held.worker))
        self._wakeup.notify()

    def _finish(self, task_id: str, held: _Held, event: executor.TaskEvent) -> None:
        """End the task with `event`, or as its stop reason says if it was stopped."""
        event = executor.ending_of(event, held.stop_reason, held.deadline_seconds)
        if held.started_at is not None:
            elapsed = time.monotonic() - held.started_at
            self._mean_task_seconds = executor.mean_seconds(self._mean_task_seconds, elapsed)
        del self._held[task_id]
        self._release_arrays(held)
        self._outbox.append(event)

    def _release_arrays(self, held: _Held) -> None:
        for key in held.arrays:
            shared = self._shared.get(key)
            if shared is not None:
                shared.users -= 1
        held.arrays = ()
        idle = [key for key, shared in self._shared.items() if shared.users <= 0]
        for key in idle[: max(0, len(idle) - KEPT_ARRAYS)]:
            self._to_cancel.append(self._shared.pop(key).future)

    # ---- callbacks from the client's threads ------------------------------------------------

    def _on_topic(self, event: tuple[float, Any]) -> None:
        """A worker's event (the client's event loop thread: only queue it)."""
        message = event[1]
        if isinstance(message, list | tuple) and message and message[0] == self._source:
            with self._lock:
                self._inbox.append(("message", *message[1:]))
                self._wakeup.notify()

    def _on_done(self, task_id: str, future: Future[Any]) -> None:
        """A task's Dask future finished (the client's callback thread): read and release it."""
        outcome: Any = None
        try:
            if future.status == "finished":
                outcome = future.result()
            elif future.status == "error":
                outcome = future.exception()
        except Exception as exc:
            outcome = exc
        future.release()
        with self._lock:
            self._inbox.append(("done", task_id, future, outcome))
            self._wakeup.notify()

    # ---- the supervisor thread --------------------------------------------------------------

    def _supervise(self) -> None:
        executor.supervise(self._supervise_once, self._abandon, self._outbox)

    def _abandon(self) -> None:
        """After the supervisor failed: every task held fails, and the executor takes no more
        (closing, as the local pool does: with no supervisor a task would wait forever)."""
        with self._lock:
            self._phase = executor.Phase.CLOSING
            self._problem = "the executor's supervisor failed"
            for task_id in list(self._held):
                detail = "the executor stopped unexpectedly"
                self._outbox.append(
                    executor.TaskFailed(task_id, executor.Failure.WORKER_LOST, detail)
                )
            self._held.clear()

    def _supervise_once(self) -> bool:
        """One round: hand over new tasks, send stops, handle what came back, run the timers,
        deliver events. False once the executor is closing and everything is sent."""
        self._send_stops_and_cancels()
        self._hand_over()
        while True:
            with self._lock:
                if not self._inbox:
                    break
                item = self._inbox.popleft()
            self._handle(item)
        self._run_timers(time.monotonic())
        self._outbox.deliver()
        with self._lock:
            if self._phase is executor.Phase.CLOSING:
                if self._to_stop or self._to_cancel:
                    return True
                for shared in self._shared.values():
                    self._to_cancel.append(shared.future)
                self._shared.clear()
                closing = True
            else:
                closing = False
                if not (self._inbox or self._to_submit or self._to_stop or self._to_cancel):
                    self._wakeup.wait(self._seconds_to_next_timer(time.monotonic()))
        if closing:
            self._send_stops_and_cancels()
            return False
        return True

    def _hand_over(self) -> None:
        """Give new tasks to Dask, their big arrays scattered once per content."""
        assert self._client is not None
        while True:
            with self._lock:
                if self._phase is not executor.Phase.RUNNING or not self._to_submit:
                    return
                task_id = self._to_submit.popleft()
                held = self._held.get(task_id)
                if held is None or held.task is None:
                    continue  # cancelled meanwhile
                task, held.task = held.task, None
            buffer = io.BytesIO()
            pickler = _Pickler(buffer)
            try:
                pickler.dump(task)
            except Exception as exc:
                detail = f"the task cannot be pickled: {type(exc).__name__}: {describe(exc)}"
                with self._lock:
                    if self._held.get(task_id) is held:
                        self._finish(
                            task_id,
                            held,
                            executor.TaskFailed(task_id, executor.Failure.TASK_UNPICKLABLE, detail),
                        )
                continue
            del task
            keys = tuple(pickler.shared)
            futures = [self._scattered(key, pickler.shared[key]) for key in keys]
            future = self._client.submit(
                dask_worker.run,
                task_id,
                self._source,
                buffer.getvalue(),
                keys,
                self._progress_interval,
                *futures,
                key=f"scratchnet-{self._source}-{task_id}",
                resources={TRAIN_RESOURCE: 1},
                pure=False,
                retries=0,
            )
            with self._lock:
                still_held = self._held.get(task_id) is held
                if still_held:
                    held.future = future
                    held.arrays = keys
                    for key in keys:
                        self._shared[key].users += 1
                else:  # cancelled while it was handed over
                    self._to_cancel.append(future)
            if still_held:
                future.add_done_callback(functools.partial(self._on_done, task_id))

    def _scattered(self, key: str, array: np.ndarray) -> Future[Any]:
        """The cluster's copy of the array with this content key (scattered now if none)."""
        assert self._client is not None
        with self._lock:
            shared = self._shared.get(key)
            if shared is not None and shared.future.status == "finished":
                self._shared.move_to_end(key)
                return shared.future
        future = self._client.scatter({key: array}, hash=False)[key]  # named by its content
        with self._lock:
            previous = self._shared.get(key)
            users = previous.users if previous is not None else 0
            self._shared[key] = _Shared(future, users)
        return future

    def _send_stops_and_cancels(self) -> None:
        assert self._client is not None
        with self._lock:
            stops, self._to_stop = list(self._to_stop), deque()
            cancels, self._to_cancel = list(self._to_cancel), deque()
            restarts, self._to_restart = list(self._to_restart), deque()
        for task_id, worker in stops:
            workers = None if worker is None else [worker]
            try:
                self._client.run(
                    dask_worker.request_stop, task_id, workers=workers, on_error="ignore"
                )
            except Exception as exc:  # the scheduler is gone: so are its tasks
                logger.warning("could not ask %s to stop task %s: %s", worker, task_id, exc)
        for future in cancels:
            future.cancel()
            future.release()
        for worker in restarts:
            threading.Thread(
                target=self._restart, args=(worker,), name="scratchnet-dask-restart", daemon=True
            ).start()

    def _restart(self, worker: str) -> None:
        client = self._client
        if client is None:
            return
        try:
            client.restart_workers([worker], raise_for_error=False)
        except Exception as exc:
            logger.error("could not restart Dask worker %s: %s", worker, exc)

    def _handle(self, item: tuple[Any, ...]) -> None:
        if item[0] == "done":
            _done, task_id, future, outcome = item
            self._on_outcome(task_id, future, outcome)
            return
        _message, worker, pid, kind, task_id, *rest = item
        decoded: Any = None
        if kind == "progress":
            try:
                decoded = pickle.loads(rest[0])
            except Exception as exc:
                logger.error("dropped progress of task %s: %s", task_id, describe(exc))
                return
        with self._lock:
            held = self._held.get(task_id)
            if held is None:
                return  # it ended (cancelled while queued: its worker was asked to stop)
            if kind == "started":
                if held.worker is not None and held.worker != worker:
                    self._to_stop.append((task_id, worker))
                    if held.future is not None:
                        self._to_cancel.append(held.future)
                    self._finish(
                        task_id,
                        held,
                        self._lost(
                            task_id, held.worker, "died; the scheduler re-ran its task elsewhere"
                        ),
                    )
                    return
                held.started_at = held.started_at or time.monotonic()
                held.worker = worker
                self._outbox.append(executor.event_of(task_id, (kind,), worker_pid=int(pid)))
            elif kind == "progress" and held.worker == worker:
                self._outbox.append(executor.event_of(task_id, (kind,), decoded))

    def _on_outcome(self, task_id: str, future: Future[Any], outcome: Any) -> None:
        from distributed.scheduler import KilledWorker

        decoded: Any = None
        if isinstance(outcome, tuple) and outcome and outcome[0] == "succeeded":
            try:
                decoded = pickle.loads(outcome[2])
            except Exception as exc:
                detail = f"cannot be unpickled by the service: {type(exc).__name__}: "
                outcome = (
                    "failed",
                    task_id,
                    executor.Failure.RESULT_UNPICKLABLE.value,
                    "the task's result " + detail + describe(exc),
                )
        with self._lock:
            held = self._held.get(task_id)
            if held is None or held.future is not future:
                return  # it already ended (cancelled, shut down)
            event: executor.TaskEvent
            if isinstance(outcome, tuple) and outcome:
                event = executor.event_of(task_id, outcome, decoded)
            elif isinstance(outcome, KilledWorker):
                dead = held.worker or _last_worker(outcome)
                event = self._lost(task_id, dead, "died")
                if dead is not None:  # gone now, whatever a worker list read before says
                    self._gone.add(dead)
                    self._workers.pop(dead, None)
            elif outcome is None:  # cancelled or lost by the scheduler (its data's worker left)
                event = self._lost(
                    task_id, held.worker, "left, or a worker holding the task's data did"
                )
            else:
                detail = f"the task did not run on the cluster: {describe(outcome)}"
                event = executor.TaskFailed(task_id, executor.Failure.INTERNAL, detail)
            self._finish(task_id, held, event)

    @staticmethod
    def _lost(task_id: str, worker: str | None, what: str) -> executor.TaskFailed:
        detail = f"Dask worker {worker or '(not known)'} {what}"
        logger.warning("task %s failed: %s", task_id, detail)
        return executor.TaskFailed(task_id, executor.Failure.WORKER_LOST, detail)

    def _seconds_to_next_timer(self, now: float) -> float | None:
        moments = []
        for held in self._held.values():
            due = executor.deadline_at(held.started_at, held.stop_reason, held.deadline_seconds)
            if due is not None:
                moments.append(due)
            if held.end_at is not None:
                moments.append(held.end_at)
        return max(0.0, min(moments) - now) if moments else None

    def _run_timers(self, now: float) -> None:
        with self._lock:
            for task_id, held in list(self._held.items()):
                deadline = executor.deadline_at(
                    held.started_at, held.stop_reason, held.deadline_seconds
                )
                if deadline is not None and now >= deadline:
                    logger.info(
                        "task %s exceeded its %g s deadline", task_id, held.deadline_seconds
                    )
                    self._request_stop(task_id, held, executor.StopCause.TIMEOUT, now)
                elif held.end_at is not None and now >= held.end_at:
                    logger.warning(
                        "Dask worker %s did not stop task %s within %g s; restarting it",
                        held.worker,
                        task_id,
                        self._grace,
                    )
                    if held.future is not None:
                        self._to_cancel.append(held.future)
                    if held.worker is not None:
                        self._to_restart.append(held.worker)
                    self._finish(task_id, held, executor.TaskCancelled(task_id))

    # ---- the cluster ------------------------------------------------------------------------

    def _scheduler_problem(self) -> str | None:
        """Why the scheduler cannot be used: it would re-run a task whose worker died."""
        import dask.config

        assert self._client is not None
        allowed = self._client.run_on_scheduler(dask.config.get, ALLOWED_FAILURES_SETTING)
        if allowed == 0:
            return None
        return (
            f"the scheduler lets a task fail {allowed} times: start it with "
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 so that a lost worker fails its task"
        )

    def _wait_for_workers(self) -> str | None:
        """Wait until the workers are usable (None), or return why not: at once for workers of
        other versions (waiting will not fix them), after the start timeout otherwise."""
        deadline = time.monotonic() + self._start_timeout
        while True:
            self._watch_once()
            with self._lock:
                problem, mismatch = self._problem, self._mismatch
            if problem is None or mismatch is not None or time.monotonic() > deadline:
                return problem
            time.sleep(0.1)

    def _watch(self) -> None:
        while not self._stopping.wait(self._watch_interval):
            try:
                self._watch_once()
            except Exception as exc:
                logger.warning("could not read the Dask cluster's state: %s", exc)
                with self._lock:
                    self._problem = f"the Dask scheduler does not answer: {describe(exc)}"

    def _watch_once(self) -> None:
        """Read the workers; check the versions of any new one; set the readiness problem."""
        from distributed.versions import get_package_info

        client = self._client
        assert client is not None
        described = client.scheduler_info(n_workers=-1).get("workers", {})
        with self._lock:
            described = {a: info for a, info in described.items() if a not in self._gone}
            known = {address: info.pid for address, info in self._workers.items()}
            # while some differ, check them all again: the odd one may have left
            checked = self._versions_checked if self._mismatch is None else set()
            new = set(described) - checked
        unnamed = [address for address in described if address not in known]
        if unnamed:  # the scheduler does not report process ids: ask the new workers
            pids: Any = client.run(os.getpid, workers=unnamed, on_error="return")
            known |= {a: pid for a, pid in pids.items() if isinstance(pid, int)}
        workers = {
            address: executor.WorkerInfo(
                name=address,
                pid=known.get(address, 0),
                resources={k: float(v) for k, v in (info.get("resources") or {}).items()},
            )
            for address, info in described.items()
        }
        problem: str | None = None
        if new:
            reported: Any = client.get_versions(packages=list(VERSIONED_PACKAGES))
            versions: dict[str, Any] = reported["workers"]
            local = get_package_info(VERSIONED_PACKAGES)
            problem = versions_problem(local, {a: v for a, v in versions.items() if a in workers})
        with self._lock:
            self._workers = {a: w for a, w in workers.items() if a not in self._gone}
            if new:
                if problem is None:
                    self._versions_checked = set(workers)
                elif problem != self._mismatch:
                    logger.error("Dask workers do not match the service: %s", problem)
                self._mismatch = problem
            problem = self._mismatch
            if problem is None and self._slots() == 0:
                problem = (
                    f"no Dask worker offers the {TRAIN_RESOURCE} resource: start workers with "
                    f"`dask worker {self._address} --nthreads 1 --resources {TRAIN_RESOURCE}=1`"
                )
            self._problem = problem

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:
                logger.warning("closing the Dask client failed: %s", exc)


def _last_worker(exc: BaseException) -> str | None:
    worker = getattr(exc, "last_worker", None)
    address = getattr(worker, "address", None)
    return str(address) if address is not None else None
