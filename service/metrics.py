"""Prometheus metrics of one app instance (its own CollectorRegistry, so apps never share).

    scratchnet_http_requests_total{method,route,status}            requests answered
    scratchnet_http_request_duration_seconds{method,route,status}  latency histogram
    scratchnet_jobs{status}                                        jobs in each state now
    scratchnet_epochs_trained_total                                epochs trained by all jobs
    scratchnet_rate_limited_total                                  requests the rate limit refused
    scratchnet_queue_depth                                         jobs waiting for a worker
    scratchnet_running_jobs                                        jobs on a worker now
    scratchnet_workers                                             live worker processes
    scratchnet_event_streams                                       open job event streams
    scratchnet_stored_bytes                                        dataset and model bytes kept
    scratchnet_max_stored_bytes                                    their limit

`route` is the route's path template (`/v1/jobs/{job_id}`), never the raw path, so ids do not
explode the label space; requests that match no route count as `unmatched`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class StateReading:
    """What the gauges show, read at scrape time."""

    jobs_by_status: dict[str, int]
    queued: int
    running: int
    workers: int
    event_streams: int
    stored_bytes: int
    max_stored_bytes: int


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], StateReading]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        reading = self._read()
        jobs = GaugeMetricFamily("scratchnet_jobs", "Jobs in each state.", labels=["status"])
        for status, count in reading.jobs_by_status.items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "scratchnet_queue_depth", "Jobs waiting for a worker.", value=reading.queued
        )
        yield GaugeMetricFamily(
            "scratchnet_running_jobs", "Jobs on a worker now.", value=reading.running
        )
        yield GaugeMetricFamily(
            "scratchnet_workers", "Live worker processes.", value=reading.workers
        )
        yield GaugeMetricFamily(
            "scratchnet_event_streams", "Open job event streams.", value=reading.event_streams
        )
        yield GaugeMetricFamily(
            "scratchnet_stored_bytes",
            "Bytes of dataset and model content kept.",
            value=reading.stored_bytes,
        )
        yield GaugeMetricFamily(
            "scratchnet_max_stored_bytes",
            "The limit on stored bytes (max_stored_bytes).",
            value=reading.max_stored_bytes,
        )


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, fds
        self.requests = Counter(
            "scratchnet_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "scratchnet_http_request_duration_seconds",
            "Time from request to the end of the response.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.epochs_trained = Counter(
            "scratchnet_epochs_trained", "Epochs trained by all jobs.", registry=self.registry
        )
        self.rate_limited = Counter(
            "scratchnet_rate_limited",
            "Requests refused with 429 by the rate limit.",
            registry=self.registry,
        )

    def watch_state(self, read: Callable[[], StateReading]) -> None:
        self.registry.register(_StateCollector(read))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(method, route, code).inc()
        self.latency.labels(method, route, code).observe(seconds)
