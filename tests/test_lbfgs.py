"""L-BFGS: the line search's strong Wolfe conditions, the two-loop recursion against explicit
BFGS matrices, SciPy's L-BFGS-B as an oracle, and the training loop's lbfgs rules."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.optimize import minimize, rosen, rosen_der
from sklearn.datasets import make_moons

from engine import network
from engine.errors import InvalidInput, TrainingCancelled
from engine.hyperparameters import Hyperparameters
from engine.lbfgs import (
    CURVATURE,
    LBFGS,
    MAX_EVALUATIONS,
    SUFFICIENT_DECREASE,
    CurvatureMemory,
    strong_wolfe_search,
)
from engine.optimizers import make_optimizer
from engine.packed.planner import DataShape, estimate_seconds, pack_key
from engine.training import train

Array = np.ndarray


def _rosenbrock(x: Array) -> tuple[float, Array]:
    return float(rosen(x)), rosen_der(x)


def _rosenbrock_start(size: int) -> Array:
    """The classic start (-1.2, 1, -1.2, 1, ...)."""
    x = np.full(size, -1.2)
    x[1::2] = 1.0
    return x


@pytest.fixture(scope="module")
def moons() -> tuple[Array, Array]:
    X, y = make_moons(200, noise=0.2, random_state=0)
    return X, y


def _lbfgs_hp(**overrides: Any) -> Hyperparameters:
    settings: dict[str, Any] = {
        "hidden_layers": [3],
        "activation": "tanh",
        "optimizer": "lbfgs",
        "l2": 0.01,
        "epochs": 1000,
        "seed": 0,
    }
    settings.update(overrides)
    return Hyperparameters(**settings)


# -- the line search ---------------------------------------------------------------------------


def _assert_strong_wolfe(
    f0: float, g0: Array, direction: Array, step: float, f1: float, g1: Array
) -> None:
    slope0 = float(g0 @ direction)
    assert slope0 < 0
    assert f1 <= f0 + SUFFICIENT_DECREASE * step * slope0
    assert abs(float(g1 @ direction)) <= CURVATURE * abs(slope0)


@pytest.mark.parametrize("size", [2, 5, 10])
def test_every_accepted_step_satisfies_strong_wolfe_and_rosenbrock_reaches_its_minimum(
    size: int,
) -> None:
    x = _rosenbrock_start(size)
    solver = LBFGS(_rosenbrock, x, memory=5, tolerance=1e-8, initial_step=1e-3)
    solver.start()
    for _ in range(500):
        f0, g0, x0 = solver.loss, solver.gradient.copy(), x.copy()
        iteration = solver.iterate()
        if iteration.status == "converged":
            break
        assert iteration.status == "moved"
        step = iteration.step
        direction = (x - x0) / step
        f1, g1 = _rosenbrock(x)
        assert (f1, g1.tolist()) == (solver.loss, solver.gradient.tolist())  # x's own values
        _assert_strong_wolfe(f0, g0, direction, step, f1, g1)
    assert iteration.status == "converged"
    assert np.abs(solver.gradient).max() <= 1e-8
    np.testing.assert_allclose(x, np.ones(size), atol=1e-7)  # the known minimum


@pytest.mark.parametrize("initial_step", [1e-6, 1e-2, 1.0, 50.0])
def test_line_search_grows_or_shrinks_the_trial_step_to_a_wolfe_point(initial_step: float) -> None:
    """Along -g from Rosenbrock's start, from far too short and far too long trial steps."""
    x0 = _rosenbrock_start(2)
    f0, g0 = _rosenbrock(x0)
    direction = -g0
    x, gradient = np.empty_like(x0), np.empty_like(x0)
    result = strong_wolfe_search(_rosenbrock, x, x0, f0, g0, direction, initial_step, gradient)
    assert result.satisfied and result.evaluations <= MAX_EVALUATIONS
    np.testing.assert_array_equal(x, x0 + result.step * direction)
    f1, g1 = _rosenbrock(x)
    assert (f1, g1.tolist()) == (result.loss, gradient.tolist())
    _assert_strong_wolfe(f0, g0, direction, result.step, f1, g1)
    assert x0.tolist() == [-1.2, 1.0]  # the start is left unchanged


def test_line_search_on_a_quadratic_accepts_the_exact_minimiser() -> None:
    """f = 1/2 x'Ax along -g: the cubic through two points of a parabola is exact, so the
    zoom lands on the exact minimiser step g'g / g'Ag (where the slope is 0)."""
    A = np.array([[3.0, 1.0], [1.0, 2.0]])

    def quadratic(x: Array) -> tuple[float, Array]:
        return 0.5 * float(x @ A @ x), A @ x

    x0 = np.array([1.0, -2.0])
    f0, g0 = quadratic(x0)
    x, gradient = np.empty_like(x0), np.empty_like(x0)
    # trial 10: Armijo fails, the zoom interpolates between 0 and 10
    result = strong_wolfe_search(quadratic, x, x0, f0, g0, -g0, 10.0, gradient)
    exact = float(g0 @ g0) / float(g0 @ A @ g0)
    assert result.satisfied
    assert result.step == pytest.approx(exact, rel=1e-12)


def test_non_finite_losses_shrink_the_step() -> None:
    """Beyond |x| > 2 the function is undefined (inf, NaN gradient): the search backs off."""

    def fenced(x: Array) -> tuple[float, Array]:
        if np.abs(x).max() > 2:
            return math.inf, np.full_like(x, math.nan)
        return float(x @ x), 2 * x

    x0 = np.array([1.5, 0.0])
    f0, g0 = fenced(x0)
    x, gradient = np.empty_like(x0), np.empty_like(x0)
    result = strong_wolfe_search(fenced, x, x0, f0, g0, -g0, 100.0, gradient)
    assert result.satisfied and math.isfinite(result.loss)
    _assert_strong_wolfe(f0, g0, -g0, result.step, *fenced(x))


def test_an_iteration_that_lowers_nothing_stalls_where_it_was() -> None:
    """A gradient that points nowhere downhill (f constant, g not zero): quasi-Newton fails,
    steepest descent fails, the iteration reports stalled and leaves x unchanged."""
    calls: list[Array] = []

    def flat(x: Array) -> tuple[float, Array]:
        calls.append(x.copy())
        return 1.0, np.array([1.0, -1.0])

    x = np.array([0.5, 0.5])
    solver = LBFGS(flat, x, memory=3, tolerance=1e-5, initial_step=1.0)
    solver.start()
    iteration = solver.iterate()
    assert (iteration.status, iteration.step) == ("stalled", 0.0)
    assert x.tolist() == [0.5, 0.5]
    assert calls[-1].tolist() == [0.5, 0.5]  # the last evaluation is at the returned x
    # one search along -g (no pairs yet): its MAX_EVALUATIONS trials, then x0 once more
    assert iteration.evaluations == MAX_EVALUATIONS + 1 == len(calls) - 1


# -- the two-loop recursion --------------------------------------------------------------------


def _explicit_bfgs_inverse(pairs: list[tuple[Array, Array]], size: int) -> Array:
    """H from H0 = gamma I (gamma = s'y / y'y of the newest pair) by the BFGS update
    H <- (I - rho s y') H (I - rho y s') + rho s s' for each pair, oldest first (N&W 6.17)."""
    s_new, y_new = pairs[-1]
    H = float(s_new @ y_new) / float(y_new @ y_new) * np.eye(size)
    identity = np.eye(size)
    for s, y in pairs:
        rho = 1.0 / float(s @ y)
        H = (identity - rho * np.outer(s, y)) @ H @ (identity - rho * np.outer(y, s))
        H += rho * np.outer(s, s)
    return H


@pytest.mark.parametrize(("memory", "n_pairs"), [(1, 1), (3, 2), (3, 3), (3, 7), (5, 5)])
def test_two_loop_recursion_equals_the_explicit_bfgs_matrix(memory: int, n_pairs: int) -> None:
    """Pairs of a convex quadratic (y = A s, A SPD); with more pairs than memory only the
    newest `memory` count, as the explicit matrix built from those alone."""
    rng = np.random.default_rng(7)
    size = 6
    root = rng.standard_normal((size, size))
    A = root @ root.T + size * np.eye(size)
    pairs = [(s, A @ s) for s in rng.standard_normal((n_pairs, size))]
    kept = CurvatureMemory(memory, size, np.dtype(np.float64))
    for s, y in pairs:
        assert kept.add(s, y)
    gradient = rng.standard_normal(size)
    product = kept.apply_inverse_hessian(gradient, np.empty(size))
    expected = _explicit_bfgs_inverse(pairs[-memory:], size) @ gradient
    np.testing.assert_allclose(product, expected, rtol=1e-12, atol=1e-14)


def test_a_pair_without_positive_curvature_is_skipped() -> None:
    kept = CurvatureMemory(3, 2, np.dtype(np.float64))
    assert kept.add(np.array([1.0, 0.0]), np.array([2.0, 0.0]))
    assert not kept.add(np.array([1.0, 0.0]), np.array([-1.0, 0.0]))  # s'y < 0
    assert not kept.add(np.array([1.0, 0.0]), np.array([0.0, 1.0]))  # s'y = 0
    assert (kept.count, kept.skipped, kept.gamma) == (1, 2, 0.5)
    gradient = np.array([4.0, 6.0])
    # one pair s = e1, y = 2 e1: H = diag(1/2, gamma = 1/2)
    assert kept.apply_inverse_hessian(gradient, np.empty(2)).tolist() == [2.0, 3.0]


# -- SciPy's L-BFGS-B as the oracle ------------------------------------------------------------


def _flat(weights: list[Array], biases: list[Array]) -> Array:
    """Weights and biases as one vector, layer by layer (W then b)."""
    return np.concatenate(
        [part.ravel() for W, b in zip(weights, biases, strict=True) for part in (W, b)]
    )


def _scipy_minimum(
    X: Array, y: Array, layer_sizes: list[int], hp: Hyperparameters
) -> tuple[float, Array]:
    """SciPy's L-BFGS-B on the engine's loss from the initial weights `train` draws (the
    functional front end, gradient-checked in test_gradients): (loss, flat parameters)."""
    weights, biases = network.init_params(
        layer_sizes, hp.init, np.float64, np.random.default_rng(hp.seed)
    )
    shapes = [(W.shape, b.shape) for W, b in zip(weights, biases, strict=True)]

    def unflatten(flat: Array) -> tuple[list[Array], list[Array]]:
        Ws, bs, offset = [], [], 0
        for W_shape, b_shape in shapes:
            size = W_shape[0] * W_shape[1]
            Ws.append(flat[offset : offset + size].reshape(W_shape))
            offset += size
            bs.append(flat[offset : offset + b_shape[0]])
            offset += b_shape[0]
        return Ws, bs

    def objective(flat: Array) -> tuple[float, Array]:
        Ws, bs = unflatten(flat)
        value, dWs, dbs = network.loss_and_gradients(Ws, bs, hp.activation, X, y, l2=hp.l2)
        return value, _flat(dWs, dbs)

    result = minimize(
        objective,
        _flat(weights, biases),
        jac=True,
        method="L-BFGS-B",
        options={"maxcor": hp.lbfgs_memory, "gtol": hp.tolerance, "ftol": 0.0, "maxiter": 10_000},
    )
    return float(result.fun), result.x


def test_logistic_regression_reaches_scipys_minimum(moons: tuple[Array, Array]) -> None:
    """Convex (weights under l2; the biases' free direction gets zero gradient from both): the
    same loss and the same weights."""
    X, y = moons
    hp = _lbfgs_hp(hidden_layers=[], l2=1.0, tolerance=1e-9)
    result = train(hp, X, y, 2)
    scipy_loss, scipy_params = _scipy_minimum(X, y, [2, 2], hp)
    assert result.stop_reason == "converged"
    assert result.final_metrics()["train_loss"] == pytest.approx(scipy_loss, rel=1e-12)
    np.testing.assert_allclose(_flat(result.weights, result.biases), scipy_params, atol=1e-6)


def test_tanh_network_reaches_scipys_loss(moons: tuple[Array, Array]) -> None:
    """[3] tanh on moons, non-convex: from the same start both reach the same loss."""
    X, y = moons
    hp = _lbfgs_hp(tolerance=1e-8)
    result = train(hp, X, y, 2)
    scipy_loss, _ = _scipy_minimum(X, y, [2, 3, 2], hp)
    assert result.stop_reason == "converged"
    assert result.final_metrics()["train_loss"] == pytest.approx(scipy_loss, rel=1e-9)


# -- the training loop -------------------------------------------------------------------------


def test_tolerance_stops_training_with_the_gradient_within_it(moons: tuple[Array, Array]) -> None:
    X, y = moons
    loose = train(_lbfgs_hp(tolerance=1e-3), X, y, 2)
    tight = train(_lbfgs_hp(tolerance=1e-7), X, y, 2)
    for result, tolerance in ((loose, 1e-3), (tight, 1e-7)):
        assert result.stop_reason == "converged"
        assert result.epochs_run < 1000
        _, dWs, dbs = network.loss_and_gradients(
            result.weights, result.biases, "tanh", X, y, l2=0.01
        )
        assert np.abs(_flat(dWs, dbs)).max() <= tolerance
    assert loose.epochs_run < tight.epochs_run
    # a budget of epochs ends first: completed, one iteration per epoch
    short = train(_lbfgs_hp(epochs=5, record_every=1), X, y, 2)
    assert (short.stop_reason, short.epochs_run) == ("completed", 5)
    assert [point.epoch for point in short.history] == [1, 2, 3, 4, 5]


def test_tolerance_zero_runs_until_no_step_lowers_the_loss(moons: tuple[Array, Array]) -> None:
    X, y = moons
    result = train(_lbfgs_hp(tolerance=0.0, epochs=5000), X, y, 2)
    assert result.stop_reason == "stalled"
    assert result.epochs_run < 5000
    assert result.history[-1].epoch == result.epochs_run
    assert result.history[-1].learning_rate == 0.0  # the stalled iteration took no step


def test_history_is_one_point_per_iteration_with_the_accepted_step(
    moons: tuple[Array, Array],
) -> None:
    X, y = moons
    result = train(_lbfgs_hp(record_every=3, tolerance=1e-4), X, y, 2, X[:40], y[:40])
    epochs = [point.epoch for point in result.history]
    assert epochs == [*range(3, result.epochs_run, 3), result.epochs_run]
    losses = [point.train_loss for point in result.history]
    assert losses == sorted(losses, reverse=True)  # every accepted step lowers the loss
    for point in result.history:
        assert point.learning_rate > 0 and point.test_loss is not None
    last = result.history[-1]
    final = result.final_metrics()
    assert (last.train_loss, last.train_accuracy) == (final["train_loss"], final["train_accuracy"])
    value = network.loss(result.weights, result.biases, "tanh", X, y, l2=0.01)
    assert final["train_loss"] == pytest.approx(value, rel=1e-13)


def test_the_first_trial_step_is_the_gradient_descent_step(moons: tuple[Array, Array]) -> None:
    """When the gradient-descent step of learning_rate already satisfies the Wolfe conditions
    (the tutorial's 2.0 here), iteration 1 is exactly one sgd epoch of that rate; a step too
    short for the curvature condition is doubled until it is long enough (0.01 -> 0.64)."""
    X, y = moons
    lbfgs = train(_lbfgs_hp(learning_rate=2.0, epochs=1, record_every=1), X, y, 2)
    sgd = train(_lbfgs_hp(optimizer="sgd", learning_rate=2.0, epochs=1), X, y, 2)
    assert lbfgs.history[0].learning_rate == 2.0
    for lbfgs_W, sgd_W in zip(lbfgs.weights, sgd.weights, strict=True):
        np.testing.assert_allclose(lbfgs_W, sgd_W, rtol=1e-14, atol=1e-15)
    short = train(_lbfgs_hp(learning_rate=0.01, epochs=1, record_every=1), X, y, 2)
    assert short.history[0].learning_rate == 0.01 * 2**6


def test_same_seed_same_run_other_seed_other_run(moons: tuple[Array, Array]) -> None:
    X, y = moons
    first, again, other = (train(_lbfgs_hp(seed=seed), X, y, 2) for seed in (3, 3, 4))
    assert [p.as_dict() for p in first.history] == [p.as_dict() for p in again.history]
    for W, W_again in zip(first.weights, again.weights, strict=True):
        assert W.tobytes() == W_again.tobytes()
    assert first.weights[0].tobytes() != other.weights[0].tobytes()


def test_float32_trains_in_float32(moons: tuple[Array, Array]) -> None:
    X, y = moons
    result = train(_lbfgs_hp(dtype="float32", tolerance=1e-4), X, y, 2)
    assert result.weights[0].dtype == np.float32
    assert result.stop_reason in ("converged", "stalled")
    assert result.final_metrics()["train_loss"] < 0.08


def test_time_budget_early_stopping_and_cancellation_apply(moons: tuple[Array, Array]) -> None:
    X, y = moons
    ticks = itertools.count()  # the fake clock advances one second per reading
    timed = train(
        _lbfgs_hp(max_seconds=3.5, tolerance=0.0), X, y, 2, clock=lambda: float(next(ticks))
    )
    assert (timed.stop_reason, timed.epochs_run) == ("time_budget", 4)
    # 50 training points: the test loss of the other 150 turns up after a dozen iterations
    hp = _lbfgs_hp(early_stopping=True, patience=5, tolerance=0.0)
    stopped = train(hp, X[:50], y[:50], 2, X[50:], y[50:])
    assert stopped.stop_reason == "early_stopping"
    assert stopped.best_epoch == stopped.epochs_run - 5
    polls = itertools.count()
    with pytest.raises(TrainingCancelled) as cancelled:
        train(_lbfgs_hp(), X, y, 2, should_stop=lambda: next(polls) >= 3)
    assert cancelled.value.epoch == 3  # polled before every iteration: 3 completed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 32}, "optimizer lbfgs trains full batch: batch_size must be null, got 32"),
        ({"lr_schedule": "step"}, "lr_schedule must be constant, got step"),
        ({"l1": 0.1}, "optimizer lbfgs needs a differentiable loss: l1 must be 0, got 0.1"),
        ({"lbfgs_memory": 0}, "greater than or equal to 1"),
        ({"tolerance": -1.0}, "greater than or equal to 0"),
    ],
)
def test_options_that_do_not_fit_lbfgs_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _lbfgs_hp(**overrides)
    if "batch_size" in overrides:  # the other optimizers take it
        assert _lbfgs_hp(optimizer="adam", **overrides).batch_size == 32


def test_lbfgs_trains_alone_in_sweeps() -> None:
    assert pack_key(_lbfgs_hp(), 200) is None
    # the cost model: an iteration costs more than an sgd epoch, more with more pairs
    shape = DataShape(n_train=200, n_test=0, n_features=2, n_classes=2)
    sgd_seconds = estimate_seconds([_lbfgs_hp(optimizer="sgd")], shape)
    lbfgs_seconds = [estimate_seconds([_lbfgs_hp(lbfgs_memory=m)], shape) for m in (5, 10)]
    assert sgd_seconds < lbfgs_seconds[0] < lbfgs_seconds[1]
    assert pack_key(_lbfgs_hp(optimizer="sgd"), 200) is not None
    with pytest.raises(InvalidInput, match="optimizer lbfgs has no per-step update rule"):
        make_optimizer(_lbfgs_hp(), 10, np.float64)
