"""Regression in the engine: training with the identity output and half the squared error, its
metrics against scikit-learn's, divergence, early stopping, minibatches, and packed training
equal to each configuration trained alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from engine import network
from engine.errors import InvalidInput, TrainingDiverged
from engine.hyperparameters import Hyperparameters
from engine.packed import train_many, train_pack
from engine.training import HistoryPoint, Objective, TrainResult, train

REGRESSION = Objective("regression")
RELATIVE = 1e-12  # packed against alone, as tests/test_packed.py measures it

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def wave() -> Data:
    """y = sin(2 x1) + x2/2 (+ a second output x1 x2), 160 points to train on, 40 to test."""
    rng = np.random.default_rng(7)
    X = rng.uniform(-1.5, 1.5, (200, 2))
    y = np.column_stack([np.sin(2 * X[:, 0]) + X[:, 1] / 2, X[:, 0] * X[:, 1]])
    y += 0.05 * rng.standard_normal(y.shape)
    return X[:160], y[:160], X[160:], y[160:]


def _hp(**settings: Any) -> Hyperparameters:
    base: dict[str, Any] = {
        "hidden_layers": [8],
        "activation": "tanh",
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "epochs": 60,
        "record_every": 10,
    }
    return Hyperparameters(**{**base, **settings})


def _train(hp: Hyperparameters, data: Data, outputs: int = 2, **kwargs: Any) -> TrainResult:
    X_train, y_train, X_test, y_test = data
    return train(
        hp, X_train, y_train[:, :outputs], outputs, X_test, y_test[:, :outputs],
        objective=kwargs.pop("objective", REGRESSION), **kwargs,
    )  # fmt: skip


def test_a_network_learns_the_wave_and_its_metrics_are_scikit_learns(wave: Data) -> None:
    result = _train(_hp(optimizer="adam", learning_rate=0.02, epochs=400), wave)
    X_train, y_train, X_test, y_test = wave
    model = result.weights, result.biases
    predicted = network.predict_values(*model, "tanh", X_test)  # (40, 2)
    metrics = result.final_metrics()
    assert set(metrics) == {
        "train_loss", "test_loss", "train_mse", "test_mse", "train_mae", "test_mae",
        "train_r2", "test_r2",
    }  # fmt: skip
    assert metrics["test_mse"] == pytest.approx(mean_squared_error(y_test, predicted), rel=1e-10)
    assert metrics["test_mae"] == pytest.approx(mean_absolute_error(y_test, predicted), rel=1e-10)
    assert metrics["test_r2"] == pytest.approx(r2_score(y_test, predicted), rel=1e-10)
    train_predicted = network.predict_values(*model, "tanh", X_train)
    loss = 0.5 * ((train_predicted - y_train) ** 2).sum() / len(X_train)
    assert metrics["train_loss"] == pytest.approx(loss, rel=1e-10)
    assert metrics["test_r2"] > 0.9  # it learned (the noise alone leaves ~0.99)
    first, last = result.history[0], result.history[-1]
    assert last.train_loss < first.train_loss / 5
    assert first.train_accuracy is None and first.test_accuracy is None
    assert set(last.as_dict()) == {"epoch", "learning_rate", *metrics}


def test_target_scale_reports_errors_in_original_units(wave: Data) -> None:
    X_train, y_train, X_test, y_test = wave
    scale = np.array([3.0, 0.5])
    hp = _hp(epochs=20)
    plain = train(hp, X_train, y_train, 2, X_test, y_test, objective=REGRESSION)
    scaled = train(
        hp, X_train, y_train, 2, X_test, y_test,
        objective=Objective("regression", tuple(scale.tolist())),
    )  # fmt: skip
    predicted = network.predict_values(plain.weights, plain.biases, "tanh", X_test)
    errors = (predicted - y_test) * scale  # (40, 2) in the original units
    assert scaled.metrics["test_mse"] == pytest.approx(float(np.mean(errors**2)), rel=1e-10)
    assert scaled.metrics["test_mae"] == pytest.approx(float(np.mean(np.abs(errors))), rel=1e-10)
    assert scaled.metrics["test_r2"] == plain.metrics["test_r2"]  # r2 has no units
    assert scaled.metrics["train_loss"] == plain.metrics["train_loss"]  # nor does the loss change


def test_one_output_as_a_vector(wave: Data) -> None:
    X_train, y_train, _, _ = wave
    as_vector = train(_hp(epochs=10), X_train, y_train[:, 0], 1, objective=REGRESSION)
    as_column = train(_hp(epochs=10), X_train, y_train[:, :1], 1, objective=REGRESSION)
    assert as_vector.metrics == as_column.metrics
    assert as_vector.metrics["test_loss"] is None and as_vector.metrics["test_r2"] is None


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (np.full((160, 2), np.nan), "y_train row 0 is not finite"),
        (np.zeros((160, 3)), r"y_train must have shape \(160, 2\)"),
        (np.array([["a", "b"]] * 160), "must hold real numbers"),
    ],
)
def test_bad_targets_are_refused(wave: Data, targets: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        train(_hp(), wave[0], targets, 2, objective=REGRESSION)


def test_a_huge_learning_rate_diverges_with_the_regression_floor(wave: Data) -> None:
    with pytest.raises(TrainingDiverged) as caught:
        _train(_hp(learning_rate=50.0, epochs=200, record_every=1), wave)
    assert "lower the learning rate" in str(caught.value)


def test_early_stopping_restores_the_best_test_loss(wave: Data) -> None:
    hp = _hp(hidden_layers=[32], optimizer="adam", learning_rate=0.05, epochs=3000,
             early_stopping=True, patience=30)  # fmt: skip
    result = _train(hp, wave)
    assert result.stop_reason == "early_stopping"
    assert result.best_epoch is not None and result.best_epoch < result.epochs_run
    recorded = [p.test_loss for p in result.history if p.test_loss is not None]
    assert result.metrics["test_loss"] is not None
    assert result.metrics["test_loss"] <= min(recorded) + 1e-12


def test_minibatches_train_regression_deterministically(wave: Data) -> None:
    hp = _hp(batch_size=32, optimizer="momentum", learning_rate=0.05, epochs=30)
    first, second = _train(hp, wave), _train(hp, wave)
    assert first.metrics == second.metrics
    assert first.history[-1].train_loss < first.history[0].train_loss


def test_linear_regression_without_hidden_layers_finds_least_squares(wave: Data) -> None:
    X_train, y_train, _, _ = wave
    hp = _hp(hidden_layers=[], learning_rate=0.5, epochs=2000, record_every=2000)
    result = train(hp, X_train, y_train, 2, objective=REGRESSION)
    design = np.column_stack([X_train, np.ones(len(X_train))])
    solution = np.linalg.lstsq(design, y_train, rcond=None)[0]  # (3, 2)
    np.testing.assert_allclose(result.weights[0], solution[:2], rtol=1e-8)
    np.testing.assert_allclose(result.biases[0], solution[2], rtol=1e-8, atol=1e-10)


def test_history_points_leave_out_the_other_tasks_fields() -> None:
    classification = HistoryPoint(10, 0.5, 0.75, None, None, 0.1)
    assert set(classification.as_dict()) == {
        "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "learning_rate",
    }  # fmt: skip
    regression = HistoryPoint.of(10, {"loss": 1.0, "mse": 2.0, "mae": 1.0, "r2": 0.5}, None, 0.1)
    assert regression.as_dict() == {
        "epoch": 10, "learning_rate": 0.1, "train_loss": 1.0, "test_loss": None,
        "train_mse": 2.0, "test_mse": None, "train_mae": 1.0, "test_mae": None,
        "train_r2": 0.5, "test_r2": None,
    }  # fmt: skip


def _assert_same_run(packed: Any, alone: TrainResult, relative: float = RELATIVE) -> None:
    assert packed.status == "succeeded", packed.error
    result = packed.result
    assert result.epochs_run == alone.epochs_run and result.best_epoch == alone.best_epoch
    for key, value in alone.metrics.items():
        if value is None:
            assert result.metrics[key] is None
        else:
            assert result.metrics[key] == pytest.approx(value, rel=relative), key
    for mine, theirs in zip(result.history, alone.history, strict=True):
        assert mine.as_dict() == pytest.approx(theirs.as_dict(), rel=relative)
    for mine_W, theirs_W in zip(result.weights, alone.weights, strict=True):
        atol = min(relative * float(np.abs(theirs_W).max()), 1e-9)
        np.testing.assert_allclose(mine_W, theirs_W, rtol=relative, atol=atol)


@pytest.mark.parametrize(
    "shared",
    [
        {"optimizer": "sgd"},
        {"optimizer": "adam", "learning_rate": 0.01},
        {"optimizer": "momentum", "batch_size": 32},
        {"hidden_layers": [], "optimizer": "sgd"},
    ],
)
def test_a_regression_pack_equals_each_configuration_alone(
    wave: Data, shared: dict[str, Any]
) -> None:
    hidden = shared.pop("hidden_layers", None)
    variations = [{"hidden_layers": [w]} for w in (3, 8, 20)] if hidden is None else [{}] * 3
    hps = [
        _hp(**{"hidden_layers": hidden or [8], **shared, **v, "l2": l2, "seed": seed})
        for v, l2, seed in zip(variations, (0.0, 0.1, 1.0), (0, 1, 2), strict=True)
    ]
    X_train, y_train, X_test, y_test = wave
    packed = train_pack(hps, X_train, y_train, 2, X_test, y_test, objective=REGRESSION)
    for outcome, hp in zip(packed, hps, strict=True):
        _assert_same_run(outcome, _train(hp, wave))


def test_packed_regression_early_stopping_and_a_diverging_member(wave: Data) -> None:
    hps = [
        _hp(optimizer="adam", learning_rate=0.05, hidden_layers=[32], epochs=3000,
            early_stopping=True, patience=20),
        _hp(optimizer="adam", learning_rate=50.0, epochs=3000),
        _hp(optimizer="adam", learning_rate=0.01, epochs=400, hidden_layers=[4]),
    ]  # fmt: skip
    X_train, y_train, X_test, y_test = wave
    outcomes = train_many(
        hps, X_train, y_train, 2, X_test, y_test, packs=[[0, 1, 2]], objective=REGRESSION
    )
    assert outcomes[1].status == "failed"
    assert isinstance(outcomes[1].error, TrainingDiverged)
    with pytest.raises(TrainingDiverged):
        _train(hps[1], wave)
    # Hundreds of Adam steps let rounding grow past 1e-12 (measured: 6e-11 after 455 epochs).
    for k in (0, 2):
        _assert_same_run(outcomes[k], _train(hps[k], wave), relative=1e-8)
    assert outcomes[0].result is not None and outcomes[0].result.stop_reason == "early_stopping"
