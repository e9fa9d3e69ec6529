"""Optimizer steps and learning-rate schedules against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.hyperparameters import Hyperparameters
from engine.optimizers import SGD, Adam, Momentum, Nesterov, Optimizer, Penalty, make_optimizer
from engine.schedules import make_schedule

START = [1.0, -2.0]
GRADIENTS = [[0.5, -1.0], [0.2, 0.4], [-0.1, 0.3]]
LR = 0.1


def _run(optimizer: Optimizer, dtype: type = np.float64) -> list[list[float]]:
    params: np.ndarray = np.array(START, dtype=dtype)
    trajectory = []
    for g in GRADIENTS:
        grads: np.ndarray = np.array(g, dtype=dtype)
        optimizer.update(params, grads, LR)
        np.testing.assert_array_equal(grads, np.array(g, dtype=dtype))  # not consumed
        assert params.dtype == dtype
        trajectory.append(params.tolist())
    return trajectory


def test_sgd() -> None:
    # w -= 0.1 g: 1 - 0.05, -2 + 0.1; then -0.02, -0.04; then +0.01, -0.03.
    expected = [[0.95, -1.9], [0.93, -1.94], [0.94, -1.97]]
    np.testing.assert_allclose(_run(SGD(2, np.float64)), expected, rtol=1e-15)


def test_momentum() -> None:
    # v1 = (-0.05, 0.1); v2 = 0.9 v1 - 0.1 g2 = (-0.065, 0.05); v3 = (-0.0485, 0.015); w += v.
    expected = [[0.95, -1.9], [0.885, -1.85], [0.8365, -1.835]]
    np.testing.assert_allclose(_run(Momentum(2, np.float64, 0.9)), expected, rtol=1e-14)


def test_nesterov() -> None:
    # Same v as momentum; w += 0.9 v - 0.1 g: (-0.095, 0.19), (-0.0785, 0.005), (-0.03365, -0.0165).
    expected = [[0.905, -1.81], [0.8265, -1.805], [0.79285, -1.8215]]
    np.testing.assert_allclose(_run(Nesterov(2, np.float64, 0.9)), expected, rtol=1e-14)


def test_adam() -> None:
    # t=1: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps): 0.1 * sign(g) * (1 - 2e-8).
    # t=2, first entry: m = 0.9*0.05 + 0.1*0.2 = 0.065, m_hat = 0.065/0.19;
    #   v = 0.999*0.00025 + 0.001*0.04 = 0.00028975, v_hat = v/(1 - 0.999^2) = v/0.001999.
    m_hat = 0.065 / 0.19
    v_hat = 0.00028975 / 0.001999
    second_first_entry = 0.900000002 - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    expected = [
        [0.900000002, -1.900000001],
        [second_first_entry, -1.865439416662626],
        [0.7535255578069425, -1.8568614218383597],
    ]
    assert second_first_entry == pytest.approx(0.8101424839029282, rel=1e-12)
    np.testing.assert_allclose(_run(Adam(2, np.float64, 0.9, 0.999, 1e-8)), expected, rtol=1e-9)


def test_adam_in_float32_keeps_dtype() -> None:
    trajectory = _run(Adam(2, np.float32, 0.9, 0.999, 1e-8), np.float32)
    np.testing.assert_allclose(trajectory[0], [0.9, -1.9], rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "kind"), [("sgd", SGD), ("momentum", Momentum), ("nesterov", Nesterov), ("adam", Adam)]
)
def test_make_optimizer_dispatches_by_name(name: str, kind: type) -> None:
    hp = Hyperparameters(optimizer=name)
    assert type(make_optimizer(hp, 3, np.float64)) is kind


def _rates(schedule_name: str, epochs: int) -> list[float]:
    hp = Hyperparameters(
        learning_rate=1.0, lr_schedule=schedule_name, lr_decay=0.5, lr_decay_epochs=2
    )
    schedule = make_schedule(hp)
    return [schedule.rate(e) for e in range(epochs)]


def test_constant_schedule() -> None:
    assert _rates("constant", 4) == [1.0, 1.0, 1.0, 1.0]


def test_step_schedule() -> None:
    # 0.5 ** floor(e / 2)
    assert _rates("step", 5) == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_exponential_schedule() -> None:
    # 0.5 ** (e / 2): 1, 1/sqrt(2), 1/2, 1/(2 sqrt(2))
    np.testing.assert_allclose(
        _rates("exponential", 4), [1.0, 0.70710678118654757, 0.5, 0.35355339059327379]
    )


def test_inverse_time_schedule() -> None:
    # k = (1/0.5 - 1) / 2 = 0.5: 1/(1 + 0.5 e)
    np.testing.assert_allclose(_rates("inverse_time", 4), [1.0, 2 / 3, 0.5, 0.4])


def test_plateau_schedule_decays_after_decay_epochs_without_improvement() -> None:
    hp = Hyperparameters(learning_rate=1.0, lr_schedule="plateau", lr_decay=0.5, lr_decay_epochs=2)
    schedule = make_schedule(hp)
    assert schedule.needs_monitor
    rates = []
    # best 1.0; 0.9 improves; 0.95, 0.92 do not (wait 1, 2 -> decay, wait 0); 0.99 waits 1;
    # 0.8 improves; 0.8 (equal is not better) waits 1; 0.85 waits 2 -> decay again.
    for monitored in [1.0, 0.9, 0.95, 0.92, 0.99, 0.8, 0.8, 0.85]:
        schedule.observe(monitored)
        rates.append(schedule.rate(0))
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize(("l1", "l2"), [(0.0, 0.0), (0.0, 0.3), (0.2, 0.3)])
def test_step_from_summed_gradient_equals_update_with_the_mean_gradient(
    name: str, l1: float, l2: float
) -> None:
    """step() folds 1/n and the penalties in; update() takes the finished mean gradient."""
    mask = np.array([1.0, 1.0, 0.0])  # the last entry is a bias: no penalty
    penalty = Penalty(mask, l1=l1, l2=l2)
    n = 4
    folded = make_optimizer(Hyperparameters(optimizer=name), 3, np.float64)
    plain = make_optimizer(Hyperparameters(optimizer=name), 3, np.float64)
    w_folded = np.array([0.5, -1.5, 0.25])
    w_plain = w_folded.copy()
    for summed in ([2.0, -1.0, 0.5], [0.4, 0.8, -1.2], [-0.2, 0.6, 0.1]):
        mean = np.array(summed) / n + l2 / n * mask * w_plain + l1 / n * mask * np.sign(w_plain)
        plain.update(w_plain, mean, 0.1)
        folded.step(w_folded, np.array(summed), n, 0.1, penalty)
        np.testing.assert_allclose(w_folded, w_plain, rtol=1e-13, atol=1e-15)
