"""Optimizers: each owns its state and applies one update to a flat parameter vector in place.

With g the gradient of the mean loss and lr the learning rate of the current epoch:

    sgd        w -= lr * g
    momentum   v = mu * v - lr * g;  w += v
    nesterov   v = mu * v - lr * g;  w += mu * v - lr * g          (scikit-learn's form)
    adam       t += 1 (t = 1 at the first update); m = b1 * m + (1 - b1) * g;
               v = b2 * v + (1 - b2) * g^2;  w -= lr * m_hat / (sqrt(v_hat) + eps)
               with m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)

One `update` is one step: per minibatch, or per epoch in full-batch training. Updates work in
the parameters' dtype with preallocated buffers (no allocation per step). The training loop calls
`step`, which takes the SUMMED cross-entropy gradient over a batch of n examples and adds the
penalties itself; plain SGD folds the l2 term into one multiply by a cached decay vector.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from engine.hyperparameters import Hyperparameters

Array = np.ndarray


@dataclass(frozen=True)
class Penalty:
    """l2/(2n) * sum W^2 + l1/n * sum |W| over the entries where `weight_mask` is 1."""

    weight_mask: Array  # 1 for weights, 0 for biases, laid out like the parameters
    l1: float = 0.0
    l2: float = 0.0


class Optimizer(ABC):
    """Owns the state for a parameter vector of `size` entries."""

    def __init__(self, size: int, dtype: DTypeLike) -> None:
        self._step = np.zeros(size, dtype=dtype)
        self._scratch = np.zeros(size, dtype=dtype)
        self.steps_taken = 0

    @abstractmethod
    def update(self, params: Array, grads: Array, learning_rate: float) -> None:
        """params <- params after one step along grads (same shape; grads is left unchanged)."""

    def step(
        self, params: Array, grad_sum: Array, n: int, learning_rate: float, penalty: Penalty
    ) -> None:
        """One update from the summed CE gradient over n examples (overwritten) plus penalties."""
        grad_sum *= 1.0 / n
        scratch = self._scratch
        if penalty.l2:
            np.multiply(params, penalty.weight_mask, out=scratch)
            scratch *= penalty.l2 / n
            grad_sum += scratch
        if penalty.l1:
            np.sign(params, out=scratch)
            scratch *= penalty.weight_mask
            scratch *= penalty.l1 / n
            grad_sum += scratch
        self.update(params, grad_sum, learning_rate)


class SGD(Optimizer):
    def __init__(self, size: int, dtype: DTypeLike) -> None:
        super().__init__(size, dtype)
        self._decays: dict[tuple[float, int], Array] = {}

    def update(self, params: Array, grads: Array, learning_rate: float) -> None:
        np.multiply(grads, learning_rate, out=self._step)
        params -= self._step
        self.steps_taken += 1

    def step(
        self, params: Array, grad_sum: Array, n: int, learning_rate: float, penalty: Penalty
    ) -> None:
        if penalty.l1:
            super().step(params, grad_sum, n, learning_rate, penalty)
            return
        # w - lr*(G/n + l2/n * mask*w) = w * (1 - lr*l2/n * mask) - (lr/n) * G
        if penalty.l2:
            decay = self._decays.get((learning_rate, n))
            if decay is None:
                if len(self._decays) >= 4:  # a schedule changes the rate: keep few entries
                    self._decays.clear()
                decay = 1.0 - penalty.weight_mask * (learning_rate * penalty.l2 / n)
                self._decays[(learning_rate, n)] = decay
            params *= decay
        np.multiply(grad_sum, learning_rate / n, out=self._step)
        params -= self._step
        self.steps_taken += 1


class Momentum(Optimizer):
    def __init__(self, size: int, dtype: DTypeLike, momentum: float) -> None:
        super().__init__(size, dtype)
        self.momentum = momentum
        self.velocity = np.zeros(size, dtype=dtype)

    def update(self, params: Array, grads: Array, learning_rate: float) -> None:
        self.velocity *= self.momentum
        np.multiply(grads, learning_rate, out=self._step)
        self.velocity -= self._step
        params += self.velocity
        self.steps_taken += 1


class Nesterov(Momentum):
    def __init__(self, size: int, dtype: DTypeLike, momentum: float) -> None:
        super().__init__(size, dtype, momentum)
        self._lookahead = np.zeros(size, dtype=dtype)

    def update(self, params: Array, grads: Array, learning_rate: float) -> None:
        self.velocity *= self.momentum
        np.multiply(grads, learning_rate, out=self._step)  # lr * g
        self.velocity -= self._step
        np.multiply(self.velocity, self.momentum, out=self._lookahead)
        self._lookahead -= self._step  # mu * v - lr * g
        params += self._lookahead
        self.steps_taken += 1


class Adam(Optimizer):
    def __init__(
        self, size: int, dtype: DTypeLike, beta_1: float, beta_2: float, epsilon: float
    ) -> None:
        super().__init__(size, dtype)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.first_moment = np.zeros(size, dtype=dtype)
        self.second_moment = np.zeros(size, dtype=dtype)

    def update(self, params: Array, grads: Array, learning_rate: float) -> None:
        self._adam(params, grads, 1.0, learning_rate)

    def step(
        self, params: Array, grad_sum: Array, n: int, learning_rate: float, penalty: Penalty
    ) -> None:
        if penalty.l1 or penalty.l2:
            super().step(params, grad_sum, n, learning_rate, penalty)
        else:  # g = grad_sum / n, folded into the moment updates
            self._adam(params, grad_sum, 1.0 / n, learning_rate)

    def _adam(self, params: Array, raw: Array, scale: float, learning_rate: float) -> None:
        """One step along g = scale * raw."""
        self.steps_taken += 1
        t = self.steps_taken
        step = self._step
        self.first_moment *= self.beta_1
        np.multiply(raw, (1.0 - self.beta_1) * scale, out=step)
        self.first_moment += step
        self.second_moment *= self.beta_2
        np.multiply(raw, raw, out=step)
        step *= (1.0 - self.beta_2) * scale * scale
        self.second_moment += step
        # lr * m_hat / (sqrt(v_hat) + eps) with sqrt(v_hat) = c * sqrt(v), c = 1/sqrt(1 - b2^t):
        # = lr / ((1 - b1^t) * c) * m / (sqrt(v) + eps / c)
        c = 1.0 / math.sqrt(1.0 - self.beta_2**t)
        np.sqrt(self.second_moment, out=step)
        step += self.epsilon / c
        np.divide(self.first_moment, step, out=step)
        step *= learning_rate / ((1.0 - self.beta_1**t) * c)
        params -= step


def make_optimizer(hp: Hyperparameters, size: int, dtype: DTypeLike) -> Optimizer:
    if hp.optimizer == "sgd":
        return SGD(size, dtype)
    if hp.optimizer == "momentum":
        return Momentum(size, dtype, hp.momentum)
    if hp.optimizer == "nesterov":
        return Nesterov(size, dtype, hp.momentum)
    return Adam(size, dtype, hp.beta_1, hp.beta_2, hp.epsilon)
