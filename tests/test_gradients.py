"""Backpropagation against central differences of the loss, in float64.

Kinks: relu/leaky_relu at z = 0 and l1's |w| at w = 0 make finite differences wrong if a step
crosses them. The data below are drawn until every hidden pre-activation satisfies
|z| >= KINK_MARGIN and every weight |w| >= KINK_MARGIN; a step of H moves a pre-activation by at
most H * (1 + max|input|) (< 1e-4 here), so no kink is crossed and the smooth 1e-6 bound holds for
every activation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from engine import network
from engine.activations import ACTIVATIONS, DERIVATIVES, LEAKY_SLOPE
from engine.hyperparameters import Activation, Task

ACTIVATION_NAMES: list[Activation] = ["tanh", "relu", "leaky_relu", "sigmoid", "identity"]
H = 1e-6
KINK_MARGIN = 1e-2
N_FEATURES = 3
N_EXAMPLES = 6
# The activations as textbooks write them: the oracle of forward passes here.
TEXTBOOK: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "identity": lambda z: z,
}


def _hidden_preactivations(
    weights: list[np.ndarray], biases: list[np.ndarray], X: np.ndarray, activation: Activation
) -> list[np.ndarray]:
    """Pre-activations of the hidden layers, computed independently of engine.network."""
    result = []
    A = X
    for W, b in zip(weights[:-1], biases[:-1], strict=True):
        Z = A @ W + b
        result.append(Z)
        A = TEXTBOOK[activation](Z)
    return result


def _problem(
    hidden: list[int], n_classes: int, activation: Activation, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Weights, biases, X, y with no kink within reach of a finite-difference step."""
    rng = np.random.default_rng(seed)
    sizes = [N_FEATURES, *hidden, n_classes]
    for _ in range(1000):
        weights, _ = network.init_params(sizes, "xavier", np.float64, rng)
        weights = [np.sign(W) * (np.abs(W) + 0.1) for W in weights]  # |w| >= 0.1 for l1
        biases = [np.asarray(rng.normal(0, 0.5, W.shape[1])) for W in weights]
        X = rng.normal(0, 1, (N_EXAMPLES, N_FEATURES))
        y = rng.integers(0, n_classes, N_EXAMPLES)
        pre = _hidden_preactivations(weights, biases, X, activation)
        if all(np.abs(Z).min() >= KINK_MARGIN for Z in pre):
            return weights, biases, X, y
    raise AssertionError("no kink-free problem found")


def _numerical_gradients(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    activation: Activation,
    X: np.ndarray,
    y: np.ndarray,
    l1: float,
    l2: float,
    task: Task = "classification",
) -> list[np.ndarray]:
    """Central differences of network.loss for every weight and bias, in layer order."""
    result = []
    for array in [*weights, *biases]:
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + H
            plus = network.loss(weights, biases, activation, X, y, l1=l1, l2=l2, task=task)
            array[index] = saved - H
            minus = network.loss(weights, biases, activation, X, y, l1=l1, l2=l2, task=task)
            array[index] = saved
            grad[index] = (plus - minus) / (2 * H)
        result.append(grad)
    return result


def _max_relative_error(analytic: list[np.ndarray], numeric: list[np.ndarray]) -> float:
    """max |analytic - numeric| over all entries, relative to the largest gradient entry."""
    a = np.concatenate([g.ravel() for g in analytic])
    n = np.concatenate([g.ravel() for g in numeric])
    return float(np.abs(a - n).max() / np.abs(n).max())


@pytest.mark.parametrize(
    ("activation", "hidden", "n_classes"),
    list(itertools.product(ACTIVATION_NAMES, [[], [4], [5, 4, 3]], [2, 5])),
)
def test_backprop_matches_central_differences(
    activation: Activation, hidden: list[int], n_classes: int
) -> None:
    weights, biases, X, y = _problem(hidden, n_classes, activation, seed=len(hidden) + n_classes)
    l1, l2 = 0.3, 0.7
    value, dW, db = network.loss_and_gradients(weights, biases, activation, X, y, l1=l1, l2=l2)
    numeric = _numerical_gradients(weights, biases, activation, X, y, l1, l2)
    assert value == pytest.approx(network.loss(weights, biases, activation, X, y, l1=l1, l2=l2))
    assert _max_relative_error([*dW, *db], numeric) <= 1e-6


@pytest.mark.parametrize(
    ("activation", "hidden", "n_outputs"),
    list(itertools.product(ACTIVATION_NAMES, [[], [4], [5, 4, 3]], [1, 3])),
)
def test_regression_backprop_matches_central_differences(
    activation: Activation, hidden: list[int], n_outputs: int
) -> None:
    weights, biases, X, _ = _problem(hidden, n_outputs, activation, seed=len(hidden) + n_outputs)
    y = np.random.default_rng(n_outputs).normal(0, 2, (N_EXAMPLES, n_outputs))
    l1, l2 = 0.3, 0.7
    value, dW, db = network.loss_and_gradients(
        weights, biases, activation, X, y, l1=l1, l2=l2, task="regression"
    )
    numeric = _numerical_gradients(weights, biases, activation, X, y, l1, l2, "regression")
    assert _max_relative_error([*dW, *db], numeric) <= 1e-6
    # The value by hand: half the squared error summed over outputs, averaged over examples.
    A = X
    for W, b in zip(weights[:-1], biases[:-1], strict=True):
        A = TEXTBOOK[activation](A @ W + b)
    outputs = A @ weights[-1] + biases[-1]  # (n, K)
    n = X.shape[0]
    penalty = sum(l2 / (2 * n) * (W**2).sum() + l1 / n * np.abs(W).sum() for W in weights)
    expected = 0.5 * ((outputs - y) ** 2).sum() / n + penalty
    assert value == pytest.approx(expected, rel=1e-12)
    predicted = network.predict_values(weights, biases, activation, X)
    np.testing.assert_allclose(predicted, outputs, rtol=1e-12, atol=1e-12)


def test_penalties_apply_to_weights_only() -> None:
    weights, biases, X, y = _problem([4], 3, "tanh", seed=7)
    _, dW_plain, db_plain = network.loss_and_gradients(weights, biases, "tanh", X, y)
    _, dW_reg, db_reg = network.loss_and_gradients(weights, biases, "tanh", X, y, l1=0.5, l2=2.0)
    n = X.shape[0]
    for W, plain, reg in zip(weights, dW_plain, dW_reg, strict=True):
        np.testing.assert_allclose(reg - plain, 2.0 / n * W + 0.5 / n * np.sign(W), atol=1e-14)
    for plain, reg in zip(db_plain, db_reg, strict=True):
        np.testing.assert_array_equal(plain, reg)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_blocked_and_threaded_gradient_equals_single_block(
    n_classes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    net = network.Network([2, 8, n_classes], "tanh", np.float64)
    weights, biases = network.init_params([2, 8, n_classes], "lecun", np.float64, rng)
    net.set_params(weights, biases)
    X_aug = network.with_ones_column(rng.normal(size=(1000, 2)), np.float64)
    y = rng.integers(0, n_classes, 1000)
    targets = network.targets_for(y, n_classes, np.float64)
    with network.Passes(net, 1000) as passes:
        whole = passes.summed_gradient(X_aug, targets)[0].copy()
        whole_ce = passes.cross_entropy_and_correct(X_aug, y)
    # Blocks of 64 rows (the last one short), then the same split over two threads.
    monkeypatch.setattr(network, "BLOCK_BYTES", 64 * 8 * 8)
    with network.Passes(net, 1000) as passes:
        assert passes.workspace.rows == 64
        blocked = passes.summed_gradient(X_aug, targets)[0].copy()
        blocked_ce = passes.cross_entropy_and_correct(X_aug, y)
        monkeypatch.setattr(network, "PARALLEL_MIN_ELEMENTS", 1000)
        threaded = passes.summed_gradient(X_aug, targets)[0].copy()
        threaded_ce = passes.cross_entropy_and_correct(X_aug, y)
        assert passes._executor is not None  # the second thread really ran
    for grad in (blocked, threaded):
        np.testing.assert_allclose(grad, whole, rtol=1e-12, atol=1e-13)
    for ce, correct in (blocked_ce, threaded_ce):
        assert ce == pytest.approx(whole_ce[0], rel=1e-12)
        assert correct == whole_ce[1]


def test_blocked_and_threaded_regression_passes_equal_single_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(4)
    net = network.Network([2, 8, 2], "tanh", np.float64, "regression")
    weights, biases = network.init_params([2, 8, 2], "lecun", np.float64, rng)
    net.set_params(weights, biases)
    X = rng.normal(size=(1000, 2))
    X_aug = network.with_ones_column(X, np.float64)
    targets = network.targets_for(rng.normal(size=(1000, 2)), 2, np.float64, "regression")
    with network.Passes(net, 1000) as passes:
        whole, whole_stats = passes.summed_gradient(X_aug, targets, targets)
        whole = whole.copy()
    errors = network.predict_values(weights, biases, "tanh", X) - targets  # (1000, 2)
    assert whole_stats is not None
    np.testing.assert_allclose(whole_stats[0], (errors**2).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(whole_stats[1], np.abs(errors).sum(axis=0), rtol=1e-12)
    monkeypatch.setattr(network, "BLOCK_BYTES", 64 * 8 * 8)
    monkeypatch.setattr(network, "PARALLEL_MIN_ELEMENTS", 1000)
    with network.Passes(net, 1000) as passes:
        threaded, threaded_stats = passes.summed_gradient(X_aug, targets, targets)
        alone = passes.cross_entropy_and_correct(X_aug, targets)
        assert passes._executor is not None
    np.testing.assert_allclose(threaded, whole, rtol=1e-12, atol=1e-13)
    assert threaded_stats is not None
    for stats in (threaded_stats, alone):
        np.testing.assert_allclose(stats[0], whole_stats[0], rtol=1e-12)
        np.testing.assert_allclose(stats[1], whole_stats[1], rtol=1e-12)


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_gradient_descent_steps_equal_scikit_learns_mlp_regressor(n_outputs: int) -> None:
    """Oracle: MLPRegressor (sgd, no momentum, full batch, constant rate) from the same weights
    takes the same steps as plain gradient descent on our loss; alpha is our l2."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 3))
    y = np.sin(X[:, :n_outputs]) + 0.1 * rng.normal(size=(40, n_outputs))  # (40, K)
    sizes = [3, 5, n_outputs]
    weights, biases = network.init_params(sizes, "xavier", np.float64, rng)
    biases = [rng.normal(0, 0.1, b.shape) for b in biases]
    rate, alpha, steps = 0.05, 0.3, 4
    oracle = MLPRegressor(
        hidden_layer_sizes=(5,), activation="tanh", solver="sgd", alpha=alpha,
        batch_size=40, learning_rate_init=rate, momentum=0.0, max_iter=1, shuffle=False,
        tol=0.0, n_iter_no_change=10**6, random_state=0,
    )  # fmt: skip
    oracle.partial_fit(X, y if n_outputs > 1 else y[:, 0])  # builds the layers
    oracle.coefs_ = [W.copy() for W in weights]
    oracle.intercepts_ = [b.copy() for b in biases]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(steps):
            oracle.partial_fit(X, y if n_outputs > 1 else y[:, 0])
    for _ in range(steps):
        value, dW, db = network.loss_and_gradients(
            weights, biases, "tanh", X, y, l2=alpha, task="regression"
        )
        weights = [W - rate * g for W, g in zip(weights, dW, strict=True)]
        biases = [b - rate * g for b, g in zip(biases, db, strict=True)]
    for ours, theirs in zip(
        [*weights, *biases], [*oracle.coefs_, *oracle.intercepts_], strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    if n_outputs == 1:  # the loss both report for one output (of the weights before the step)
        assert oracle.loss_ == pytest.approx(value, rel=1e-12)


# The textbook derivatives through the output A = f(Z): the oracle of the in-place kernels.
TEXTBOOK_DERIVATIVES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": lambda A: 1.0 - A * A,
    "relu": lambda A: (A > 0).astype(A.dtype),
    "leaky_relu": lambda A: np.where(A > 0, 1.0, LEAKY_SLOPE).astype(A.dtype),
    "sigmoid": lambda A: A * (1.0 - A),
    "identity": np.ones_like,
}


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_derivative_kernels_agree_with_the_textbook_derivatives(activation: Activation) -> None:
    rng = np.random.default_rng(0)
    A = ACTIVATIONS[activation](rng.normal(size=(7, 5)))
    delta = rng.normal(size=(7, 5))
    expected = delta * TEXTBOOK_DERIVATIVES[activation](A)
    DERIVATIVES[activation](A, delta, np.empty_like(delta))
    np.testing.assert_allclose(delta, expected, rtol=1e-15, atol=0)


def test_float32_gradients_stay_float32_and_agree_with_float64() -> None:
    weights, biases, X, y = _problem([5, 4], 3, "sigmoid", seed=11)
    _, dW64, db64 = network.loss_and_gradients(weights, biases, "sigmoid", X, y, l2=0.1)
    w32 = [W.astype(np.float32) for W in weights]
    b32 = [b.astype(np.float32) for b in biases]
    _, dW32, db32 = network.loss_and_gradients(w32, b32, "sigmoid", X, y, l2=0.1)
    for g32, g64 in zip([*dW32, *db32], [*dW64, *db64], strict=True):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-6)


def test_loss_is_finite_for_huge_logits() -> None:
    # Logits of +-1e4: exp would overflow; log-sum-exp gives the exact margin as the loss.
    weights = [np.array([[1e4, -1e4]])]
    biases = [np.zeros(2)]
    X = np.array([[1.0], [1.0]])
    y = np.array([0, 1])  # first point right by 2e4, second wrong by 2e4
    value, dW, db = network.loss_and_gradients(weights, biases, "tanh", X, y)
    assert value == pytest.approx(1e4)  # (0 + 2e4) / 2
    assert all(np.isfinite(g).all() for g in [*dW, *db])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_is_within_4_ulp_of_math_tanh_and_saturates_exactly(dtype: type[np.floating]) -> None:
    # math.tanh (float64, within 1 ulp) per element is the oracle; the kernel is NumPy's
    # vectorised tanh (measured: <= 1.4 ulp in float32, <= 3 ulp in float64 of math.tanh).
    big = float(np.finfo(dtype).max)
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            [-big, -1e4, -400.0, -60.0, -30.0, -1.0, -1e-30, 0.0],
            [1e-30, 0.5, 30.0, 45.0, 400.0, 1e4, big],
            np.linspace(-22.0, 22.0, 175),
            rng.normal(0, 8, 35),
            rng.normal(0, 1e-3, 35),  # near 0, where 2/(1 + e^(-2z)) - 1 cancels
        ]
    ).astype(dtype)
    got = ACTIVATIONS["tanh"](values.copy())
    assert got.dtype == dtype
    expected = np.array([math.tanh(float(z)) for z in values])
    ulps = np.spacing(np.abs(expected).astype(dtype)).astype(np.float64)
    assert (np.abs(got.astype(np.float64) - expected) <= 4 * ulps).all()
    saturated = np.abs(values) >= 30.0
    np.testing.assert_array_equal(got[saturated], np.sign(values[saturated]))
