"""What the local process-pool executor costs, side by side in one run.

    python -m benchmarks.executor_bench

1. round trip of a trivial task (submit -> TaskSucceeded) with warm workers;
2. two CPU-bound tasks on two workers against one alone (1.0 = perfectly parallel);
3. a 16 MB dataset in, 1 MB of weights out, against the trivial round trip and against
   pickling the same objects in-process;
4. 20,000 progress items: pipe messages and time against a task that reports nothing;
5. one should_stop() poll inside a worker against a plain Python call.
"""

from __future__ import annotations

import pickle
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.execution.executor import (
    TaskCancelled,
    TaskEvent,
    TaskFailed,
    TaskProgress,
    TaskSucceeded,
)
from service.execution.process_pool import LocalProcessExecutor

Report = Callable[[Any], None]
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class Trivial:
    def run(self, report: Report, should_stop: ShouldStop) -> int:
        return 1


@dataclass(frozen=True)
class Spin:
    """CPU-bound pure Python; returns (start, end) on the machine-wide monotonic clock."""

    iterations: int

    def run(self, report: Report, should_stop: ShouldStop) -> tuple[float, float]:
        start = time.monotonic()
        total = 0
        for i in range(self.iterations):
            total += i * i
        return start, time.monotonic()


@dataclass(frozen=True)
class Payload:
    X: np.ndarray  # (n_samples, 2)
    weights_shape: tuple[int, int]

    def run(self, report: Report, should_stop: ShouldStop) -> np.ndarray:
        return np.full(self.weights_shape, float(self.X[0, 0]))


@dataclass(frozen=True)
class ReportMany:
    count: int

    def run(self, report: Report, should_stop: ShouldStop) -> int:
        for item in range(self.count):
            report(item)
        return self.count


@dataclass(frozen=True)
class PollCost:
    """Nanoseconds per should_stop() call and per call of a plain function returning False."""

    calls: int

    def run(self, report: Report, should_stop: ShouldStop) -> tuple[float, float]:
        def plain() -> bool:
            return False

        timings = []
        for poll in (should_stop, plain):
            start = time.perf_counter()
            for _ in range(self.calls):
                poll()
            timings.append((time.perf_counter() - start) / self.calls * 1e9)
        return timings[0], timings[1]


class Collector:
    """The listener: when each event arrived, and each task's terminal event by id."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self.terminal: dict[str, tuple[float, TaskEvent]] = {}
        self._changed = threading.Condition()

    def __call__(self, event: TaskEvent) -> None:
        at = time.perf_counter()
        with self._changed:
            self.events.append(event)
            if isinstance(event, TaskSucceeded | TaskFailed | TaskCancelled):
                self.terminal[event.task_id] = (at, event)
                self._changed.notify_all()

    def finished(self, task_id: str) -> tuple[float, TaskEvent]:
        with self._changed:
            self._changed.wait_for(lambda: task_id in self.terminal)
            return self.terminal[task_id]


def run_once(pool: LocalProcessExecutor, collector: Collector, task_id: str, task: Any) -> float:
    """Seconds from submit to the terminal event."""
    start = time.perf_counter()
    pool.submit(task_id, task)
    at, event = collector.finished(task_id)
    assert isinstance(event, TaskSucceeded), event
    return at - start


def main() -> None:
    collector = Collector()
    pool = LocalProcessExecutor(2, 16)
    started = time.perf_counter()
    pool.start(collector)
    print(
        f"start 2 workers (spawn, numpy + engine imported): {time.perf_counter() - started:.3f} s"
    )
    try:
        for i in range(20):  # warm up both workers and the task module
            run_once(pool, collector, f"warm{i}", Trivial())

        trips = sorted(run_once(pool, collector, f"t{i}", Trivial()) for i in range(300))
        median = statistics.median(trips)
        p90 = trips[int(0.9 * len(trips))]
        print(f"trivial task round trip: median {median * 1e3:.2f} ms, p90 {p90 * 1e3:.2f} ms")

        iterations = 4_000_000
        alone = run_once(pool, collector, "alone", Spin(iterations))
        start = time.perf_counter()
        pool.submit("a", Spin(iterations))
        pool.submit("b", Spin(iterations))
        _, a = collector.finished("a")
        _, b = collector.finished("b")
        both = time.perf_counter() - start
        assert isinstance(a, TaskSucceeded) and isinstance(b, TaskSucceeded)
        (a0, a1), (b0, b1) = a.result, b.result
        overlap = max(0.0, min(a1, b1) - max(a0, b0)) / max(a1 - a0, b1 - b0)
        print(
            f"CPU-bound: one task {alone:.3f} s, two on two workers {both:.3f} s "
            f"(ratio {both / alone:.2f}; 1.0 = parallel, 2.0 = serial), "
            f"the tasks' own intervals overlap {overlap:.0%}"
        )

        X = np.random.default_rng(0).normal(size=(1_000_000, 2))  # (1_000_000, 2), 16 MB
        payload = Payload(X, (256, 512))  # 1 MB back
        big = statistics.median(run_once(pool, collector, f"big{i}", payload) for i in range(5))
        start = time.perf_counter()
        for _ in range(5):
            pickle.loads(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
            weights = np.zeros((256, 512))
            pickle.loads(pickle.dumps(weights, protocol=pickle.HIGHEST_PROTOCOL))
        in_process = (time.perf_counter() - start) / 5
        print(
            f"16 MB in + 1 MB out: {big * 1e3:.1f} ms round trip "
            f"({big / median:.0f}x the trivial task; extra {1e3 * (big - median):.1f} ms); "
            f"pickling the same in-process {in_process * 1e3:.1f} ms "
            f"(pipe transfer ≈ {(big - median) / in_process:.1f}x a pickle round trip)"
        )

        count = 20_000
        quiet = run_once(pool, collector, "quiet", ReportMany(0))
        noisy = run_once(pool, collector, "noisy", ReportMany(count))
        messages = sum(
            1 for e in collector.events if e.task_id == "noisy" and isinstance(e, TaskProgress)
        )
        print(
            f"{count} progress items: {messages} messages, {noisy * 1e3:.1f} ms "
            f"(vs {quiet * 1e3:.2f} ms reporting nothing; "
            f"{(noisy - quiet) / count * 1e6:.2f} µs per item)"
        )

        pool.submit("poll", PollCost(2_000_000))
        _, poll = collector.finished("poll")
        assert isinstance(poll, TaskSucceeded)
        flag_ns, plain_ns = poll.result
        print(
            f"should_stop(): {flag_ns:.0f} ns per poll vs {plain_ns:.0f} ns for a plain call "
            f"(ratio {flag_ns / plain_ns:.1f})"
        )
    finally:
        pool.shutdown()


if __name__ == "__main__":
    main()
