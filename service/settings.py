"""Deployment settings, read from the environment (prefix `SCRATCHNET_`, e.g. SCRATCHNET_WORKERS=4).

Each field's docstring says what it controls; the limits are checked on top of the engine's own
hyperparameter bounds, before a job is queued.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator
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
