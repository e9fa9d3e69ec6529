"""One pack's training loop: K configurations trained as one packed network, each under
`engine.training`'s rules (its own Progress), stepped by `engine.optimizers` with per-network
settings; a configuration that finishes or fails leaves the pack alone."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.errors import EngineError, InvalidInput, TrainingDiverged
from engine.hyperparameters import Hyperparameters
from engine.optimizers import Grouped, Penalty, make_optimizer
from engine.packed.network import PackedNetwork
from engine.packed.passes import PackedWorkspace, Stats
from engine.training import (
    CLASSIFICATION,
    POLL_EVERY_BATCHES,
    TASK_METRICS,
    Controls,
    HistoryPoint,
    Objective,
    Progress,
    StopReason,
    TrainResult,
    Which,
    effective_batch_size,
    final_metrics,
    weights_diverged,
)

Array = np.ndarray
OutcomeStatus = Literal["succeeded", "failed", "cancelled"]


@dataclass
class ConfigurationOutcome:
    """How one configuration ended. `result` is set when it succeeded, `error` when it failed;
    `history` holds the points recorded before it ended, whatever the ending."""

    index: int
    status: OutcomeStatus
    result: TrainResult | None = None
    error: EngineError | None = None
    history: list[HistoryPoint] = field(default_factory=list)
    seconds: float = 0.0  # from the start of its pack (or single run) to its end


# -- training one pack ---------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


class Member(Progress):
    """One configuration inside a pack: its state under train's rules, and its place."""

    def __init__(
        self,
        index: int,
        hp: Hyperparameters,
        rng: np.random.Generator,
        *,
        full_batch: bool,
        has_test: bool,
    ) -> None:
        super().__init__(hp, full_batch=full_batch, has_test=has_test)
        self.index = index
        self.rng = rng
        self.best_params: Array | None = None  # its entries of params at best_epoch
        self.rate = hp.learning_rate  # this epoch's
        self.outcome: ConfigurationOutcome | None = None
        self.active = True  # until it has an outcome


RecordCallback = Callable[[int, HistoryPoint], None]
FinishCallback = Callable[[ConfigurationOutcome], None]


class PackTrainer:
    def __init__(
        self,
        members: list[Member],
        network: PackedNetwork,
        data: PackData,
        on_record: RecordCallback | None,
        on_finish: FinishCallback | None,
        controls: Controls,
        group_rngs: Sequence[np.random.Generator] = (),
    ) -> None:
        self.members = members
        self.group_rngs = list(group_rngs)  # minibatch: one shuffling generator per input group
        self.network = network
        self.data = data
        self.on_record = on_record
        self.on_finish = on_finish
        self.controls = controls
        K = network.n_networks
        first = members[0].hp
        self.batch_size = effective_batch_size(first, data.n_train)
        self.full_batch = self.batch_size is None
        largest = max(data.n_train, data.n_test)
        self.workspace = PackedWorkspace(network, max(1, min(largest, network.block_rows())))
        self.train_input = network.tiled_input(data.X_train)  # (n, G*(d+1))
        self.test_input = network.tiled_input(data.X_test) if data.X_test is not None else None
        self.objective = data.objective
        # targets by row: the class-1 indicator (1, n) for C = 2, else one-hot (C, n);
        # regression: the targets (C, n)
        self.row_targets = _row_targets(data, data.y_train)
        self.targets = self.row_targets[:, None, :]  # (1 or C, 1, n): shared by every network
        # what the stats compare the outputs with: labels (n,), or the targets (C, 1, n)
        self.compared: dict[Which, Array | None] = {"train": data.y_train, "test": data.y_test}
        if self.objective.regression:
            self.compared["train"] = self.targets
            if data.y_test is not None:
                self.compared["test"] = _row_targets(data, data.y_test)[:, None, :]
        # one value per network, padding last (0): the optimizer's per-parameter settings
        self.rates = np.zeros(K + 1)
        self.learning_rate = self._grouped(self.rates)
        self.l1 = np.array([m.hp.l1 for m in members])
        self.l2 = np.array([m.hp.l2 for m in members])
        self.penalty = Penalty(
            network.weight_mask,
            l1=self._grouped(np.append(self.l1, 0.0)),
            l2=self._grouped(np.append(self.l2, 0.0)),
        )
        momentum = self._grouped(np.array([*(m.hp.momentum for m in members), 0.0]))
        self.optimizer = make_optimizer(first, network.params.size, network.dtype, momentum)
        self._failed: set[int] = set()  # networks isolated in this step's passes
        self.n_active = len(members)
        self.ones = np.ones_like(network.params)
        # the parameters after an epoch: (which, epoch) -> (every network's stats, penalties)
        self.cache: dict[tuple[Which, int], tuple[Stats, Array]] = {}
        self.penalty_cache: dict[int, Array] = {}  # epoch -> each network's penalty
        self.n_train = data.n_train
        self.scheduled = [k for k, m in enumerate(members) if m.hp.lr_schedule != "constant"]
        self.waiting: list[int] = []  # members with a pending record
        # full batch without a test split: plateau watches the training loss, which the next
        # epoch's forward pass gives for free (as train does)
        self.plateau_on_train = [k for k, m in enumerate(members) if m.plateau_on_train_loss]

    # -- per-parameter vectors ----------------------------------------------------------------

    def _grouped(self, per_network: Array) -> Grouped:
        """A setting with network k's value (per_network[k]) on its parameters."""
        return Grouped(per_network.copy(), self.network.owner, self.network.dtype)

    def _set_rates(self, epochs_completed: int, members: Sequence[int]) -> None:
        changed = False
        for k in members:
            member = self.members[k]
            if not member.active:
                continue
            member.rate = member.schedule.rate(epochs_completed)
            if self.rates[k] != member.rate:
                self.rates[k] = member.rate
                changed = True
        if changed:
            self.learning_rate = self._grouped(self.rates)

    # -- metrics ------------------------------------------------------------------------------

    def _store(self, which: Which, epoch: int, stats: Stats) -> tuple[Stats, Array]:
        penalties = self.penalty_cache.get(epoch)
        if penalties is None:  # the same parameters for both splits
            penalties = self.network.penalties(self.n_train, self.l1, self.l2)
            self.penalty_cache = {epoch: penalties}
        result = self.cache[(which, epoch)] = (stats, penalties)
        return result

    def _stats(self, which: Which, epoch: int) -> tuple[Stats, Array]:
        """Every network's stats on a split and penalty, for the current parameters (those
        after `epoch`); computed once."""
        cached = self.cache.get((which, epoch))
        if cached is not None:
            return cached
        X_in = self.train_input if which == "train" else self.test_input
        y = self.compared[which]
        assert X_in is not None and y is not None
        return self._store(which, epoch, self.workspace.cross_entropy_and_correct(X_in, y))

    def _unchecked(self, k: int, which: Which, epoch: int) -> dict[str, float]:
        """Member k's metrics on a split after `epoch`, as train computes them."""
        (first, second), penalties = self._stats(which, epoch)
        data = self.data
        n, total_squares = (
            (data.n_train, data.train_total_squares)
            if which == "train"
            else (data.n_test, data.test_total_squares)
        )
        return self.objective.metrics((first[k], second[k]), n, float(penalties[k]), total_squares)

    def _loss(self, k: int, which: Which, epoch: int) -> dict[str, float]:
        """Member k's metrics on a split after `epoch`; TrainingDiverged if train's loss rule
        fires."""
        metrics = self._unchecked(k, which, epoch)
        self.members[k].check_loss(which, epoch, metrics["loss"])
        return metrics

    def _checked(self, k: int, which: Which, epoch: int) -> dict[str, float] | None:
        """`_loss`, or None after failing member k as train would."""
        try:
            return self._loss(k, which, epoch)
        except TrainingDiverged as error:
            self._fail(k, error)
            return None

    def _point(self, k: int, epoch: int, learning_rate: float) -> HistoryPoint | None:
        train = self._checked(k, "train", epoch)
        if train is None:
            return None
        test = None
        if self.data.X_test is not None:
            test = self._checked(k, "test", epoch)
            if test is None:
                return None
        return HistoryPoint.of(epoch, train, test, learning_rate)

    def _record(self, k: int, epoch: int, learning_rate: float) -> bool:
        """Append member k's point for `epoch`; False if a check failed it instead."""
        point = self._point(k, epoch, learning_rate)
        if point is None:
            return False
        member = self.members[k]
        member.history.append(point)
        if self.on_record is not None:
            self.on_record(member.index, point)
        return True

    # -- members ending -----------------------------------------------------------------------

    def _retire(
        self,
        k: int,
        status: OutcomeStatus,
        *,
        result: TrainResult | None = None,
        error: EngineError | None = None,
    ) -> None:
        """Record k's outcome; zero and freeze its block."""
        member = self.members[k]
        outcome = member.outcome = ConfigurationOutcome(
            member.index, status, result, error, member.history, self.controls.elapsed()
        )
        member.active = False
        self.n_active -= 1
        entries = self.network.entries[k]
        self.network.params[entries] = 0
        self.optimizer.forget(entries)
        self.rates[k] = 0.0
        self.learning_rate = self._grouped(self.rates)
        if self.on_finish is not None:
            self.on_finish(outcome)

    def _fail(self, k: int, error: EngineError) -> None:
        self._retire(k, "failed", error=error)

    def _restored_metrics(self, k: int, restored: Array) -> dict[str, float | None]:
        """Final metrics of network k with the parameters `restored` (laid out like params),
        evaluated alone."""
        member = self.members[k]
        hp = member.hp
        weights, biases = self.network.network_weights(k, restored)
        network = self.network
        alone = PackedNetwork(
            [network.layer_sizes[k]], hp.activation, network.dtype, task=network.task
        )
        alone.set_network(0, weights, biases)
        data = self.data
        workspace = PackedWorkspace(
            alone, max(1, min(max(data.n_train, data.n_test), alone.block_rows()))
        )
        penalty = float(alone.penalties(data.n_train, np.array([hp.l1]), np.array([hp.l2]))[0])
        names = ("loss", *TASK_METRICS[self.objective.task])
        metrics: dict[str, float | None] = {f"test_{name}": None for name in names}
        splits: list[tuple[Which, Array | None, int, Array | None]] = [
            ("train", data.X_train, data.n_train, data.train_total_squares),
            ("test", data.X_test, data.n_test, data.test_total_squares),
        ]
        for which, X, n, total_squares in splits:
            y = self.compared[which]
            if X is None or y is None:
                continue
            first, second = workspace.cross_entropy_and_correct(X, y)
            values = self.objective.metrics((first[0], second[0]), n, penalty, total_squares)
            metrics.update({f"{which}_{name}": values[name] for name in names})
        return metrics

    def _succeed(self, k: int, epoch: int, reason: StopReason) -> None:
        member = self.members[k]
        final = self._point(k, epoch, 0.0)
        if final is None:
            return
        metrics = final_metrics(final)
        params = self.network.params
        if member.best_params is not None and member.best_epoch not in (None, epoch):
            params = params.copy()
            params[self.network.entries[k]] = member.best_params
            metrics = self._restored_metrics(k, params)
        weights, biases = self.network.network_weights(k, params)
        result = TrainResult(
            weights=weights,
            biases=biases,
            history=member.history,
            epochs_run=epoch,
            stop_reason=reason,
            best_epoch=member.best_epoch,
            metrics=metrics,
        )
        self._retire(k, "succeeded", result=result)

    # -- the loop -----------------------------------------------------------------------------

    def _poll(self, epochs_completed: int) -> None:
        if self.controls.stop_requested():
            for k, member in enumerate(self.members):
                pending = member.take_pending()
                if member.active and pending is not None:  # still its parameters
                    self._record(k, *pending)
            raise _Cancelled

    def _update(self, grad_sum: Array, n: int, epoch: int) -> None:
        """One optimizer step for every network from the summed CE gradient over n rows, each
        with its own settings, then fail every network not finite."""
        params = self.network.params
        self.optimizer.step(params, grad_sum, n, self.learning_rate, self.penalty)
        failed = self._failed
        if not math.isfinite(np.dot(params, self.ones)):  # the sum: NaN/inf-propagating
            failed.update(np.unique(self.network.owner[~np.isfinite(params)]).tolist())
        if failed:
            if len(self.members) in failed:  # an overflowing cross term on the padding: 0·inf
                params[self.network.padding_entries] = 0
                failed.discard(len(self.members))
            for k in sorted(failed):
                params[self.network.entries[k]] = 0
                if self.members[k].active:
                    self._fail(k, weights_diverged(epoch, self.members[k].rate))
            failed.clear()

    def _full_batch_epoch(self, epoch: int) -> None:
        waiting = self.waiting
        want_stats = bool(waiting) or bool(self.plateau_on_train)
        grad_sum, stats = self.workspace.summed_gradient(
            self.train_input,
            self.targets,
            self.compared["train"] if want_stats else None,
            self._failed,
        )
        if stats is not None:  # the metrics of the parameters after epoch - 1
            self._store("train", epoch - 1, stats)
            if epoch > 1:
                for k in self.plateau_on_train:
                    if self.members[k].active:
                        checked = self._checked(k, "train", epoch - 1)
                        if checked is not None:
                            self.members[k].observe_train_loss(epoch - 1, checked["loss"])
            for k in waiting:
                member = self.members[k]
                pending = member.take_pending()
                if member.active and pending is not None:
                    self._record(k, *pending)
            waiting.clear()
        self._set_rates(epoch - 1, self.scheduled)
        self._update(grad_sum, self.n_train, epoch)

    def _minibatch_epoch(self, epoch: int) -> None:
        assert self.batch_size is not None
        network = self.network
        data = self.data
        size = self.batch_size
        self._set_rates(epoch - 1, self.scheduled)
        X_batch, targets_batch = self.batch_buffers
        d1 = network.n_features + 1
        orders = [rng.permutation(data.n_train) for rng in self.group_rngs]
        for index, start in enumerate(range(0, data.n_train, size)):
            if index and index % POLL_EVERY_BATCHES == 0:
                self._poll(epoch - 1)
            if network.n_groups == 1:
                rows = orders[0][start : start + size]
                m = rows.shape[0]
                np.take(data.X_train, rows, axis=0, out=X_batch[:m])
                targets_batch[:, 0, :m] = self.row_targets[:, rows]
            else:
                group_rows = [order[start : start + size] for order in orders]
                m = group_rows[0].shape[0]
                for g, rows in enumerate(group_rows):
                    X_batch[:m, g * d1 : (g + 1) * d1] = data.X_train[rows]
                labels = data.y_train[np.stack(group_rows)][self.group_of]  # (K, m[, C])
                self._group_targets(targets_batch[..., :m], labels)
            grad_sum, _ = self.workspace.summed_gradient(
                X_batch[:m], targets_batch[..., :m], None, self._failed
            )
            self._update(grad_sum, m, epoch)

    def _group_targets(self, targets: Array, labels: Array) -> None:
        """Each network's targets for its own rows into (1 or C, K, m), from labels (K, m)
        (regression: from targets (K, m, C))."""
        if self.objective.regression:
            targets[...] = np.moveaxis(labels, 2, 0)
            return
        if self.network.n_classes == 2:
            np.equal(labels, 1, out=targets[0], casting="unsafe")
            return
        K, m = labels.shape
        targets.fill(0)
        targets[labels, np.arange(K)[:, None], np.arange(m)[None, :]] = 1

    def _after_epoch(self, k: int, epoch: int) -> None:
        """What train does after an epoch (Progress.after_epoch), for member k."""
        member = self.members[k]
        entries = self.network.entries[k]

        def loss(which: Which) -> float:
            return self._loss(k, which, epoch)["loss"]

        def keep_best() -> None:
            member.best_params = self.network.params[entries]  # a copy

        try:
            record, stop = member.after_epoch(
                epoch, member.rate, loss, keep_best, self.controls.elapsed
            )
        except TrainingDiverged as error:
            self._fail(k, error)
            return
        if member.pending is not None:  # set just now: the waiting ones were recorded
            self.waiting.append(k)
        if record and self._record(k, epoch, member.rate) and stop is not None:
            self._succeed(k, epoch, stop)

    def run(self) -> None:
        network = self.network
        if self.batch_size is not None:
            rows = self.batch_size
            width = network.n_groups * (network.n_features + 1)
            networks = network.n_networks if network.n_groups > 1 else 1
            self.batch_buffers = (
                np.empty((rows, width), dtype=network.dtype),
                np.empty((self.row_targets.shape[0], networks, rows), dtype=network.dtype),
            )
            self.group_of = np.array(network.input_groups)
        for k, member in enumerate(self.members):
            initial_loss = self._unchecked(k, "train", 0)["loss"]
            try:
                member.set_explosion_limit(initial_loss, network.n_classes, self.objective)
            except InvalidInput as error:
                self._fail(k, error)
        self._set_rates(0, range(len(self.members)))
        # members that need attention after every epoch, and the others' next epoch to look
        every_epoch = [k for k, m in enumerate(self.members) if m.every_epoch]
        last_epoch = max(member.hp.epochs for member in self.members)
        try:
            for epoch in range(1, last_epoch + 1):
                if not self.n_active:
                    break
                self._poll(epoch - 1)
                if len(self.cache) > 4:
                    for key in [key for key in self.cache if key[1] < epoch - 1]:
                        del self.cache[key]
                if self.full_batch:
                    self._full_batch_epoch(epoch)
                else:
                    self._minibatch_epoch(epoch)
                for k, member in enumerate(self.members):
                    if member.active and (
                        k in every_epoch
                        or epoch % member.hp.record_every == 0
                        or epoch == member.hp.epochs
                    ):
                        self._after_epoch(k, epoch)
        except _Cancelled:
            seconds = self.controls.elapsed()
            for member in self.members:
                if member.active:
                    member.outcome = ConfigurationOutcome(
                        member.index, "cancelled", history=member.history, seconds=seconds
                    )


@dataclass(frozen=True)
class PackData:
    """Validated data in the training dtype: X arrays carry the ones column."""

    X_train: Array  # (n_train, d + 1)
    y_train: Array  # (n_train,); regression: the targets (n_train, C)
    X_test: Array | None  # (n_test, d + 1)
    y_test: Array | None
    n_classes: int  # regression: the number of outputs
    objective: Objective = CLASSIFICATION
    train_total_squares: Array | None = None  # regression: (C,) per split, for r2
    test_total_squares: Array | None = None

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return 0 if self.X_test is None else int(self.X_test.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1]) - 1


def _row_targets(data: PackData, y: Array) -> Array:
    """(1, n) indicator of class 1 when n_classes = 2, else one-hot (n_classes, n); for
    regression the targets (n, C) transposed, (C, n), contiguous."""
    n_classes, dtype = data.n_classes, data.X_train.dtype
    if data.objective.regression:
        return np.ascontiguousarray(y.T, dtype=dtype)
    if n_classes == 2:
        return (y == 1).astype(dtype).reshape(1, -1)
    Y = np.zeros((n_classes, y.shape[0]), dtype=dtype)
    Y[y, np.arange(y.shape[0])] = 1
    return Y
