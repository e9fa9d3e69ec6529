"""Deployment settings, read from the environment (prefix `SCRATCHNET_`, e.g. SCRATCHNET_WORKERS=4).

Each field's docstring says what it controls; the limits are checked on top of the engine's own
hyperparameter bounds, before a job is queued.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


def _cpu_count() -> int:
    return os.cpu_count() or 1


class Settings(BaseSettings):
    """scratchnet's service settings."""

    model_config = SettingsConfigDict(
        env_prefix="SCRATCHNET_", extra="ignore", use_attribute_docstrings=True
    )

    host: str = "127.0.0.1"
    """Address `python -m service` binds to (the Docker image uses 0.0.0.0)."""

    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port `python -m service` listens on."""

    executor: str | None = Field(default=None, pattern=r"^(tcp|tls)://[^\s/]+:[0-9]+$")
    """Where training runs. Unset: `workers` worker processes on this machine. The address of a
    Dask scheduler (`tcp://host:8786`, or `tls://host:8786` with Dask's TLS settings): on that
    cluster's workers (needs `pip install 'scratchnet[dask]'`; README says how to start it)."""

    @field_validator("executor", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # SCRATCHNET_EXECUTOR= (docker compose's default)

    workers: int = Field(default_factory=_cpu_count, ge=1, le=256)
    """Training worker processes (default: the machine's CPU count) when `executor` is unset.
    Jobs beyond this many wait in the queue."""

    max_queued_jobs: int = Field(default=100, ge=0)
    """Jobs that may wait for a free worker; one more is refused with 429 and Retry-After."""

    job_timeout_seconds: float = Field(default=3600.0, gt=0)
    """Wall-clock limit of one job once a worker starts it; past it the job fails with
    `timeout`."""

    max_hidden_layers: int = Field(default=8, ge=0)
    """Most hidden layers a job may ask for."""

    max_units_per_layer: int = Field(default=4096, ge=1)
    """Most units in any one hidden layer."""

    max_samples: int = Field(default=1_000_000, ge=1)
    """Most points in one dataset (generated, custom or CSV)."""

    max_epochs: int = Field(default=1_000_000, ge=1)
    """Most epochs a job may ask for."""

    max_work: float = Field(default=1e11, gt=0)
    """Work budget of one job: training points x network parameters x epochs. The engine does
    roughly 5e7 to 2e8 of these units a second on one core, so the default (1e11) allows moons
    with 100,000 points, one hidden layer of 100 units and 50 epochs (2e9, under a minute) and
    the 20,000-epoch tutorial run (5e7) while refusing jobs that would take hours."""

    max_sweep_configurations: int = Field(default=64, ge=1)
    """Most configurations one sweep may ask for (the product of its grid's list lengths); each
    is also held to the job limits above, and their work summed to max_work."""

    predict_max_points: int = Field(default=100_000, ge=1)
    """Most points in one prediction request."""

    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest request body accepted (JSON, CSV or an imported model); larger ones get 413."""

    picture_cache_size: int = Field(default=64, ge=0)
    """PNG pictures kept in memory (least recently used are dropped first); 0 disables the
    cache."""

    page_size_default: int = Field(default=50, ge=1)
    """Items per page of a list when `limit` is not given."""

    page_size_max: int = Field(default=500, ge=1)
    """Largest `limit` a list request may ask for."""

    sse_ping_seconds: float = Field(default=15.0, gt=0)
    """Seconds between keep-alive comments on an idle event stream."""

    log_level: LogLevel = "info"
    """Log level of the service and of uvicorn."""

    data_dir: Path | None = None
    """Where the service keeps everything, in an SQLite database (`scratchnet.db`); unset, it
    keeps everything in memory and a restart loses it."""

    max_stored_bytes: int | None = Field(default=None, ge=1)
    """Bytes of datasets and models the service keeps (their points, weights and histories),
    in memory or on disk; a create past it answers 507. Default: a quarter of the machine's
    memory without a data directory, half the data directory's free disk with one."""

    cache_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    """With a data directory: bytes of datasets and models kept loaded in memory (least
    recently used are dropped first)."""

    api_keys: str | None = None
    """Comma-separated `name:key` entries; when set, every /v1 route needs `Authorization:
    Bearer <key>` (or `X-API-Key: <key>`) and each key sees only what it created. The name is
    what logs and ownership show; the key is never shown. Keys are at least 16 characters."""

    admin_api_keys: str | None = None
    """Comma-separated `name:key` entries of keys that see and manage everything."""

    protect_docs: bool = False
    """When keys are set: also require a key for /metrics, /docs, /redoc and /openapi.json."""

    max_active_jobs_per_key: int = Field(default=10, ge=1)
    """Queued plus running jobs and sweeps one key (or, without keys, everyone together) may
    have; one more is refused with 429 and Retry-After."""

    rate_limit: str = Field(default="100/s", pattern=r"^\d+(\.\d+)?/(s|min|h)$")
    """Requests a key (or, without a key, a client address) may make, as `N/s`, `N/min` or
    `N/h` on average; past it 429 with Retry-After and RateLimit headers. Health, readiness and
    metrics are not counted."""

    rate_limit_burst: int = Field(default=200, ge=1)
    """Requests a key may make at once above its average rate (the token bucket's size)."""

    request_timeout_seconds: float = Field(default=30.0, gt=0)
    """Longest a prediction or a picture may take; past it 503, and the work is abandoned."""

    cors_origins: str | None = None
    """Comma-separated origins browsers may call the API from (CORS is off when unset); `*`
    allows any origin."""

    cors_allow_credentials: bool = False
    """Let browsers send cookies and HTTP authentication cross-origin (API keys in headers
    need no credentials); refused together with a `*` origin."""

    log_format: Literal["json", "text"] = "json"
    """`json`: one JSON object a line (for log collectors); `text`: plain lines, for reading
    at a terminal."""

    @model_validator(mode="after")
    def _cors_wildcard_without_credentials(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_origin_list():
            raise ValueError(
                "SCRATCHNET_CORS_ORIGINS=* with SCRATCHNET_CORS_ALLOW_CREDENTIALS=true would let "
                "any web page act with its visitors' credentials; list the origins instead"
            )
        return self

    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]

    def stored_bytes_limit(self) -> int:
        """max_stored_bytes, or its default for this machine."""
        if self.max_stored_bytes is not None:
            return self.max_stored_bytes
        if self.data_dir is not None:
            return shutil.disk_usage(self.data_dir).free // 2
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
