"""Small picklable tasks for the process-pool tests; importable by spawned workers.

Each follows the `service.execution.executor.Task` protocol: `run(report, should_stop)`.
Timestamps are `time.monotonic()`, one clock for every process on the machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from engine.errors import TrainingCancelled, TrainingDiverged

Report = Callable[[Any], None]
ShouldStop = Callable[[], bool]
POLL_SECONDS = 0.002


@dataclass(frozen=True)
class Echo:
    """Returns `value` at once."""

    value: Any

    def run(self, report: Report, should_stop: ShouldStop) -> Any:
        return self.value


@dataclass(frozen=True)
class ReportMany:
    """Reports 0..count-1 as fast as it can, then returns their sum."""

    count: int

    def run(self, report: Report, should_stop: ShouldStop) -> int:
        for item in range(self.count):
            report(item)
        return sum(range(self.count))


@dataclass(frozen=True)
class ReportThenWait:
    """Reports one item, then polls should_stop without reporting again until stopped."""

    item: str

    def run(self, report: Report, should_stop: ShouldStop) -> NoReturn:
        report(self.item)
        epoch = 0
        while not should_stop():
            time.sleep(POLL_SECONDS)
            epoch += 1
        raise TrainingCancelled(epoch)


@dataclass(frozen=True)
class Diverge:
    """Raises an engine error whose __init__ takes two arguments (it does not unpickle)."""

    epoch: int

    def run(self, report: Report, should_stop: ShouldStop) -> NoReturn:
        raise TrainingDiverged(self.epoch, "loss is nan")


@dataclass(frozen=True)
class SpinUntilStopped:
    """Busy-loops, polling should_stop every iteration like the engine does every epoch.

    Raises TrainingCancelled when stopped, or returns the epoch count if `return_when_stopped`.
    """

    return_when_stopped: bool = False

    def run(self, report: Report, should_stop: ShouldStop) -> int:
        epoch = 0
        while not should_stop():
            epoch += 1
        if self.return_when_stopped:
            return epoch
        raise TrainingCancelled(epoch)


@dataclass(frozen=True)
class IgnoreStop:
    """Never polls should_stop; sleeps `seconds` (long) and returns."""

    seconds: float

    def run(self, report: Report, should_stop: ShouldStop) -> str:
        time.sleep(self.seconds)
        return "finished"


@dataclass(frozen=True)
class WaitForFile:
    """Polls should_stop until `path` exists, then returns its pid; reports its pid first."""

    path: str

    def run(self, report: Report, should_stop: ShouldStop) -> int:
        report(os.getpid())
        epoch = 0
        while not Path(self.path).exists():
            if should_stop():
                raise TrainingCancelled(epoch)
            time.sleep(POLL_SECONDS)
            epoch += 1
        return os.getpid()


@dataclass(frozen=True)
class ExitAbruptly:
    """Ends its worker process without any clean-up."""

    exit_code: int

    def run(self, report: Report, should_stop: ShouldStop) -> NoReturn:
        os._exit(self.exit_code)


@dataclass(frozen=True)
class CallSysExit:
    def run(self, report: Report, should_stop: ShouldStop) -> NoReturn:
        raise SystemExit(4)


@dataclass(frozen=True)
class Rendezvous:
    """Creates the file `mine`, then waits for the file `other` (polling should_stop) and
    returns its pid: two of them pointing at each other both return only if they run at the
    same time, however slow the machine."""

    mine: str
    other: str

    def run(self, report: Report, should_stop: ShouldStop) -> int:
        Path(self.mine).touch()
        epoch = 0
        while not Path(self.other).exists():
            if should_stop():
                raise TrainingCancelled(epoch)
            time.sleep(POLL_SECONDS)
            epoch += 1
        return os.getpid()


@dataclass(frozen=True)
class FitLike:
    """A training-shaped payload: carries a dataset, returns weights the size of `weights_shape`.

    The weights are the dataset's column means broadcast, so the test can check the result.
    """

    X: np.ndarray  # (n_samples, n_features)
    weights_shape: tuple[int, int]

    def run(self, report: Report, should_stop: ShouldStop) -> np.ndarray:
        report(self.X.shape)
        column_means = self.X.mean(axis=0)  # (n_features,)
        return np.full(self.weights_shape, column_means.sum())


class UnpicklableResult:
    def run(self, report: Report, should_stop: ShouldStop) -> Callable[[], int]:
        return lambda: 1


class UnpicklableProgress:
    def run(self, report: Report, should_stop: ShouldStop) -> str:
        report(lambda: 1)
        time.sleep(0.2)  # the flusher fails meanwhile; the next report raises
        report("after")
        return "not reached"


class HoldsALambda:
    """Cannot be pickled in the service."""

    def __init__(self) -> None:
        self.callback = lambda: 1

    def run(self, report: Report, should_stop: ShouldStop) -> int:
        return self.callback()


def _refuse_to_rebuild() -> NoReturn:
    raise RuntimeError("this task only unpickles in the service")


class BreaksInWorker:
    """Pickles in the service, fails to unpickle in the worker."""

    def __reduce__(self) -> tuple[Callable[[], NoReturn], tuple[()]]:
        return _refuse_to_rebuild, ()

    def run(self, report: Report, should_stop: ShouldStop) -> None:
        return None


@dataclass(frozen=True)
class FailsUnexpectedly:
    """Raises an error no caller expects, whose message holds a path of the machine."""

    def run(self, report: Report, should_stop: ShouldStop) -> NoReturn:
        raise RuntimeError("cannot open /srv/scratchnet/secret-state.db")
