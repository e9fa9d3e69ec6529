"""Pure ASGI middleware: a token bucket per API key (per client address for requests without
a valid key), so one client cannot take the service's event loop from everyone else.

A bucket holds SCRATCHNET_RATE_LIMIT_BURST tokens and refills at SCRATCHNET_RATE_LIMIT; each
request takes one. An empty bucket answers 429 (problem+json, `rate-limited`) with
`Retry-After`; every counted response carries `RateLimit-Limit`, `RateLimit-Remaining` and
`RateLimit-Reset` (seconds until the bucket is full again). Health, readiness (also the
Open Inference Protocol's) and metrics are not counted. The caller it identifies is left on
the request for `service.api.auth`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import problems
from service.api.auth import KeyRing, presented_key
from service.metrics import ServiceMetrics

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
PER = {"s": 1.0, "min": 60.0, "h": 3600.0}
# Buckets kept at most (the least recently used go first): a flood of client addresses cannot
# grow this table without bound; a dropped bucket comes back full, as it would have refilled.
MAX_BUCKETS = 10_000


def per_second(rate: str) -> float:
    """`20/s`, `600/min`, `1000/h` as requests a second."""
    count, _, unit = rate.partition("/")
    return float(count) / PER[unit]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyRing,
        rate: str,
        burst: int,
        metrics: ServiceMetrics,
    ) -> None:
        self.app = app
        self.keys = keys
        self.rate = per_second(rate)
        self.burst = burst
        self.metrics = metrics
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def _take(self, identity: str, now: float) -> tuple[bool, float]:
        """Take a token: (taken, tokens left), refilled for the time since the last take."""
        with self._lock:
            bucket = self._buckets.pop(identity, None) or _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            taken = bucket.tokens >= 1.0
            if taken:
                bucket.tokens -= 1.0
            self._buckets[identity] = bucket
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
            return taken, bucket.tokens

    def _identity(self, scope: Scope) -> str:
        """The key's name when the request carries a valid one, else the client's address."""
        if self.keys.enabled:
            authorization = api_key = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                elif name == b"x-api-key":
                    api_key = value.decode("latin-1")
            caller = self.keys.identify(presented_key(authorization, api_key))
            if caller is not None:
                scope.setdefault("state", {})["caller"] = caller
                return f"key:{caller.name}"
        client = scope.get("client")
        return f"address:{client[0] if client else 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        identity = self._identity(scope)
        taken, left = self._take(identity, time.monotonic())
        full_in = math.ceil((self.burst - left) / self.rate)
        limits = [
            (b"ratelimit-limit", str(self.burst).encode()),
            (b"ratelimit-remaining", str(int(left)).encode()),
            (b"ratelimit-reset", str(full_in).encode()),
        ]
        if not taken:
            self.metrics.rate_limited.inc()
            wait = max(1, math.ceil((1.0 - left) / self.rate))
            response = problems.problem_response(
                429,
                "rate-limited",
                "Too many requests",
                f"more than {self.burst} requests at once, or more than {self.rate:g} a second "
                f"on average (rate_limit); retry after {wait} s",
                headers={"Retry-After": str(wait), **{k.decode(): v.decode() for k, v in limits}},
                path=scope["path"],
            )
            await response(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *limits]
            await send(message)

        await self.app(scope, receive, send_with_limits)
