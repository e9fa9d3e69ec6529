"""scratchnet for its users: `Client` and `AsyncClient` for the service, the scikit-learn
estimators `MLPClassifier` and `MLPRegressor` (in-process or on a service), and the
`scratchnet` command.

Importing this package never imports the web service (FastAPI, uvicorn) nor scikit-learn:
the estimators are loaded on first use.

    client        Client and AsyncClient
    _base         what both clients share: every operation, retries, event streams
    types         typed responses, checked against the service's OpenAPI document
    errors        the exception tree (problem+json carried)
    progress      progress bars in terminals and notebooks
    estimator     MLPClassifier, MLPRegressor
    cli           the `scratchnet` command
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from scratchnet.client import AsyncClient, Client
from scratchnet.errors import (
    APIError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ScratchnetError,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TrainingCancelled,
    TrainingFailed,
    TrainingNotSucceeded,
    UnsupportedMediaType,
)
from scratchnet.types import Hyperparameters

if TYPE_CHECKING:
    from scratchnet.estimator import MLPClassifier, MLPRegressor

try:
    __version__ = version("scratchnet")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Hyperparameters",
    "InvalidRequest",
    "MLPClassifier",
    "MLPRegressor",
    "NotFound",
    "PayloadTooLarge",
    "ScratchnetError",
    "ServerError",
    "ServiceUnavailable",
    "TooManyRequests",
    "TrainingCancelled",
    "TrainingFailed",
    "TrainingNotSucceeded",
    "UnsupportedMediaType",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in ("MLPClassifier", "MLPRegressor"):  # scikit-learn loads only for the estimators
        from scratchnet import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'scratchnet' has no attribute {name!r}")
