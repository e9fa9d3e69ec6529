"""The training loop: the tutorial's results, history, stopping rules, divergence, validation."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_moons

from engine import network
from engine.errors import InvalidInput, TrainingCancelled, TrainingDiverged
from engine.hyperparameters import Hyperparameters
from engine.training import HistoryPoint, train


@pytest.fixture(scope="module")
def moons() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_moons(200, noise=0.2, random_state=0)
    return X, y


def _tutorial_hp(**overrides: Any) -> Hyperparameters:
    settings: dict[str, Any] = {
        "hidden_layers": [3],
        "activation": "tanh",
        "optimizer": "sgd",
        "learning_rate": 2.0,
        "l2": 0.01,
        "epochs": 20000,
        "init": "lecun",
        "seed": 0,
    }
    settings.update(overrides)
    return Hyperparameters(**settings)


def _spiral(n_per_class: int, n_classes: int, noise: float, seed: int) -> tuple[Any, Any]:
    """Interleaved arms: class k's points turn through [4k, 4k + 4] radians as r goes 0 -> 1."""
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.0, 1.0, n_per_class), n_classes)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    angle = 4.0 * labels + 4.0 * radius + noise * rng.standard_normal(radius.shape)
    X = np.column_stack([radius * np.sin(angle), radius * np.cos(angle)])
    return X, labels


# -- the tutorial ------------------------------------------------------------------------------


def test_mean_loss_step_equals_tutorials_summed_gradient_descent(
    moons: tuple[np.ndarray, np.ndarray],
) -> None:
    """learning_rate 2.0 on the mean loss == step 0.01 on the summed loss (n = 200)."""
    X, y = moons
    n = X.shape[0]
    weights, biases = network.init_params([2, 3, 2], "lecun", np.float64, np.random.default_rng(0))
    W1, W2 = weights
    b1, b2 = biases
    step, reg = 0.01, 0.01
    for _ in range(50):
        hidden = np.tanh(X @ W1 + b1)  # (200, 3)
        scores = np.exp(hidden @ W2 + b2)
        probs = scores / scores.sum(axis=1, keepdims=True)  # (200, 2)
        out_error = probs.copy()
        out_error[np.arange(n), y] -= 1.0  # d(summed CE)/d logits
        hidden_error = (out_error @ W2.T) * (1.0 - hidden**2)
        grad_W2 = hidden.T @ out_error + reg * W2
        grad_b2 = out_error.sum(axis=0)
        grad_W1 = X.T @ hidden_error + reg * W1
        grad_b1 = hidden_error.sum(axis=0)
        W1, b1 = W1 - step * grad_W1, b1 - step * grad_b1
        W2, b2 = W2 - step * grad_W2, b2 - step * grad_b2

    result = train(_tutorial_hp(epochs=50), X, y, 2)
    for mine, theirs in zip([*result.weights, *result.biases], [W1, W2, b1, b2], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)


def test_tutorial_experiment(moons: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = moons
    result = train(_tutorial_hp(), X, y, 2)
    metrics = result.final_metrics()
    assert metrics["train_loss"] is not None and metrics["train_loss"] <= 0.08
    assert metrics["train_accuracy"] is not None and metrics["train_accuracy"] >= 0.96
    assert result.stop_reason == "completed" and result.epochs_run == 20000


def test_softmax_regression_cannot_fit_the_moons(moons: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = moons
    result = train(_tutorial_hp(hidden_layers=[]), X, y, 2)
    assert len(result.weights) == 1 and result.weights[0].shape == (2, 2)
    accuracy = result.final_metrics()["train_accuracy"]
    assert accuracy is not None and accuracy <= 0.90


def test_spiral_three_classes_with_two_hidden_layers() -> None:
    X, y = _spiral(100, 3, noise=0.2, seed=0)
    hp = Hyperparameters(
        hidden_layers=[32, 32], activation="relu", optimizer="adam", learning_rate=0.01,
        epochs=1500, record_every=100, init="he",
    )  # fmt: skip
    result = train(hp, X, y, 3)
    accuracy = result.final_metrics()["train_accuracy"]
    assert accuracy is not None and accuracy >= 0.95


# -- history -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "record_every", "expected"),
    [(30, 7, [7, 14, 21, 28, 30]), (28, 7, [7, 14, 21, 28]), (3, 10, [3]), (4, 1, [1, 2, 3, 4])],
)
def test_history_records_every_k_epochs_and_the_last(
    moons: tuple[np.ndarray, np.ndarray], epochs: int, record_every: int, expected: list[int]
) -> None:
    X, y = moons
    seen: list[HistoryPoint] = []
    result = train(
        _tutorial_hp(epochs=epochs, record_every=record_every), X, y, 2, on_record=seen.append
    )
    assert [point.epoch for point in result.history] == expected
    assert seen == result.history
    last = result.history[-1]
    assert result.final_metrics() == {
        "train_loss": last.train_loss,
        "train_accuracy": last.train_accuracy,
        "test_loss": None,
        "test_accuracy": None,
    }


def test_history_point_values_match_the_weights(moons: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = moons
    X_test, y_test = make_moons(50, noise=0.2, random_state=1)
    hp = _tutorial_hp(epochs=20, record_every=20, l1=0.02)
    result = train(hp, X, y, 2, X_test, y_test)
    point = result.history[-1]
    penalty_free_test = network.loss(result.weights, result.biases, "tanh", X_test, y_test)
    penalty = network.loss(result.weights, result.biases, "tanh", X, y, l1=0.02, l2=0.01)
    penalty -= network.loss(result.weights, result.biases, "tanh", X, y)
    assert point.train_loss == pytest.approx(
        network.loss(result.weights, result.biases, "tanh", X, y, l1=0.02, l2=0.01), rel=1e-12
    )
    assert point.test_loss == pytest.approx(penalty_free_test + penalty, rel=1e-12)
    probabilities = network.predict_proba(result.weights, result.biases, "tanh", X_test)
    assert point.test_accuracy == np.mean(probabilities.argmax(axis=1) == y_test)
    assert point.as_dict()["learning_rate"] == 2.0


def test_history_learning_rate_follows_the_schedule(moons: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = moons
    hp = _tutorial_hp(epochs=5, record_every=1, lr_schedule="step", lr_decay=0.5, lr_decay_epochs=2)
    result = train(hp, X, y, 2)
    assert [point.learning_rate for point in result.history] == [2.0, 2.0, 1.0, 1.0, 0.5]


def test_plateau_without_test_split_monitors_the_training_loss(
    moons: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = moons
    # A rate far too high for the problem oscillates, so the training loss stops improving.
    hp = _tutorial_hp(
        epochs=60, record_every=1, learning_rate=30.0, lr_schedule="plateau",
        lr_decay=0.5, lr_decay_epochs=3,
    )  # fmt: skip
    result = train(hp, X, y, 2)
    rates = [point.learning_rate for point in result.history]
    losses = [point.train_loss for point in result.history]
    assert rates[-1] < 30.0
    # Replay the rule on the recorded losses: the rate after epoch e follows from losses[:e].
    best, wait, rate = math.inf, 0, 30.0
    for epoch, value in enumerate(losses, start=1):
        assert rates[epoch - 1] == rate
        if value < best:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= 3:
                rate, wait = rate * 0.5, 0


# -- determinism and minibatches ---------------------------------------------------------------


def test_minibatch_epoch_follows_the_documented_draws_and_batch_means() -> None:
    X, y = _spiral(10, 3, noise=0.1, seed=1)  # 30 examples, batches of 8, 8, 8, 6
    hp = Hyperparameters(
        hidden_layers=[4], activation="sigmoid", optimizer="sgd", learning_rate=0.5,
        batch_size=8, epochs=2, l2=0.3, init="xavier", seed=5,
    )  # fmt: skip
    rng = np.random.default_rng(5)
    weights, biases = network.init_params([2, 4, 3], "xavier", np.float64, rng)
    for _ in range(2):
        order = rng.permutation(30)
        for start in range(0, 30, 8):
            rows = order[start : start + 8]
            _, dW, db = network.loss_and_gradients(
                weights, biases, "sigmoid", X[rows], y[rows], l2=0.3
            )
            weights = [W - 0.5 * g for W, g in zip(weights, dW, strict=True)]
            biases = [b - 0.5 * g for b, g in zip(biases, db, strict=True)]
    result = train(hp, X, y, 3)
    for mine, expected in zip([*result.weights, *result.biases], [*weights, *biases], strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
def test_same_seed_same_run_bit_for_bit(optimizer: str) -> None:
    X, y = _spiral(40, 3, noise=0.2, seed=2)
    hp = Hyperparameters(
        hidden_layers=[8, 8], optimizer=optimizer, batch_size=16, epochs=15, record_every=5,
        seed=9, dtype="float32",
    )  # fmt: skip
    first, second = train(hp, X, y, 3), train(hp, X, y, 3)
    assert first.history == second.history
    for a, b in zip(
        [*first.weights, *first.biases], [*second.weights, *second.biases], strict=True
    ):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    other = train(hp.model_copy(update={"seed": 10}), X, y, 3)
    assert not np.array_equal(other.weights[0], first.weights[0])


def test_batch_size_at_least_n_is_full_batch(moons: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = moons
    full = train(_tutorial_hp(epochs=5), X, y, 2)
    batched = train(_tutorial_hp(epochs=5, batch_size=500), X, y, 2)
    np.testing.assert_array_equal(full.weights[0], batched.weights[0])


# -- stopping ----------------------------------------------------------------------------------


def test_early_stopping_restores_the_best_weights() -> None:
    X, y = _spiral(15, 3, noise=0.8, seed=3)  # tiny and noisy: a big network overfits quickly
    X_test, y_test = _spiral(100, 3, noise=0.8, seed=4)
    hp = Hyperparameters(
        hidden_layers=[64, 64], activation="relu", optimizer="adam", learning_rate=0.02,
        epochs=2000, record_every=1, early_stopping=True, patience=25, init="he",
    )  # fmt: skip
    result = train(hp, X, y, 3, X_test, y_test)
    assert result.stop_reason == "early_stopping"
    assert result.best_epoch is not None
    assert result.epochs_run == result.best_epoch + 25 < 2000
    test_losses = [point.test_loss for point in result.history]
    best = min(loss for loss in test_losses if loss is not None)
    assert result.final_metrics()["test_loss"] == best
    assert test_losses.index(best) + 1 == result.best_epoch
    # The returned weights really are the best epoch's, not the last epoch's.
    assert network.loss(result.weights, result.biases, "relu", X_test, y_test) == pytest.approx(
        best, rel=1e-12
    )
    assert result.history[-1].test_loss != best


def test_time_budget_stops_after_the_epoch_in_which_it_ran_out(
    moons: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = moons
    ticks = itertools.count()  # the fake clock advances one second per reading

    result = train(
        _tutorial_hp(epochs=100, max_seconds=3.5), X, y, 2, clock=lambda: float(next(ticks))
    )
    # Read at the start (0) and after epochs 1, 2, 3, 4 (1, 2, 3, 4 >= 3.5).
    assert result.stop_reason == "time_budget"
    assert result.epochs_run == 4
    assert [point.epoch for point in result.history] == [4]


@pytest.mark.parametrize("batch_size", [None, 10])
def test_cancellation_stops_at_the_poll_that_asked(
    moons: tuple[np.ndarray, np.ndarray], batch_size: int | None
) -> None:
    X, y = moons
    polls = 0

    def should_stop() -> bool:
        nonlocal polls
        polls += 1
        return polls == 10

    hp = _tutorial_hp(epochs=100, batch_size=batch_size)
    with pytest.raises(TrainingCancelled) as raised:
        train(hp, X, y, 2, should_stop=should_stop)
    assert polls == 10
    # Full batch: one poll before each epoch, so the 10th precedes epoch 10 (9 completed).
    # Batches of 10: 20 batches, polls before the epoch and before batches 16 -> 2 per epoch.
    assert raised.value.epoch == (9 if batch_size is None else 4)


# -- divergence --------------------------------------------------------------------------------


def test_huge_learning_rate_names_the_first_epoch_with_a_non_finite_weight(
    moons: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = moons
    # record_every beyond the run: no loss is computed, so only the weight check can fire.
    hp = _tutorial_hp(
        hidden_layers=[20, 20, 20], activation="identity", learning_rate=1000.0, epochs=50,
        record_every=1000,
    )  # fmt: skip
    with pytest.raises(TrainingDiverged) as raised:
        train(hp, X, y, 2)
    epoch = raised.value.epoch
    assert epoch > 1
    assert "NaN or infinite" in raised.value.detail and "learning rate" in raised.value.detail
    # Stopping one epoch earlier, the weights are still finite (though their outputs overflow):
    # the loss rule fires instead, at the final record of that shorter run.
    with pytest.raises(TrainingDiverged) as shorter:
        train(hp.model_copy(update={"epochs": epoch - 1}), X, y, 2)
    assert shorter.value.epoch == epoch - 1
    assert "training loss" in shorter.value.detail


@pytest.mark.parametrize(("activation", "learning_rate"), [("tanh", 50.0), ("sigmoid", 200.0)])
def test_bounded_activation_with_huge_learning_rate_is_divergence(
    moons: tuple[np.ndarray, np.ndarray], activation: str, learning_rate: float
) -> None:
    X, y = moons
    hp = _tutorial_hp(activation=activation, learning_rate=learning_rate, record_every=1)
    seen: list[HistoryPoint] = []
    with pytest.raises(TrainingDiverged) as raised:
        train(hp, X, y, 2, on_record=seen.append)
    epoch = raised.value.epoch
    assert "exceeded" in raised.value.detail and "learning rate" in raised.value.detail
    assert epoch > 1
    assert [point.epoch for point in seen] == list(range(1, epoch))
    weights, biases = network.init_params([2, 3, 2], "lecun", np.float64, np.random.default_rng(0))
    initial = network.loss(weights, biases, activation, X, y, l2=0.01)  # type: ignore[arg-type]
    limit = 100 * max(initial, math.log(2))
    assert all(math.isfinite(point.train_loss) and point.train_loss <= limit for point in seen)


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"X_train": np.zeros(5)}, "2-D"),
        ({"X_train": np.array([[0.0, np.nan]] * 5)}, "row 0 is not finite"),
        ({"X_train": np.array([[1e39, 0.0]] * 5), "dtype": "float32"}, "float32 range"),
        ({"y_train": np.zeros(4, dtype=int)}, "shape (5,)"),
        ({"y_train": np.array([0, 1, 2, 1, 0])}, "class index 2, outside 0..1"),
        ({"y_train": np.array([0, -1, 1, 1, 0])}, "class index -1"),
        ({"y_train": np.zeros(5)}, "integer class indices"),
        ({"n_classes": 1}, "n_classes must be >= 2"),
        ({"X_test": np.zeros((3, 2))}, "both X_test and y_test"),
        ({"X_test": np.zeros((3, 3)), "y_test": np.zeros(3, dtype=int)}, "X_test has 3 features"),
        ({"early_stopping": True}, "early_stopping monitors the test loss"),
    ],
)
def test_invalid_input_says_what_and_how(arguments: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {
        "X_train": np.zeros((5, 2)),
        "y_train": np.array([0, 1, 0, 1, 0]),
        "n_classes": 2,
        "X_test": None,
        "y_test": None,
    }
    settings = {key: arguments.pop(key) for key in ("dtype", "early_stopping") if key in arguments}
    call.update(arguments)
    hp = Hyperparameters(hidden_layers=[2], epochs=1, **settings)
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(hp, **call)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_features_that_overflow_the_initial_network_are_invalid_input(
    batch_size: int | None,
) -> None:
    X = np.full((6, 2), 1.5e308)
    X[::2] *= -1
    hp = Hyperparameters(hidden_layers=[4], activation="identity", epochs=2, batch_size=batch_size)
    with pytest.raises(InvalidInput, match="standardize the features"):
        train(hp, X, np.array([0, 1] * 3), 2)


def test_blocked_two_thread_training_is_reproducible_and_matches_one_block(
    moons: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = moons
    hp = _tutorial_hp(epochs=30, record_every=7)
    whole = train(hp, X, y, 2)
    # 200 rows in blocks of 16, split over two threads (both halves also blocked).
    monkeypatch.setattr(network, "BLOCK_BYTES", 16 * 3 * 8)
    monkeypatch.setattr(network, "MIN_BLOCK_ROWS", 16)
    monkeypatch.setattr(network, "PARALLEL_MIN_ELEMENTS", 100)
    splits: list[int | None] = []
    original_split = network.Passes._split

    def recording_split(self: network.Passes, n: int) -> int | None:
        splits.append(original_split(self, n))
        return splits[-1]

    monkeypatch.setattr(network.Passes, "_split", recording_split)
    first, second = train(hp, X, y, 2), train(hp, X, y, 2)
    assert splits and set(splits) == {112}  # 7 blocks on this thread, 6 on the other
    assert first.history == second.history
    for a, b, c in zip(first.weights, second.weights, whole.weights, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)
    assert [p.epoch for p in first.history] == [p.epoch for p in whole.history]
    for blocked, single in zip(first.history, whole.history, strict=True):
        assert blocked.train_loss == pytest.approx(single.train_loss, rel=1e-10)
        assert blocked.train_accuracy == single.train_accuracy


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshots_come_every_snapshot_every_epochs_and_at_the_last(
    moons: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = moons
    events: list[tuple[str, int]] = []
    snapshots: list[Any] = []

    def on_snapshot(snapshot: Any) -> None:
        events.append(("snapshot", snapshot.epoch))
        snapshots.append(snapshot)

    hp = _tutorial_hp(epochs=1005, record_every=10, snapshot_every=100)
    result = train(
        hp,
        X,
        y,
        2,
        on_record=lambda point: events.append(("point", point.epoch)),
        on_snapshot=on_snapshot,
    )
    assert [(s.index, s.epoch) for s in snapshots] == [
        *((i, 100 * (i + 1)) for i in range(10)),
        (10, 1005),
    ]
    # each right before its epoch's point
    for snapshot in snapshots:
        at = events.index(("snapshot", snapshot.epoch))
        assert events[at + 1] == ("point", snapshot.epoch)

    # the last is the returned network; an earlier one is what a run that stopped there returns
    def same(arrays: list[np.ndarray], others: list[np.ndarray]) -> bool:
        return all(np.array_equal(a, b) for a, b in zip(arrays, others, strict=True))

    assert same(snapshots[-1].weights, result.weights)
    shorter = train(_tutorial_hp(epochs=300), X, y, 2)
    assert same(snapshots[2].weights, shorter.weights)
    assert same(snapshots[2].biases, shorter.biases)
    assert snapshots[0].nbytes == (2 * 3 + 3 + 3 * 2 + 2) * 8
    # copies: training on does not change a snapshot taken
    assert not np.array_equal(snapshots[0].weights[0], snapshots[1].weights[0])


def test_snapshots_come_with_the_first_point_past_each_multiple(
    moons: tuple[np.ndarray, np.ndarray],
) -> None:
    """record_every 7 does not divide 100: the first points at or after 100, 200, ..."""
    X, y = moons
    snapshots: list[Any] = []
    hp = _tutorial_hp(epochs=450, record_every=7, snapshot_every=100, batch_size=50)
    train(hp, X, y, 2, on_snapshot=snapshots.append)
    assert [s.epoch for s in snapshots] == [105, 203, 301, 406, 450]
    assert [s.index for s in snapshots] == [0, 1, 2, 3, 4]


def test_no_snapshot_without_snapshot_every(moons: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = moons
    snapshots: list[Any] = []
    train(_tutorial_hp(epochs=200, snapshot_every=None), X, y, 2, on_snapshot=snapshots.append)
    assert snapshots == []
    # a run shorter than snapshot_every still has its last epoch's
    train(_tutorial_hp(epochs=50, snapshot_every=100), X, y, 2, on_snapshot=snapshots.append)
    assert [s.epoch for s in snapshots] == [50]


def test_snapshots_pickle_as_one_buffer_and_come_back_equal(
    moons: tuple[np.ndarray, np.ndarray],
) -> None:
    import pickle

    from engine.training import ParameterSnapshot

    X, y = moons
    taken: list[ParameterSnapshot] = []
    train(_tutorial_hp(epochs=20, hidden_layers=[4, 3]), X, y, 2, on_snapshot=taken.append)
    snapshot = taken[-1]
    blob = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
    back = pickle.loads(blob)
    assert (back.index, back.epoch, back.nbytes) == (
        snapshot.index,
        snapshot.epoch,
        8 * (2 * 4 + 4 + 4 * 3 + 3 + 3 * 2 + 2),
    )
    for got, sent in zip(
        [*back.weights, *back.biases], [*snapshot.weights, *snapshot.biases], strict=True
    ):
        assert got.shape == sent.shape and got.dtype == sent.dtype
        np.testing.assert_array_equal(got, sent)
        assert got.flags.writeable
    # one buffer, not an array per layer: smaller than the arrays' own pickles
    assert len(blob) < sum(len(pickle.dumps(a, protocol=5)) for a in snapshot.weights)
    # float32 parameters stay float32; mixed dtypes (no network makes them) pickle as they are
    single = ParameterSnapshot(
        0, 1, [np.ones((2, 2), np.float32)], [np.arange(2, dtype=np.float32)]
    )
    assert pickle.loads(pickle.dumps(single)).biases[0].dtype == np.float32
    mixed = ParameterSnapshot(0, 1, [np.ones((2, 2), np.float32)], [np.zeros(2)])
    again = pickle.loads(pickle.dumps(mixed))
    assert [a.dtype for a in (*again.weights, *again.biases)] == [np.float32, np.float64]
    assert pickle.loads(pickle.dumps(ParameterSnapshot(0, 0, [], []))).nbytes == 0
