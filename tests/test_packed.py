"""Packed training: every configuration of a pack ends as `train` ends it alone (the same losses,
history, stopping and failures), one failing does not touch the others, cancellation keeps what
finished, and the planner packs only what can share a pack."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_moons

from engine import network
from engine.errors import InvalidInput, TrainingDiverged
from engine.hyperparameters import Hyperparameters
from engine.packed import (
    ConfigurationOutcome,
    DataShape,
    PackedNetwork,
    PackedWorkspace,
    pack_key,
    partition,
    train_many,
    train_pack,
)
from engine.training import TrainResult, train

# Packed products sum in their own order, so a pack matches train alone up to rounding: on these
# short runs to 1e-12 relative (measured: ~1e-13 at worst), where training is calm.
RELATIVE = 1e-12
UNSTABLE_RELATIVE = 1e-6  # the one unstable run below (see its test)
TUTORIAL_SIZES = [[1], [2], [3], [4], [5], [20], [50]]

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def moons() -> Data:
    """The tutorial's moons, 160 points to train on and 40 to test."""
    X, y = make_moons(200, noise=0.2, random_state=0)
    return X[:160], y[:160], X[160:], y[160:]


@pytest.fixture(scope="module")
def three_classes() -> Data:
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [2.0, 0.5], [0.5, 2.0]])
    y = np.repeat(np.arange(3), 40)
    X = centres[y] + 0.6 * rng.standard_normal((120, 2))
    order = rng.permutation(120)
    X, y = X[order], y[order]
    return X[:90], y[:90], X[90:], y[90:]


def _hp(**settings: Any) -> Hyperparameters:
    tutorial: dict[str, Any] = {
        "activation": "tanh",
        "optimizer": "sgd",
        "learning_rate": 2.0,
        "l2": 0.01,
        "epochs": 60,
        "record_every": 10,
    }
    return Hyperparameters(**{**tutorial, **settings})


def _alone(hp: Hyperparameters, data: Data, n_classes: int = 2) -> TrainResult:
    X_train, y_train, X_test, y_test = data
    return train(hp, X_train, y_train, n_classes, X_test, y_test)


def _packed(hps: list[Hyperparameters], data: Data, n_classes: int = 2) -> list[Any]:
    X_train, y_train, X_test, y_test = data
    return train_pack(hps, X_train, y_train, n_classes, X_test, y_test)


def _largest_difference(mine: TrainResult, theirs: TrainResult) -> float:
    """The largest relative difference between two runs' metrics, training losses and weights
    (a weight relative to its matrix's largest)."""
    differences = [
        abs(value - mine.metrics[key]) / abs(value)  # type: ignore[operator]
        for key, value in theirs.metrics.items()
        if value
    ]
    differences += [
        abs(a.train_loss - b.train_loss) / b.train_loss
        for a, b in zip(mine.history, theirs.history, strict=True)
    ]
    differences += [
        float(np.abs(a - b).max() / np.abs(b).max())
        for a, b in zip(mine.weights, theirs.weights, strict=True)
    ]
    return max(differences)


def _assert_same_run(
    packed: ConfigurationOutcome, alone: TrainResult, relative: float = RELATIVE
) -> None:
    """The packed outcome is the run train gave alone, up to rounding."""
    assert packed.status == "succeeded", packed.error
    result = packed.result
    assert result is not None
    assert result.epochs_run == alone.epochs_run
    assert result.stop_reason == alone.stop_reason
    assert result.best_epoch == alone.best_epoch
    for key, value in alone.metrics.items():
        if value is None:
            assert result.metrics[key] is None
        else:
            assert result.metrics[key] == pytest.approx(value, rel=relative), key
    assert [p.epoch for p in result.history] == [p.epoch for p in alone.history]
    assert [p.learning_rate for p in result.history] == [p.learning_rate for p in alone.history]
    for mine, theirs in zip(result.history, alone.history, strict=True):
        assert mine.train_loss == pytest.approx(theirs.train_loss, rel=relative)
    for mine_W, theirs_W in zip(result.weights, alone.weights, strict=True):
        # weights near 0 are compared at their matrix's scale (and never looser than 1e-9)
        atol = min(relative * float(np.abs(theirs_W).max()), 1e-9)
        np.testing.assert_allclose(mine_W, theirs_W, rtol=relative, atol=atol)


# -- the same runs as alone -----------------------------------------------------------------------


def test_tutorial_sweep_matches_training_each_alone(moons: Data) -> None:
    hps = [_hp(hidden_layers=sizes) for sizes in TUTORIAL_SIZES]
    for outcome, hp in zip(_packed(hps, moons), hps, strict=True):
        _assert_same_run(outcome, _alone(hp, moons))


def test_two_hidden_layers_of_different_widths(moons: Data) -> None:
    hps = [_hp(hidden_layers=[width, 3], learning_rate=0.5) for width in (2, 5, 8)]
    hps.append(_hp(hidden_layers=[4, 6], learning_rate=0.5, l2=0.0, seed=4))
    for outcome, hp in zip(_packed(hps, moons), hps, strict=True):
        _assert_same_run(outcome, _alone(hp, moons))


@pytest.mark.parametrize(
    "sizes_and_seeds",
    [
        [([8], 0), ([8], 0), ([8], 0)],  # one generator state: one shared input stream
        [([4, 4], 0), ([8, 3], 0), ([8, 3], 1), ([16, 2], 2)],  # four input groups
    ],
)
def test_minibatch_adam_shuffles_like_each_alone(
    moons: Data, sizes_and_seeds: list[tuple[list[int], int]]
) -> None:
    rates = [0.003, 0.01, 0.03, 0.02]
    hps = [
        _hp(
            hidden_layers=sizes,
            activation="relu",
            optimizer="adam",
            learning_rate=rate,
            l2=0.001,
            batch_size=32,
            epochs=15,
            record_every=5,
            seed=seed,
        )
        for (sizes, seed), rate in zip(sizes_and_seeds, rates, strict=False)
    ]
    for outcome, hp in zip(_packed(hps, moons), hps, strict=True):
        _assert_same_run(outcome, _alone(hp, moons))


def test_three_classes_full_batch_and_minibatch(three_classes: Data) -> None:
    full = [_hp(hidden_layers=[width], learning_rate=0.5) for width in (3, 6)]
    mini = [
        _hp(
            hidden_layers=[width],
            optimizer="momentum",
            learning_rate=0.5,
            batch_size=16,
            epochs=8,
            seed=width,
        )
        for width in (3, 6)
    ]
    for group in (full, mini):
        for outcome, hp in zip(_packed(group, three_classes, 3), group, strict=True):
            _assert_same_run(outcome, _alone(hp, three_classes, 3))


def test_an_unstable_minibatch_run(three_classes: Data) -> None:
    """Momentum 0.9 at rate 2.0 on batches of 16 is unstable (the loss jumps 0.28 -> 2.4 and
    back, rounding differences grow ~10x an epoch): train alone moves by ~3e-7 in 8 epochs when
    its learning rate moves by one ulp, so no two runs that round differently hold 1e-12 here.
    The pack agrees with train alone to UNSTABLE_RELATIVE (measured: 1.5e-8)."""
    mini = [
        _hp(hidden_layers=[width], optimizer="momentum", batch_size=16, epochs=8, seed=width)
        for width in (3, 6)
    ]
    sensitivities = []
    for outcome, hp in zip(_packed(mini, three_classes, 3), mini, strict=True):
        alone = _alone(hp, three_classes, 3)
        nudged_rate = float(np.nextafter(hp.learning_rate, math.inf))
        nudged = _alone(hp.model_copy(update={"learning_rate": nudged_rate}), three_classes, 3)
        sensitivities.append(_largest_difference(nudged, alone))
        _assert_same_run(outcome, alone, relative=UNSTABLE_RELATIVE)
    assert max(sensitivities) > 1e-8  # train itself cannot hold 1e-12 on this run


def test_options_that_differ_inside_a_pack(moons: Data) -> None:
    """Rates, schedules, penalties, momentum, init, seed, epochs and record_every may differ."""
    hps = [
        _hp(hidden_layers=[3], optimizer="nesterov", momentum=0.5, learning_rate=0.3, epochs=45),
        _hp(
            hidden_layers=[5],
            optimizer="nesterov",
            momentum=0.9,
            learning_rate=0.1,
            lr_schedule="step",
            lr_decay_epochs=10,
            l1=0.01,
            init="xavier",
            seed=7,
            record_every=7,
        ),
        _hp(
            hidden_layers=[4],
            optimizer="nesterov",
            learning_rate=0.2,
            lr_schedule="inverse_time",
            lr_decay_epochs=5,
            l2=0.0,
            init="he",
            epochs=33,
            record_every=1,
        ),
    ]
    assert len({pack_key(hp, 160) for hp in hps}) == 1
    for outcome, hp in zip(_packed(hps, moons), hps, strict=True):
        _assert_same_run(outcome, _alone(hp, moons))


def test_early_stopping_and_plateau_per_configuration(moons: Data) -> None:
    hps = [
        _hp(hidden_layers=[h], optimizer="adam", learning_rate=0.05, early_stopping=True,
            patience=15, epochs=400, seed=h)
        for h in (2, 10, 30)
    ] + [
        _hp(hidden_layers=[6], optimizer="adam", learning_rate=0.05, lr_schedule="plateau",
            lr_decay_epochs=5, epochs=120),
    ]  # fmt: skip
    alone = [_alone(hp, moons) for hp in hps]
    assert any(result.stop_reason == "early_stopping" for result in alone)
    for outcome, result in zip(_packed(hps, moons), alone, strict=True):
        _assert_same_run(outcome, result)


def test_plateau_on_the_training_loss_without_a_test_split(moons: Data) -> None:
    X_train, y_train, _X_test, _y_test = moons
    hps = [
        _hp(hidden_layers=[h], learning_rate=0.5, lr_schedule="plateau", lr_decay_epochs=3)
        for h in (2, 5)
    ]
    for outcome, hp in zip(train_pack(hps, X_train, y_train, 2), hps, strict=True):
        _assert_same_run(outcome, train(hp, X_train, y_train, 2))


def test_softmax_regression_pack(moons: Data) -> None:
    hps = [_hp(hidden_layers=[], learning_rate=rate) for rate in (0.5, 1.0, 4.0)]
    for outcome, hp in zip(_packed(hps, moons), hps, strict=True):
        _assert_same_run(outcome, _alone(hp, moons))


# -- failures stay alone --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("diverging", "record_every"),
    [
        ({"hidden_layers": [20, 20], "activation": "identity", "learning_rate": 1000.0}, 1000),
        ({"hidden_layers": [4, 4], "activation": "tanh", "learning_rate": 50.0}, 1),
    ],
)
def test_a_diverging_configuration_fails_alone(
    moons: Data, diverging: dict[str, Any], record_every: int
) -> None:
    """A network whose weights or loss blow up fails at the epoch train names, with train's
    message; the others in its pack finish exactly as they would alone."""
    bad = _hp(**diverging, l2=0.0, epochs=50, record_every=record_every)
    calm = [
        _hp(hidden_layers=[width, 3], activation=bad.activation, learning_rate=0.1)
        for width in (3, 6)
    ]
    hps = [calm[0], bad, calm[1]]
    outcomes = _packed(hps, moons)
    with pytest.raises(TrainingDiverged) as alone_error:
        _alone(bad, moons)
    assert outcomes[1].status == "failed"
    error = outcomes[1].error
    assert isinstance(error, TrainingDiverged)
    assert error.epoch == alone_error.value.epoch
    assert error.detail == alone_error.value.detail
    for outcome, hp in ((outcomes[0], calm[0]), (outcomes[2], calm[1])):
        _assert_same_run(outcome, _alone(hp, moons))


def test_early_stopping_without_a_test_split_fails_only_that_configuration(moons: Data) -> None:
    X_train, y_train, _X_test, _y_test = moons
    hps = [_hp(hidden_layers=[3]), _hp(hidden_layers=[4], early_stopping=True)]
    first, second = train_pack(hps, X_train, y_train, 2)
    assert first.status == "succeeded"
    assert second.status == "failed" and isinstance(second.error, InvalidInput)
    assert "early_stopping" in str(second.error)


# -- cancellation ---------------------------------------------------------------------------------


def _counting_stop(stop_at: int) -> tuple[list[int], Any]:
    polls = [0]

    def should_stop() -> bool:
        polls[0] += 1
        return polls[0] >= stop_at

    return polls, should_stop


def test_cancellation_keeps_what_finished(moons: Data) -> None:
    X_train, y_train, X_test, y_test = moons
    hps = [
        _hp(hidden_layers=[2], epochs=5, record_every=1),
        _hp(hidden_layers=[3], epochs=3, record_every=1),
        _hp(hidden_layers=[4], epochs=50, record_every=1),
    ]
    # Polls: before pack [0] (1), train's before its 5 epochs (2-6), before pack [1, 2] (7),
    # the pack's before each epoch (8, 9, ...): the 12th, before epoch 5, stops it.
    polls, should_stop = _counting_stop(12)
    finished: list[int] = []
    outcomes = train_many(
        hps,
        X_train,
        y_train,
        2,
        X_test,
        y_test,
        packs=[[0], [1, 2]],
        on_finish=lambda outcome: finished.append(outcome.index),
        should_stop=should_stop,
    )
    assert polls[0] == 12
    assert [o.status for o in outcomes] == ["succeeded", "succeeded", "cancelled"]
    assert finished == [0, 1]
    _assert_same_run(outcomes[1], _alone(hps[1], moons))
    assert outcomes[2].result is None
    assert [point.epoch for point in outcomes[2].history] == [1, 2, 3, 4]


def test_cancellation_inside_a_minibatch_epoch(moons: Data) -> None:
    X_train, y_train, _X_test, _y_test = moons
    hps = [_hp(hidden_layers=[h], batch_size=5, epochs=10, seed=h) for h in (2, 3)]
    # 32 batches an epoch: polls before the epoch and before batches 16: 2 per epoch
    polls, should_stop = _counting_stop(4)
    outcomes = train_pack(hps, X_train, y_train, 2, should_stop=should_stop)
    assert polls[0] == 4
    assert [o.status for o in outcomes] == ["cancelled", "cancelled"]


# -- the packed network itself ---------------------------------------------------------------------


@pytest.mark.parametrize("diagonal", [True, False])
def test_packed_gradient_is_each_networks_gradient(moons: Data, diagonal: bool) -> None:
    """The pack's summed gradient, read back network by network, is engine.network's, with
    later layers block-diagonal (few rows a pass) or one block per network (many rows)."""
    X_train, y_train, _X_test, _y_test = moons
    sizes = [[2, 3, 4, 2], [2, 1, 2, 2], [2, 5, 3, 2]]
    rng = np.random.default_rng(0)
    packed = PackedNetwork(sizes, "tanh", np.float64, rows=64 if diagonal else 10**7)
    assert [later.diagonal for later in packed.later] == [diagonal, diagonal]
    initial = [network.init_params(s, "lecun", np.float64, rng) for s in sizes]
    for k, (weights, biases) in enumerate(initial):
        packed.set_network(k, weights, biases)
        got_W, got_b = packed.network_weights(k)
        assert all(np.array_equal(a, b) for a, b in zip(got_W, weights, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(got_b, biases, strict=True))
    X_aug = network.with_ones_column(X_train, np.float64)
    targets = (y_train == 1).astype(np.float64).reshape(1, 1, -1)
    workspace = PackedWorkspace(packed, 64)  # three blocks of rows
    failed: set[int] = set()
    grad, stats = workspace.summed_gradient(X_aug, targets, y_train, failed)
    assert stats is not None and not failed
    n = X_train.shape[0]
    for k, (weights, biases) in enumerate(initial):
        loss, dW, db = network.loss_and_gradients(weights, biases, "tanh", X_train, y_train)
        assert stats[0][k] / n == pytest.approx(loss, rel=1e-12)
        got_W, got_b = packed.network_weights(k, grad / n)
        for mine, theirs in zip(got_W + got_b, dW + db, strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-14)


def test_a_pack_through_an_input_map(moons: Data) -> None:
    features = ["identity", "square", "products"]
    hps = [_hp(hidden_layers=[width], input_features=features) for width in (2, 3, 5)]
    for outcome, hp in zip(_packed(hps, moons), hps, strict=True):
        assert outcome.result is not None and outcome.result.weights[0].shape[0] == 5
        _assert_same_run(outcome, _alone(hp, moons))


def test_train_many_groups_configurations_by_input_map(moons: Data) -> None:
    """Different maps give different input widths: each map's configurations share packs of
    their own, and every configuration still ends as it does alone."""
    X_train, y_train, X_test, y_test = moons
    maps = [["identity"], ["identity", "square"], ["sin", "cos"], ["identity", "square"]]
    hps = [
        _hp(hidden_layers=[width], input_features=features) for features in maps for width in (2, 4)
    ]
    shape = DataShape(n_train=160, n_test=40, n_features=2, n_classes=2)
    packs = partition(hps, shape, 1)[0]
    for pack in packs:
        assert len({tuple(hps[i].input_features) for i in pack}) == 1
    assert any(len(pack) > 1 for pack in packs)
    outcomes = train_many(hps, X_train, y_train, 2, X_test, y_test, packs=packs)
    for outcome, hp in zip(outcomes, hps, strict=True):
        _assert_same_run(outcome, _alone(hp, moons))


def test_a_pack_refuses_configurations_that_cannot_share_it(moons: Data) -> None:
    with pytest.raises(InvalidInput, match="cannot share a pack"):
        _packed([_hp(hidden_layers=[3]), _hp(hidden_layers=[3, 3])], moons)


# -- planning --------------------------------------------------------------------------------------


def test_pack_keys_separate_what_cannot_train_together() -> None:
    base = _hp(hidden_layers=[3])
    same = [
        _hp(hidden_layers=[50], learning_rate=0.1, l2=0.0, seed=3, epochs=7, record_every=2),
        _hp(hidden_layers=[3], lr_schedule="plateau", early_stopping=True, init="he"),
        _hp(hidden_layers=[3], batch_size=500),  # >= n_train: full batch
    ]
    different = [
        _hp(hidden_layers=[3, 3]),
        _hp(hidden_layers=[3], activation="relu"),
        _hp(hidden_layers=[3], optimizer="adam"),
        _hp(hidden_layers=[3], batch_size=32),
        _hp(hidden_layers=[3], dtype="float32"),
        _hp(hidden_layers=[3], input_features=["identity", "square"]),
        _hp(hidden_layers=[3], input_features=["square", "identity"]),
    ]
    assert all(pack_key(hp, 160) == pack_key(base, 160) for hp in same)
    assert all(pack_key(hp, 160) != pack_key(base, 160) for hp in different)
    assert pack_key(_hp(hidden_layers=[3], max_seconds=5.0), 160) is None


def test_partition_balances_shares_and_names_every_configuration_once() -> None:
    hps = [_hp(hidden_layers=sizes, epochs=20000) for sizes in TUTORIAL_SIZES]
    hps += [_hp(hidden_layers=[3], max_seconds=60.0), _hp(hidden_layers=[2, 2])]
    shape = DataShape(n_train=160, n_test=40, n_features=2, n_classes=2)
    shares = partition(hps, shape, 2)
    assert len(shares) == 2
    named = sorted(i for share in shares for pack in share for i in pack)
    assert named == list(range(len(hps)))
    for share in shares:
        for pack in share:
            assert len({pack_key(hps[i], 160) for i in pack}) == 1
            assert len(pack) == 1 or pack_key(hps[pack[0]], 160) is not None
    one = partition(hps, shape, 1)
    assert len(one) == 1
    assert any(len(pack) > 1 for pack in one[0])  # the small tanh networks share a pack
    assert partition(hps[:1], shape, 4) == [[[0]]]


def test_train_many_trains_every_configuration_once(moons: Data) -> None:
    X_train, y_train, X_test, y_test = moons
    hps = [_hp(hidden_layers=sizes, epochs=20) for sizes in ([2], [3], [3, 2])]
    recorded: list[tuple[int, int]] = []
    outcomes = train_many(
        hps,
        X_train,
        y_train,
        2,
        X_test,
        y_test,
        on_record=lambda index, point: recorded.append((index, point.epoch)),
    )
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert all(o.status == "succeeded" for o in outcomes)
    assert sorted(recorded) == [(i, e) for i in range(3) for e in (10, 20)]
    assert all(math.isfinite(o.seconds) and o.seconds >= 0 for o in outcomes)
    with pytest.raises(InvalidInput, match="every configuration"):
        train_many(hps, X_train, y_train, 2, packs=[[0, 1]])
