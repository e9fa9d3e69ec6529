"""The task that trains one worker's share of a sweep, inside a worker process.

Importing this module must stay cheap (a worker imports it to unpickle a task): it touches only
the engine and NumPy, like service.tasks. Progress items are plain dicts:

    {"kind": "point", "index": i, "epoch": ..., "train_loss": ..., ...}   a history point
    {"kind": "finished", "index": i, "status": "succeeded" | "failed", "weights": [...],
     "biases": [...], "metrics": {...}, "epochs_run": ..., "stop_reason": ..., "best_epoch": ...,
     "seconds": ..., "error_type": None | "TrainingDiverged" | "InvalidInput",
     "error_detail": None | str}                                        a configuration ended

`index` is the configuration's position in the sweep (None for the baseline). Every finished
configuration is reported as it ends, so a cancelled share's finished work is not lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.hyperparameters import Hyperparameters

if TYPE_CHECKING:
    from engine.packed import ConfigurationOutcome

ConfigurationIndex = int | None  # None: the baseline


def finished_item(index: ConfigurationIndex, outcome: ConfigurationOutcome) -> dict[str, Any]:
    """The progress item of a configuration that succeeded or failed."""
    item: dict[str, Any] = {
        "kind": "finished",
        "index": index,
        "status": outcome.status,
        "seconds": float(outcome.seconds),
        "weights": None,
        "biases": None,
        "metrics": None,
        "epochs_run": outcome.history[-1].epoch if outcome.history else 0,
        "stop_reason": None,
        "best_epoch": None,
        "error_type": None,
        "error_detail": None,
    }
    result = outcome.result
    if result is not None:
        item.update(
            weights=list(result.weights),
            biases=list(result.biases),
            metrics=dict(result.final_metrics()),
            epochs_run=int(result.epochs_run),
            stop_reason=str(result.stop_reason),
            best_epoch=None if result.best_epoch is None else int(result.best_epoch),
        )
    if outcome.error is not None:
        error = outcome.error
        item["error_type"] = type(error).__name__
        item["error_detail"] = str(error)  # as a job reports it: "training diverged at epoch ..."
        item["epochs_run"] = int(getattr(error, "epoch", item["epochs_run"]))
    return item


@dataclass(frozen=True)
class SweepTask:
    """Train some of a sweep's configurations on a prepared split, packed as `packs` says."""

    configurations: tuple[tuple[ConfigurationIndex, Hyperparameters], ...]
    packs: tuple[tuple[int, ...], ...]  # positions into `configurations`
    X_train: np.ndarray  # (n_train, n_features), already standardized when asked
    y_train: np.ndarray  # (n_train,) class indices
    X_test: np.ndarray | None  # (n_test, n_features) or None without a test split
    y_test: np.ndarray | None  # (n_test,)
    n_classes: int

    def run(
        self, report: Callable[[Any], None], should_stop: Callable[[], bool]
    ) -> list[dict[str, Any]]:
        """Train; returns [{"index", "status"}] per configuration (cancelled ones included)."""
        from engine.packed import train_many

        names = [index for index, _hp in self.configurations]

        def on_record(position: int, point: Any) -> None:
            report({"kind": "point", "index": names[position], **point.as_dict()})

        def on_finish(outcome: ConfigurationOutcome) -> None:
            report(finished_item(names[outcome.index], outcome))

        outcomes = train_many(
            [hp for _index, hp in self.configurations],
            self.X_train,
            self.y_train,
            self.n_classes,
            self.X_test,
            self.y_test,
            packs=[list(pack) for pack in self.packs],
            on_record=on_record,
            on_finish=on_finish,
            should_stop=should_stop,
        )
        return [{"index": names[o.index], "status": o.status} for o in outcomes]
