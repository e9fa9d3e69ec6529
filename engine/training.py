"""The one training loop: epochs of (mini)batch updates, history, early stopping, schedules,
time budget, cancellation and divergence detection.

Conventions (the service documents these):

- History: one point every `record_every` epochs (epochs record_every, 2*record_every, ...)
  plus one for the last epoch run, whatever stopped training; no point for the initial weights.
  `epoch` counts completed epochs; `learning_rate` is the rate the epoch trained with; losses
  and accuracies are those of the weights after that epoch, over the WHOLE split. In full-batch
  training a record's metrics are taken from the next epoch's forward pass (the same weights,
  before that epoch's update), so `on_record` for epoch e runs at the start of epoch e + 1;
  the last point, and any point before a cancellation, is computed on the spot.
- Snapshots: with `snapshot_every` set, `on_snapshot` receives a copy of the parameters with
  the first history point at or after every multiple of `snapshot_every` (exactly the
  multiples when record_every divides snapshot_every) and with the last point, so every
  snapshot has the history point of its epoch; numbered 0, 1, ... in order (`index`). It runs
  right before that point's `on_record` (a reader that has the point has its snapshot). Cost:
  one copy of the parameters each (benchmarks/snapshot_bench.py: the tutorial job's 200 at
  snapshot_every=100, through the service, ~1% of its CPU).
- train_loss = mean cross-entropy over the training split + l2/(2n)·ΣW² + l1/n·Σ|W| with n the
  training-set size. test_loss = mean cross-entropy over the test split + the same penalty, so
  the two curves differ only in their data term. (A minibatch step differentiates its batch's
  own mean loss, penalty scaled by the batch size: see engine.network.)
- Regression (`Objective(task="regression")`): the data term is half the squared error summed
  over outputs, averaged over examples, on the targets as the network sees them (standardized
  when the caller standardized them). A point carries mse, mae and r2 per split instead of the
  accuracies: mse and mae average over examples AND outputs (scikit-learn's mean_squared_error
  and mean_absolute_error, uniform average), in the targets' original units (errors times the
  objective's `target_scale`); r2 is the mean over outputs of 1 - SSE/SST with SST the split's
  own sum of squares about its mean (sklearn's r2_score; an output constant on a split scores 1
  if predicted exactly, else 0).
- Divergence: `TrainingDiverged(epoch, ...)` when
  (a) a parameter is NaN or infinite after epoch `epoch`: checked after every epoch (one sum),
      so `epoch` is exactly the first epoch whose updates produced one; or
  (b) a loss that was computed is not finite, or the training loss exceeds EXPLOSION_FACTOR
      (100) times max(initial training loss, log(n_classes)) (log K: the loss of a uniform
      guess; it keeps the threshold sane when the initial loss happens to be tiny; for
      regression n_outputs/2, the loss of predicting the mean of standardized targets). The
      training loss is computed on record epochs (and every epoch for the plateau schedule
      without a test split), the test loss on records and every epoch under early stopping;
      `epoch` is the first of those epochs at which the rule fired.
  The detail suggests a lower learning rate. Nothing non-finite reaches the history or
  `on_record`.
- Early stopping monitors the test loss after EVERY epoch (patience counts epochs), keeps a copy
  of the best parameters (strictly lowest test loss; the earliest wins ties) and returns them,
  with `best_epoch`, however training ended (the last history point still describes the last
  epoch; `final_metrics` describes the returned weights). Cost: one forward pass over the test
  split per epoch (measured: +18% per epoch for 20,000 training / 5,000 test points and [64];
  +76% for the 200-point tutorial problem, where an epoch is a few dozen NumPy calls).
  The plateau schedule monitors the test loss when there is a test split, else the training
  loss, also every epoch.
- Time budget: `clock` is read at the start and after every epoch (only when max_seconds is
  set); training stops after the epoch in which the budget ran out.
- Cancellation: `should_stop` is polled before every epoch and every POLL_EVERY_BATCHES
  minibatches; True raises `TrainingCancelled(epochs_completed)`.
- Determinism: `np.random.default_rng(seed)` draws the initial weights first (see
  `engine.network.init_params`), then one `rng.permutation(n)` per epoch in minibatch training
  (batch_size < n; a batch_size >= n trains full-batch and draws nothing more). Bit for bit on
  one machine: blocks and thread splits depend only on the shapes.
- L-BFGS (optimizer lbfgs, engine.lbfgs): an epoch is one iteration, full batch; the history's
  `learning_rate` is the step length its line search accepted. Each iteration's last
  evaluation is at the accepted weights, so records are taken on the spot (no pending record)
  and the training loss is computed, and checked by rule (b), every iteration. Training stops
  with `converged` when the gradient's largest entry is at most `tolerance`, and `stalled`
  when no step along -gradient lowers the loss; early stopping, the time budget and
  cancellation apply as to every optimizer (early stopping and `converged` on one epoch:
  early stopping).
- Threads: BLAS is pinned to one thread during training unless the network's largest matrix
  product is big (engine.network.BLAS_THREADS_MIN_MACS); large full-batch passes split over two
  threads of their own instead.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engine.errors import InvalidInput, TrainingCancelled, TrainingDiverged
from engine.features import IDENTITY, check_width, map_features
from engine.hyperparameters import Hyperparameters, Task
from engine.lbfgs import LBFGS
from engine.network import (
    BLAS_THREADS_MIN_MACS,
    Network,
    Passes,
    Stats,
    blas_single_thread,
    data_loss,
    dot,
    init_params,
    largest_product,
    targets_for,
    with_ones_column,
)
from engine.optimizers import OptimizerState, Penalty, make_optimizer
from engine.schedules import make_schedule

Array = np.ndarray
StopReason = Literal["completed", "early_stopping", "time_budget", "converged", "stalled"]

EXPLOSION_FACTOR = 100.0
POLL_EVERY_BATCHES = 16
# Minibatch training gathers its permuted rows (features and targets) this many bytes of whole
# batches at a time (W3's 3,000 rows: one gather per epoch). Two gathers of 128 rows cost
# ~6.4 us a step against ~0.5 us as a share of one 3,000-row gather; the cap bounds the copy
# for large data (1 MiB: ~22,000 float64 rows of 2 features and 3 classes).
GATHER_BYTES = 1 << 20


# The metrics a point carries besides the losses, by task (split prefixes train_ and test_).
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "regression": ("mse", "mae", "r2"),
}
REGRESSION_KEYS = ("train_mse", "test_mse", "train_mae", "test_mae", "train_r2", "test_r2")


@dataclass(frozen=True)
class HistoryPoint:
    """One recorded epoch. A classification point has accuracies and None for the regression
    fields; a regression point None accuracies and its mse, mae and r2 (test ones None without
    a test split). `as_dict` leaves out the other task's fields."""

    epoch: int  # epochs completed when recorded
    train_loss: float
    train_accuracy: float | None  # None for regression
    test_loss: float | None  # None without a test split
    test_accuracy: float | None
    learning_rate: float  # the rate this epoch trained with
    train_mse: float | None = None  # regression only
    test_mse: float | None = None
    train_mae: float | None = None
    test_mae: float | None = None
    train_r2: float | None = None
    test_r2: float | None = None

    @property
    def task(self) -> Task:
        return "classification" if self.train_mse is None else "regression"

    @classmethod
    def of(
        cls,
        epoch: int,
        train: dict[str, float],
        test: dict[str, float] | None,
        learning_rate: float,
    ) -> HistoryPoint:
        """A point from a split's metrics (`Objective.metrics`) on each split."""
        values: dict[str, float | None] = {"train_accuracy": None, "test_accuracy": None}
        for which, metrics in (("train", train), ("test", test)):
            for name in ("loss", *TASK_METRICS[train_task(train)]):
                values[f"{which}_{name}"] = None if metrics is None else metrics[name]
        return cls(epoch=epoch, learning_rate=learning_rate, **values)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, float | int | None]:
        # vars() rather than dataclasses.asdict: ~40x faster, and the fields are all scalars.
        values = dict(vars(self))
        if self.train_mse is None:
            for key in REGRESSION_KEYS:
                del values[key]
        else:
            del values["train_accuracy"], values["test_accuracy"]
        return values


def train_task(metrics: dict[str, float]) -> Task:
    """Which task a split's metrics belong to."""
    return "regression" if "mse" in metrics else "classification"


@dataclass(frozen=True)
class Objective:
    """What the network's outputs are fitted to: class labels (the default), or regression
    targets. `target_scale` (n_outputs,): regression errors times it are in the targets'
    original units (the scale the caller divided them by; None: they are)."""

    task: Task = "classification"
    target_scale: tuple[float, ...] | None = None

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def loss_floor(self, n_outputs: int) -> float:
        """Divergence rule (b)'s floor: log K, or n_outputs / 2 for regression."""
        return 0.5 * n_outputs if self.regression else math.log(n_outputs)

    def metrics(
        self, stats: Stats, n: int, penalty: float, total_squares: Array | None
    ) -> dict[str, float]:
        """A split's metrics from a pass's stats over its n rows: loss (data term / n +
        `penalty`) and accuracy, or loss, mse, mae and r2 (see the module docstring; SST per
        output in `total_squares` (K,))."""
        loss = data_loss(stats, self.task) / n + penalty
        if not self.regression:
            return {"loss": loss, "accuracy": float(stats[1]) / n}
        squared = np.asarray(stats[0], dtype=np.float64)  # (K,)
        absolute = np.asarray(stats[1], dtype=np.float64)  # (K,)
        scale = np.ones_like(squared) if self.target_scale is None else np.array(self.target_scale)
        assert total_squares is not None
        with np.errstate(all="ignore"):
            r2 = np.where(
                total_squares > 0,
                1.0 - squared / np.where(total_squares > 0, total_squares, 1.0),
                np.where(squared == 0, 1.0, 0.0),
            )
        return {
            "loss": loss,
            "mse": float(np.mean(squared * scale**2)) / n,
            "mae": float(np.mean(absolute * scale)) / n,
            "r2": float(np.mean(r2)),
        }


CLASSIFICATION = Objective()


@dataclass(frozen=True)
class ParameterSnapshot:
    """The parameters after `epoch`: the `index`-th snapshot a run took (see the module
    docstring)."""

    index: int
    epoch: int
    weights: list[np.ndarray]  # (fan_in, fan_out) per layer, input side first
    biases: list[np.ndarray]  # (fan_out,) per layer

    @property
    def nbytes(self) -> int:
        return sum(int(array.nbytes) for array in (*self.weights, *self.biases))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as one buffer of the parameters' bytes: a worker sends a job's hundreds of
        snapshots to the service, and one buffer pickles ~3x and unpickles ~1.5x faster than
        an array per layer (benchmarks/snapshot_bench.py counts it). Parameters of mixed
        dtypes (no network makes them) pickle as they are."""
        arrays = (*self.weights, *self.biases)
        dtype = arrays[0].dtype if arrays else np.dtype(np.float64)
        if any(array.dtype != dtype for array in arrays):
            return (ParameterSnapshot, (self.index, self.epoch, self.weights, self.biases))
        shapes = tuple(array.shape for array in arrays)
        data = b"".join(array.tobytes() for array in arrays)  # C order, as `shapes` reads it
        return (_unpacked, (self.index, self.epoch, len(self.weights), dtype.str, shapes, data))


def _unpacked(
    index: int,
    epoch: int,
    n_weights: int,
    dtype: str,
    shapes: tuple[tuple[int, ...], ...],
    data: bytes,
) -> ParameterSnapshot:
    """The snapshot `ParameterSnapshot.__reduce__` packed: its arrays are writable views of
    one buffer of their own."""
    flat = np.frombuffer(bytearray(data), dtype=dtype)
    arrays, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        arrays.append(flat[start : start + size].reshape(shape))
        start += size
    return ParameterSnapshot(index, epoch, arrays[:n_weights], arrays[n_weights:])


@dataclass
class TrainResult:
    weights: list[np.ndarray]  # (fan_in, fan_out) per layer, input side first
    biases: list[np.ndarray]  # (fan_out,)
    history: list[HistoryPoint]
    epochs_run: int
    stop_reason: StopReason
    best_epoch: int | None  # epoch whose weights early stopping restored
    metrics: dict[str, float | None] = field(default_factory=dict, repr=False)
    # The optimizer's state after the last update: None for plain sgd, and when early stopping
    # returned earlier weights than the state belongs to.
    optimizer_state: OptimizerState | None = field(default=None, repr=False)

    def final_metrics(self) -> dict[str, float | None]:
        """train_loss, test_loss and the task's metrics (train_accuracy, test_accuracy; or
        train_mse, test_mse, ...) of the returned weights."""
        return dict(self.metrics)


@dataclass(frozen=True)
class Initial:
    """Where continued training starts instead of a fresh initialisation: a network's weights
    (fan_in, fan_out) and biases (fan_out,) per layer, of exactly the widths `train` builds, and
    the optimizer state it stopped with (used when it is the same optimizer's; else the
    optimizer starts afresh)."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    optimizer_state: OptimizerState | None = None

    def check(self, layer_sizes: list[int]) -> None:
        """InvalidInput unless the weights are those of a network of these widths."""
        shapes = [tuple(W.shape) for W in self.weights]
        expected = [(fan_in, fan_out) for fan_in, fan_out in itertools.pairwise(layer_sizes)]
        bias_shapes = [tuple(b.shape) for b in self.biases]
        if shapes != expected or bias_shapes != [(fan_out,) for _, fan_out in expected]:
            raise InvalidInput(
                f"the initial weights have shapes {shapes}; a network of widths {layer_sizes} "
                f"needs {expected}"
            )


@dataclass
class CheckedSplit:
    """A split checked and converted for training (see validated_splits)."""

    X_aug: Array  # (n, n_features + 1): features and a ones column, in the training dtype
    y: Array  # (n,) class indices; regression: the targets (n, K) in the training dtype
    targets: Array | None = None  # engine.network.targets_for(y): training split only
    total_squares: Array | None = None  # regression: (K,) float64 sum of (y - mean y)^2

    @property
    def n(self) -> int:
        return int(self.X_aug.shape[0])


def _check_features(name: str, X: object, hp: Hyperparameters) -> Array:
    """Finite real features through the input map `hp.input_features`, in the training dtype:
    (n, width); InvalidInput naming the array (and the map) otherwise."""
    array = np.asarray(X)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidInput(
            f"{name} must be a 2-D array (n_samples >= 1, n_features >= 1), got shape {array.shape}"
        )
    dtype, features = np.dtype(hp.dtype), hp.input_features
    if tuple(features) == IDENTITY:
        return _finite_real(name, array, dtype, "features")
    raw = _finite_real(name, array, np.dtype(np.float64), "features")  # (n, d)
    check_width(features, raw.shape[1], raw.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        mapped = map_features(raw, features)  # (n, width)
    return _finite_real(f"{name} after input_features {features}", mapped, dtype, "features")


def _finite_real(name: str, array: Array, dtype: np.dtype, what: str) -> Array:
    """A 2-D array of finite real numbers converted to `dtype` (C-contiguous), else
    InvalidInput naming the first bad row or the range."""
    if array.dtype.kind not in "biuf":
        raise InvalidInput(f"{name} must hold real numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise InvalidInput(f"{name} row {row} is not finite ({array[row].tolist()}); remove it")
    with np.errstate(over="ignore"):
        converted = np.ascontiguousarray(array, dtype=dtype)
    if not np.isfinite(converted).all():
        raise InvalidInput(
            f"{name} has values beyond the {dtype} range (max |x| = {np.abs(array).max():g}); "
            f"standardize the {what} or use dtype float64"
        )
    return converted


def _check_labels(name: str, y: object, n: int, n_classes: int) -> Array:
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InvalidInput(
            f"{name} must have shape ({n},) to match the features, got {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise InvalidInput(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise InvalidInput(
            f"{name} holds class index {bad}, outside 0..{n_classes - 1}; labels must be "
            f"0..n_classes-1 (n_classes = {n_classes})"
        )
    return labels.astype(np.intp, copy=False)


def _check_targets(name: str, y: object, n: int, n_outputs: int, dtype: np.dtype) -> Array:
    """Regression targets as (n, n_outputs) in `dtype` (a 1-D array is one output)."""
    targets = np.asarray(y)
    if targets.ndim == 1:
        targets = targets.reshape(-1, 1)
    if targets.ndim != 2 or targets.shape != (n, n_outputs):
        raise InvalidInput(
            f"{name} must have shape ({n}, {n_outputs}) to match the features and outputs, got "
            f"{np.asarray(y).shape}"
        )
    return _finite_real(name, targets, dtype, "targets")


def _total_squares(targets: Array) -> Array:
    """(K,) float64: per output, the sum of squares about the split's own mean."""
    values = targets.astype(np.float64)
    return ((values - values.mean(axis=0)) ** 2).sum(axis=0)


def early_stopping_needs_a_test_split() -> InvalidInput:
    return InvalidInput(
        "early_stopping monitors the test loss: pass X_test and y_test, or set "
        "early_stopping to false"
    )


def validated_splits(
    hp: Hyperparameters,
    X_train: object,
    y_train: object,
    n_classes: int,
    X_test: object | None,
    y_test: object | None,
    objective: Objective = CLASSIFICATION,
) -> tuple[CheckedSplit, CheckedSplit | None]:
    """The training split and the test split (None without one), checked and converted to
    `hp.dtype`; InvalidInput naming the offending array and value otherwise. For regression
    `n_classes` is the number of outputs (target columns) and the y arrays are targets."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer):
        raise InvalidInput(f"n_classes must be an integer, got {n_classes!r}")
    regression = objective.regression
    if n_classes < (1 if regression else 2):
        raise InvalidInput(f"n_classes must be >= 2 (softmax needs two classes), got {n_classes}")
    dtype = np.dtype(hp.dtype)
    X = _check_features("X_train", X_train, hp)  # (n, width): through the input map

    def checked_y(name: str, values: object, n: int) -> Array:
        if regression:
            return _check_targets(name, values, n, int(n_classes), dtype)
        return _check_labels(name, values, n, int(n_classes))

    y = checked_y("y_train", y_train, X.shape[0])
    # Contiguous arrays: np.dot copies any operand that is not C- or F-contiguous.
    train_split = CheckedSplit(
        with_ones_column(X, dtype),
        y,
        targets_for(y, int(n_classes), dtype, objective.task),
        _total_squares(y) if regression else None,
    )
    if (X_test is None) != (y_test is None):
        raise InvalidInput("pass both X_test and y_test, or neither")
    if X_test is None:
        if hp.early_stopping:
            raise early_stopping_needs_a_test_split()
        return train_split, None
    X_t = _check_features("X_test", X_test, hp)  # mapped widths match when raw ones do
    if X_t.shape[1] != X.shape[1]:
        n_features, n_test_features = np.asarray(X_train).shape[1], np.asarray(X_test).shape[1]
        raise InvalidInput(
            f"X_test has {n_test_features} features but X_train has {n_features}; they must match"
        )
    y_t = checked_y("y_test", y_test, X_t.shape[0])
    total_squares = _total_squares(y_t) if regression else None
    return train_split, CheckedSplit(with_ones_column(X_t, dtype), y_t, None, total_squares)


Which = Literal["train", "test"]


def effective_batch_size(hp: Hyperparameters, n_train: int) -> int | None:
    """The minibatch size training uses; None: full batch (no batch_size, or >= n_train)."""
    return hp.batch_size if hp.batch_size is not None and hp.batch_size < n_train else None


def weights_diverged(epoch: int, learning_rate: float) -> TrainingDiverged:
    """Divergence rule (a): a parameter became NaN or infinite in `epoch`."""
    return TrainingDiverged(
        epoch,
        "a weight became NaN or infinite; lower the learning rate "
        f"(this epoch used {learning_rate:g})",
    )


def initial_loss_not_finite() -> InvalidInput:
    return InvalidInput(
        "the initial network's loss on X_train is not finite (features too large?); "
        "standardize the features"
    )


def final_metrics(point: HistoryPoint) -> dict[str, float | None]:
    """TrainResult.metrics from the returned weights' point: its losses and task metrics."""
    values = point.as_dict()
    del values["epoch"], values["learning_rate"]
    return values


@dataclass(frozen=True)
class Controls:
    """How the caller steers a run: `should_stop` (polled before every epoch and every
    POLL_EVERY_BATCHES minibatches) and the `clock` it started at."""

    should_stop: Callable[[], bool] | None
    clock: Callable[[], float]
    started: float

    def stop_requested(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.started


class Progress:
    """One configuration's state under the rules of the module docstring: its schedule,
    history, divergence threshold, early stopping's best epoch and patience, and (full batch) the
    record waiting for the next epoch's forward pass. `train` keeps one; a pack one per
    configuration (engine.packed)."""

    def __init__(self, hp: Hyperparameters, *, full_batch: bool, has_test: bool) -> None:
        self.hp = hp
        self.full_batch = full_batch
        self.schedule = make_schedule(hp)
        self.history: list[HistoryPoint] = []
        self.explosion_limit = math.inf
        self.floor_name = "log(n_classes)"
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        # Full batch: a record's training metrics come from the NEXT epoch's forward pass, which
        # evaluates exactly the recorded parameters before updating them (saves a forward).
        self.pending: tuple[int, float] | None = None  # (epoch, learning_rate)
        self.plateau_on_train_loss = self.schedule.needs_monitor and not has_test and full_batch
        self.monitored: Which = "test" if has_test else "train"
        self.monitor_each_epoch = self.schedule.needs_monitor and not self.plateau_on_train_loss
        # whether `after_epoch` has work after every epoch, not only on record epochs
        self.every_epoch = (
            hp.early_stopping or self.monitor_each_epoch or hp.max_seconds is not None
        )
        self.snapshots_taken = 0
        # the epoch from which the next recorded point takes a snapshot (never: infinity)
        self.next_snapshot = math.inf if hp.snapshot_every is None else hp.snapshot_every

    def set_explosion_limit(
        self, initial_loss: float, n_classes: int, objective: Objective = CLASSIFICATION
    ) -> None:
        """Rule (b)'s threshold from the initial parameters' training loss (InvalidInput when
        that is not finite)."""
        if not math.isfinite(initial_loss):
            raise initial_loss_not_finite()
        self.floor_name = "n_outputs/2" if objective.regression else "log(n_classes)"
        floor = objective.loss_floor(n_classes)
        self.explosion_limit = EXPLOSION_FACTOR * max(initial_loss, floor)

    def check_loss(self, which: Which, epoch: int, value: float) -> None:
        """Divergence rule (b) on a loss computed after `epoch`: TrainingDiverged if it fires."""
        learning_rate = self.hp.learning_rate
        if not math.isfinite(value):
            raise TrainingDiverged(
                epoch,
                f"the {'training' if which == 'train' else 'test'} loss is not finite; lower "
                f"the learning rate (now {learning_rate:g}) or standardize the features",
            )
        if which == "train" and value > self.explosion_limit:
            raise TrainingDiverged(
                epoch,
                f"the training loss {value:.4g} exceeded {EXPLOSION_FACTOR:g} x max(initial "
                f"loss, {self.floor_name}) = {self.explosion_limit:.4g}; lower the learning "
                f"rate (now {learning_rate:g})",
            )

    def observe_train_loss(self, epoch: int, train_loss: float) -> None:
        """The training loss after `epoch`, from a full-batch forward pass: the plateau
        schedule's monitor when there is no test split."""
        if self.plateau_on_train_loss and epoch > 0:
            self.schedule.observe(train_loss)

    def snapshot_due(self, epoch: int, last: bool) -> int | None:
        """The snapshot rule, for a point recorded after `epoch` (`last`: the run's last
        point): the index of the snapshot to take with it, or None for no snapshot."""
        every = self.hp.snapshot_every
        if every is None or not (last or epoch >= self.next_snapshot):
            return None
        self.next_snapshot = (epoch // every + 1) * every
        index, self.snapshots_taken = self.snapshots_taken, self.snapshots_taken + 1
        return index

    def take_pending(self) -> tuple[int, float] | None:
        """The waiting record's (epoch, learning_rate), if any, now to be recorded."""
        pending, self.pending = self.pending, None
        return pending

    def after_epoch(
        self,
        epoch: int,
        learning_rate: float,
        loss: Callable[[Which], float],
        keep_best: Callable[[], None],
        elapsed: Callable[[], float],
        finished: StopReason | None = None,
    ) -> tuple[bool, StopReason | None]:
        """The rules after `epoch` (trained at `learning_rate`): early stopping, the plateau
        schedule, the optimizer's own stop (`finished`: L-BFGS converged or stalled), the time
        budget, then the history. `loss(which)` gives a split's loss after
        the epoch (checked: it may raise TrainingDiverged), `keep_best()` copies the current
        parameters as the best, `elapsed()` the seconds since training started.

        Returns (record this epoch now?, why training stops, or None to go on); a full-batch
        record that waits for the next forward pass is left in `pending` instead."""
        hp = self.hp
        stop: StopReason | None = None
        if hp.early_stopping:
            test_loss = loss("test")
            if test_loss < self.best_loss:
                self.best_loss, self.best_epoch, self.wait = test_loss, epoch, 0
                keep_best()
            else:
                self.wait += 1
                if self.wait >= hp.patience:
                    stop = "early_stopping"
        if self.monitor_each_epoch:
            self.schedule.observe(loss(self.monitored))
        if stop is None:
            stop = finished
        if stop is None and hp.max_seconds is not None and elapsed() >= hp.max_seconds:
            stop = "time_budget"
        if stop is None and epoch == hp.epochs:
            stop = "completed"
        if stop is not None:
            return True, stop
        if epoch % hp.record_every == 0:
            if not self.full_batch:
                return True, None
            self.pending = (epoch, learning_rate)
        return False, None


class _Trainer:
    def __init__(
        self,
        hp: Hyperparameters,
        network: Network,
        train_split: CheckedSplit,
        test_split: CheckedSplit | None,
        rng: np.random.Generator,
        on_record: Callable[[HistoryPoint], None] | None,
        controls: Controls,
        on_snapshot: Callable[[ParameterSnapshot], None] | None = None,
        objective: Objective = CLASSIFICATION,
        optimizer_state: OptimizerState | None = None,
    ) -> None:
        self.hp = hp
        self.objective = objective
        self.network = network
        self.train_split = train_split
        self.test_split = test_split
        self.rng = rng
        self.on_record = on_record
        self.on_snapshot = on_snapshot
        self.controls = controls
        n = self.n_train = train_split.n
        self.params = network.params
        self.batch_size = effective_batch_size(hp, n)
        largest_rows = max(n, test_split.n if test_split else 0)
        pass_rows = min(self.batch_size or largest_rows, network.block_rows())
        # Small products: BLAS on one thread, our passes may split over two threads;
        # big products: BLAS threads, passes unsplit (never both: 2 cores).
        self.blas_threads = largest_product(network.layer_sizes, pass_rows) >= BLAS_THREADS_MIN_MACS
        self.passes = Passes(network, largest_rows, threads=not self.blas_threads)
        self.penalty = Penalty(network.weight_mask, hp.l1, hp.l2)
        self.lbfgs: LBFGS | None = None
        self.finished: StopReason | None = None  # the optimizer's own stop (L-BFGS)
        if hp.optimizer == "lbfgs":
            self.lbfgs = LBFGS(
                self._loss_and_gradient,
                network.params,
                memory=hp.lbfgs_memory,
                tolerance=hp.tolerance,
                initial_step=hp.learning_rate,
            )
            self.lbfgs_gradient = np.empty_like(network.params)
            self.lbfgs_stats: Stats = (math.nan, 0)
        else:
            self.optimizer = make_optimizer(hp, network.params.size, network.dtype)
            if optimizer_state is not None and optimizer_state.optimizer == hp.optimizer:
                self.optimizer.restore(optimizer_state)
        self.progress = Progress(
            hp,
            # L-BFGS records on the spot: its last evaluation is at the accepted weights
            full_batch=self.batch_size is None and self.lbfgs is None,
            has_test=test_split is not None,
        )
        self.schedule = self.progress.schedule
        # Metrics of the parameters after epoch `cache_epoch`, by split.
        self.cache_epoch = -1
        self.cache: dict[str, dict[str, float]] = {}

    # -- metrics -----------------------------------------------------------------------------

    def _store(self, which: Which, epoch: int, stats: Stats) -> dict[str, float]:
        """A split's metrics from a pass's stats, after the divergence checks; cached."""
        split = self.train_split if which == "train" else self.test_split
        assert split is not None
        hp = self.hp
        penalty = self.network.penalty(self.train_split.n, hp.l1, hp.l2)
        result = self.objective.metrics(stats, split.n, penalty, split.total_squares)
        self.progress.check_loss(which, epoch, result["loss"])
        if self.cache_epoch != epoch:
            self.cache_epoch, self.cache = epoch, {}
        self.cache[which] = result
        return result

    def _loss_value(self, split: CheckedSplit, stats: Stats) -> float:
        """The loss from a split's stats: its mean data term plus the penalty."""
        hp = self.hp
        penalty = self.network.penalty(self.train_split.n, hp.l1, hp.l2)
        return data_loss(stats, self.objective.task) / split.n + penalty

    def _metrics(self, which: Which, epoch: int) -> dict[str, float]:
        """The metrics of the current parameters (those after `epoch`) on a split."""
        if self.cache_epoch == epoch and which in self.cache:
            return self.cache[which]
        split = self.train_split if which == "train" else self.test_split
        assert split is not None
        stats = self.passes.cross_entropy_and_correct(split.X_aug, split.y)
        return self._store(which, epoch, stats)

    def _point(self, epoch: int, learning_rate: float) -> HistoryPoint:
        """The current parameters' metrics, as the history point for `epoch`."""
        train = self._metrics("train", epoch)
        test = None if self.test_split is None else self._metrics("test", epoch)
        return HistoryPoint.of(epoch, train, test, learning_rate)

    def _record(self, epoch: int, learning_rate: float, *, last: bool = False) -> None:
        """Record the current parameters' point for `epoch` (and their snapshot when due)."""
        point = self._point(epoch, learning_rate)
        if self.on_snapshot is not None:  # first: whoever sees the point can draw its snapshot
            index = self.progress.snapshot_due(epoch, last)
            if index is not None:
                self.on_snapshot(ParameterSnapshot(index, epoch, *self.network.copy_weights()))
        self.progress.history.append(point)
        if self.on_record is not None:
            self.on_record(point)

    def _set_explosion_limit(self, initial_stats: Stats) -> None:
        """The loss rule's threshold, from the initial parameters' stats."""
        try:
            initial_loss = self._store("train", 0, initial_stats)["loss"]
        except TrainingDiverged as error:
            raise initial_loss_not_finite() from error
        self.progress.set_explosion_limit(initial_loss, self.network.n_outputs, self.objective)

    # -- the loop ----------------------------------------------------------------------------

    def _poll(self, epochs_completed: int) -> None:
        if self.controls.stop_requested():
            pending = self.progress.take_pending()
            if pending is not None:  # the parameters are still the pending record's
                self._record(*pending)
            raise TrainingCancelled(epochs_completed)

    def _full_batch_epoch(self, epoch: int) -> float:
        """One update on all rows; returns the learning rate used."""
        split = self.train_split
        assert split.targets is not None
        progress = self.progress
        want_stats = epoch == 1 or progress.pending is not None or progress.plateau_on_train_loss
        grad_sum, stats = self.passes.summed_gradient(
            split.X_aug, split.targets, split.y if want_stats else None
        )
        if stats is not None:  # metrics of the parameters after epoch - 1
            if epoch == 1:
                self._set_explosion_limit(stats)
            train_loss = self._store("train", epoch - 1, stats)["loss"]
            progress.observe_train_loss(epoch - 1, train_loss)
            pending = progress.take_pending()
            if pending is not None:
                self._record(*pending)
        learning_rate = self.schedule.rate(epoch - 1)
        self.optimizer.step(self.params, grad_sum, self.n_train, learning_rate, self.penalty)
        return learning_rate

    def _loss_and_gradient(self, x: Array) -> tuple[float, Array]:
        """L-BFGS's objective: the training loss at x and its gradient (mean CE + penalties,
        a buffer reused by the next call); the pass's stats are kept in lbfgs_stats."""
        params = self.params
        if x is not params:
            np.copyto(params, x)
        split = self.train_split
        assert split.targets is not None
        grad_sum, stats = self.passes.summed_gradient(split.X_aug, split.targets, split.y)
        assert stats is not None
        self.lbfgs_stats = stats
        gradient = self.lbfgs_gradient
        np.multiply(grad_sum, 1.0 / split.n, out=gradient)
        self.penalty.add_gradient(gradient, params, split.n, grad_sum)  # grad_sum: scratch now
        return self._loss_value(split, stats), gradient

    def _lbfgs_epoch(self, epoch: int) -> float:
        """One L-BFGS iteration; returns the step length its line search accepted."""
        assert self.lbfgs is not None
        if epoch == 1:
            self.lbfgs.start()
            self._set_explosion_limit(self.lbfgs_stats)
        iteration = self.lbfgs.iterate()
        if iteration.status != "moved":
            self.finished = iteration.status
        self._store("train", epoch, self.lbfgs_stats)  # the accepted weights' (last) pass
        return iteration.step

    def _minibatch_epoch(self, epoch: int) -> float:
        """One pass of minibatch updates over a fresh permutation; returns the learning rate.

        The permuted rows are gathered a chunk of whole batches at a time into contiguous
        buffers (two gathers per chunk instead of two per batch); each batch is then a view."""
        assert self.batch_size is not None
        split = self.train_split
        assert split.targets is not None
        params = self.network.params
        step = self.optimizer.step
        summed_gradient = self.passes.summed_gradient
        penalty = self.penalty
        learning_rate = self.schedule.rate(epoch - 1)
        size = self.batch_size
        X_chunk, targets_chunk = self.batch_buffers
        chunk = X_chunk.shape[0]
        order = self.rng.permutation(split.n)
        index = 0
        for chunk_start in range(0, split.n, chunk):
            chosen = order[chunk_start : chunk_start + chunk]
            rows = chosen.shape[0]
            X_rows = np.take(split.X_aug, chosen, axis=0, out=X_chunk[:rows])  # contiguous
            targets_rows = np.take(split.targets, chosen, axis=0, out=targets_chunk[:rows])
            for start in range(0, rows, size):
                if index and index % POLL_EVERY_BATCHES == 0:
                    self._poll(epoch - 1)
                index += 1
                stop = min(start + size, rows)
                grad_sum, _ = summed_gradient(X_rows[start:stop], targets_rows[start:stop])
                step(params, grad_sum, stop - start, learning_rate, penalty)
        return learning_rate

    def _keep_best(self) -> None:
        np.copyto(self.best_params, self.params)

    def run(self) -> TrainResult:
        hp = self.hp
        network = self.network
        params = network.params
        progress = self.progress
        split = self.train_split
        assert split.targets is not None
        if self.batch_size is not None:
            row_bytes = (split.X_aug.shape[1] + split.targets.shape[1]) * network.dtype.itemsize
            batches = max(1, GATHER_BYTES // (self.batch_size * row_bytes))
            chunk = min(self.batch_size * batches, split.n)
            self.batch_buffers = (
                np.empty((chunk, split.X_aug.shape[1]), dtype=network.dtype),
                np.empty((chunk, split.targets.shape[1]), dtype=network.dtype),
            )
        ones = np.ones_like(params)
        full_batch = self.batch_size is None
        if not full_batch:  # full batch takes the initial loss from epoch 1's forward pass
            self._set_explosion_limit(self.passes.cross_entropy_and_correct(split.X_aug, split.y))
        self.best_params = params.copy() if hp.early_stopping else params  # kept: a copy
        stop_reason: StopReason = "completed"
        epoch = 0
        # Hot loop: settings in locals (an epoch of a small network is ~40 us).
        epochs, record_every, every_epoch = hp.epochs, hp.record_every, progress.every_epoch
        polled = self.controls.should_stop is not None
        one_epoch = self._full_batch_epoch if full_batch else self._minibatch_epoch
        if self.lbfgs is not None:
            one_epoch = self._lbfgs_epoch

        def loss(which: Which) -> float:
            return self._metrics(which, epoch)["loss"]

        for epoch in range(1, epochs + 1):
            if polled:
                self._poll(epoch - 1)
            learning_rate = one_epoch(epoch)
            if not math.isfinite(dot(params, ones)):  # the sum: NaN/inf-propagating
                raise weights_diverged(epoch, learning_rate)
            if not (every_epoch or epoch % record_every == 0 or epoch == epochs or self.finished):
                continue
            record, stop = progress.after_epoch(
                epoch, learning_rate, loss, self._keep_best, self.controls.elapsed, self.finished
            )
            if record:
                self._record(epoch, learning_rate, last=stop is not None)
            if stop is not None:
                stop_reason = stop
                break

        final = self._point(epoch, 0.0)
        best_epoch = progress.best_epoch
        lbfgs = self.lbfgs is not None  # its curvature pairs are not kept: it starts afresh
        optimizer_state = None if lbfgs else self.optimizer.saved(hp.optimizer)
        if hp.early_stopping and best_epoch is not None and best_epoch != epoch:
            np.copyto(params, self.best_params)
            final = self._point(best_epoch, 0.0)
            optimizer_state = None  # it belongs to the last epoch's weights, not these
        weights, biases = network.copy_weights()
        return TrainResult(
            weights=weights,
            biases=biases,
            history=progress.history,
            epochs_run=epoch,
            stop_reason=stop_reason,
            best_epoch=best_epoch,
            metrics=final_metrics(final),
            optimizer_state=optimizer_state,
        )


def train(
    hp: Hyperparameters,
    X_train: np.ndarray,
    y_train: np.ndarray,
    n_classes: int,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    on_record: Callable[[HistoryPoint], None] | None = None,
    on_snapshot: Callable[[ParameterSnapshot], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    objective: Objective = CLASSIFICATION,
    initial: Initial | None = None,
) -> TrainResult:
    """Train a network on (X_train, y_train); see the module docstring for the conventions.

    With `initial` training goes on from those weights (and optimizer state) instead of a fresh
    initialisation, which then draws nothing from the generator: training for a epochs and
    going on for b more from the result (its weights and optimizer state) equals training for
    a + b epochs, bit for bit, in full-batch training with a constant learning rate. (A
    schedule, early stopping and the history's epochs start again at the start of each run;
    minibatch shuffles restart from the seed.)

    X arrays are (n, n_features) real numbers, used as given (standardize beforehand if
    wanted) and then mapped by `hp.input_features` (engine.features): the first layer has one
    row per mapped column. y arrays are integer class indices 0..n_classes-1, or for a
    regression `objective` real targets (n, n_classes) (n_classes: the number of outputs; (n,)
    for one).
    """
    controls = Controls(should_stop, clock, clock())
    train_split, test_split = validated_splits(
        hp, X_train, y_train, n_classes, X_test, y_test, objective
    )
    dtype = np.dtype(hp.dtype)
    rng = np.random.default_rng(hp.seed)
    layer_sizes = [train_split.X_aug.shape[1] - 1, *hp.hidden_layers, int(n_classes)]
    if initial is None:
        weights, biases = init_params(layer_sizes, hp.init, dtype, rng)
    else:
        initial.check(layer_sizes)
        weights, biases = initial.weights, initial.biases
    network = Network(layer_sizes, hp.activation, dtype, objective.task)
    network.set_params(weights, biases)
    optimizer_state = initial.optimizer_state if initial is not None else None
    trainer = _Trainer(
        hp,
        network,
        train_split,
        test_split,
        rng,
        on_record,
        controls,
        on_snapshot,
        objective,
        optimizer_state,
    )
    # Overflow and NaN are detected by the divergence checks, not reported as warnings.
    with (
        trainer.passes,
        blas_single_thread(not trainer.blas_threads),
        np.errstate(all="ignore"),
    ):
        return trainer.run()
