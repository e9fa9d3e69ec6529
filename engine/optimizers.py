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

Settings per parameter. The learning rate, l1, l2 and momentum are each a float (one network)
or a `Grouped` value, one per group of parameters: several networks packed into one vector
(engine.packed) take one step of the same rule over the concatenated buffer, each network with
its own settings. Whatever a rule derives from a setting (lr / n, lr * l2 / n, Adam's
bias-corrected rate) is computed per group in float64, exactly as from a float, and then spread
onto the parameters in their dtype, so a network steps in a pack as it steps alone.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import DTypeLike

from engine.errors import InvalidInput
from engine.hyperparameters import Hyperparameters

Array = np.ndarray


@dataclass(frozen=True, eq=False)
class Grouped:
    """A setting with one value per group of parameters: `values[g]` (float64) applies to every
    parameter i with `group[i] == g`. Immutable and compared by identity: a changed setting is
    a new Grouped (so values derived from it can be cached by it)."""

    values: Array  # (G,) float64
    group: Array  # (P,) intp, each parameter's group
    dtype: np.dtype  # the parameters'

    def spread(self, per_group: Array, out: Array | None = None) -> Array:
        """(P,) in the parameters' dtype: per_group[group[i]] at i."""
        if out is None:
            out = np.empty(self.group.shape, dtype=self.dtype)
        return np.take(per_group, self.group, out=out)

    @cached_property
    def vector(self) -> Array:
        """The values on the parameters (P,), in their dtype."""
        return self.spread(self.values)


Setting = float | Grouped


def per_parameter(
    function: Callable[..., float | Array], *settings: Setting, out: Array | None = None
) -> float | Array:
    """function(*settings) for floats; for Grouped settings (sharing one grouping), function of
    their per-group values, in float64, spread onto the parameters (into `out` if given)."""
    for grouped in settings:
        if isinstance(grouped, Grouped):
            break
    else:  # floats: the single-network case (a step's hot path: no allocation)
        return function(*settings)
    values = function(*(s.values if isinstance(s, Grouped) else s for s in settings))
    return grouped.spread(np.asarray(values, dtype=np.float64), out)


def _nonzero(setting: Setting) -> bool:
    return bool(np.any(setting.values)) if isinstance(setting, Grouped) else bool(setting)


def _on_parameters(setting: Setting) -> float | Array:
    """A float as it is, a Grouped setting as its (cached) vector on the parameters."""
    return setting.vector if isinstance(setting, Grouped) else setting


@dataclass(frozen=True)
class Penalty:
    """l2/(2n) * sum W^2 + l1/n * sum |W| over the entries where `weight_mask` is 1."""

    weight_mask: Array  # 1 for weights, 0 for biases, laid out like the parameters
    l1: Setting = 0.0
    l2: Setting = 0.0
    _scales: dict[int, tuple[Array | None, Array | None]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    has_l1: bool = field(init=False, compare=False, repr=False)
    has_l2: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "has_l1", _nonzero(self.l1))  # read every step
        object.__setattr__(self, "has_l2", _nonzero(self.l2))

    @property
    def active(self) -> bool:
        return self.has_l1 or self.has_l2

    def gradient_scales(self, n: int) -> tuple[Array | None, Array | None]:
        """(l1/n, l2/n) on the weights, 0 on the biases, in the parameters' dtype (None where the
        setting is 0): the penalty gradient is l1/n * sign(w) + l2/n * w with these. Cached."""
        scales = self._scales.get(n)
        if scales is None:
            if len(self._scales) >= 4:  # full batches and the last, shorter minibatch: few n
                self._scales.clear()
            l1, l2 = (
                per_parameter(lambda value: value / n, setting) * self.weight_mask
                if _nonzero(setting)
                else None
                for setting in (self.l1, self.l2)
            )
            scales = self._scales[n] = (l1, l2)
        return scales

    def add_gradient(self, grad: Array, params: Array, n: int, scratch: Array) -> None:
        """grad += the penalty's gradient for n examples at params (scratch: like params)."""
        l1, l2 = self.gradient_scales(n)
        if l2 is not None:
            np.multiply(params, l2, out=scratch)
            grad += scratch
        if l1 is not None:
            np.sign(params, out=scratch)
            scratch *= l1
            grad += scratch


@dataclass(frozen=True)
class OptimizerState:
    """What an optimizer carries from one update to the next, so that training can go on where
    it stopped: the updates taken (Adam's bias correction counts them) and its arrays, each laid
    out like the parameters (momentum and nesterov: the velocity; adam: the first and second
    moments). Plain sgd has none."""

    optimizer: str  # the optimizer it belongs to (an OptimizerName)
    steps: int
    arrays: tuple[Array, ...]  # (n_parameters,) each, in the parameters' dtype


class Optimizer(ABC):
    """Owns the state for a parameter vector of `size` entries."""

    def __init__(self, size: int, dtype: DTypeLike) -> None:
        self._step = np.zeros(size, dtype=dtype)
        self._scratch = np.zeros(size, dtype=dtype)
        self.steps_taken = 0
        self.state: list[Array] = []  # what `forget` zeroes, `saved` keeps and `restore` sets

    def saved(self, optimizer: str) -> OptimizerState | None:
        """A copy of the state (None for an optimizer without one)."""
        if not self.state:
            return None
        return OptimizerState(optimizer, self.steps_taken, tuple(a.copy() for a in self.state))

    def restore(self, saved: OptimizerState) -> None:
        """Go on from `saved` (an optimizer of this kind, for parameters of this size)."""
        if len(saved.arrays) != len(self.state) or any(
            given.shape != mine.shape for given, mine in zip(saved.arrays, self.state, strict=True)
        ):
            shapes = [a.shape for a in saved.arrays]
            raise InvalidInput(
                f"the saved {saved.optimizer} state has arrays {shapes}; this optimizer needs "
                f"{[a.shape for a in self.state]}"
            )
        for given, mine in zip(saved.arrays, self.state, strict=True):
            mine[...] = given
        self.steps_taken = int(saved.steps)

    @abstractmethod
    def update(self, params: Array, grads: Array, learning_rate: Setting) -> None:
        """params <- params after one step along grads (same shape; grads is left unchanged)."""

    def forget(self, entries: Array) -> None:
        """Zero the state of these parameters (a network of a pack that stopped training)."""
        for array in self.state:
            array[entries] = 0

    def step(
        self, params: Array, grad_sum: Array, n: int, learning_rate: Setting, penalty: Penalty
    ) -> None:
        """One update from the summed CE gradient over n examples (overwritten) plus penalties."""
        grad_sum *= 1.0 / n
        penalty.add_gradient(grad_sum, params, n, self._scratch)
        self.update(params, grad_sum, learning_rate)


class SGD(Optimizer):
    def __init__(self, size: int, dtype: DTypeLike) -> None:
        super().__init__(size, dtype)
        # (learning rate, n) -> (lr / n, the l2 decay or None): the penalty is the same each step
        self._folded: dict[tuple[Setting, int], tuple[float | Array, Array | None]] = {}

    def update(self, params: Array, grads: Array, learning_rate: Setting) -> None:
        np.multiply(grads, _on_parameters(learning_rate), out=self._step)
        params -= self._step
        self.steps_taken += 1

    def step(
        self, params: Array, grad_sum: Array, n: int, learning_rate: Setting, penalty: Penalty
    ) -> None:
        if penalty.has_l1:
            super().step(params, grad_sum, n, learning_rate, penalty)
            return
        # w - lr*(G/n + l2/n * mask*w) = w * (1 - lr*l2/n * mask) - (lr/n) * G
        folded = self._folded.get((learning_rate, n))
        if folded is None:
            if len(self._folded) >= 4:  # a schedule changes the rate: keep few entries
                self._folded.clear()
            rate = per_parameter(lambda lr: lr / n, learning_rate)
            decay = None
            if penalty.has_l2:
                shrink = per_parameter(lambda lr, l2: lr * l2 / n, learning_rate, penalty.l2)
                decay = 1.0 - penalty.weight_mask * shrink
            folded = self._folded[(learning_rate, n)] = (rate, decay)
        rate, decay = folded
        if decay is not None:
            params *= decay
        np.multiply(grad_sum, rate, out=self._step)
        params -= self._step
        self.steps_taken += 1


class Momentum(Optimizer):
    def __init__(self, size: int, dtype: DTypeLike, momentum: Setting) -> None:
        super().__init__(size, dtype)
        self.momentum = _on_parameters(momentum)
        self.velocity = np.zeros(size, dtype=dtype)
        self.state.append(self.velocity)

    def update(self, params: Array, grads: Array, learning_rate: Setting) -> None:
        self.velocity *= self.momentum
        np.multiply(grads, _on_parameters(learning_rate), out=self._step)
        self.velocity -= self._step
        params += self.velocity
        self.steps_taken += 1


class Nesterov(Momentum):
    def __init__(self, size: int, dtype: DTypeLike, momentum: Setting) -> None:
        super().__init__(size, dtype, momentum)
        self._lookahead = np.zeros(size, dtype=dtype)

    def update(self, params: Array, grads: Array, learning_rate: Setting) -> None:
        self.velocity *= self.momentum
        np.multiply(grads, _on_parameters(learning_rate), out=self._step)  # lr * g
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
        self.state += [self.first_moment, self.second_moment]
        self._rate = np.zeros(size, dtype=dtype)  # a Grouped rate's bias-corrected vector

    def update(self, params: Array, grads: Array, learning_rate: Setting) -> None:
        self._adam(params, grads, 1.0, learning_rate)

    def step(
        self, params: Array, grad_sum: Array, n: int, learning_rate: Setting, penalty: Penalty
    ) -> None:
        if penalty.has_l1 or penalty.has_l2:
            super().step(params, grad_sum, n, learning_rate, penalty)
        else:  # g = grad_sum / n, folded into the moment updates
            self._adam(params, grad_sum, 1.0 / n, learning_rate)

    def _adam(self, params: Array, raw: Array, scale: float, learning_rate: Setting) -> None:
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
        corrected = (1.0 - self.beta_1**t) * c
        step *= per_parameter(lambda lr: lr / corrected, learning_rate, out=self._rate)
        params -= step


def make_optimizer(
    hp: Hyperparameters, size: int, dtype: DTypeLike, momentum: Setting | None = None
) -> Optimizer:
    """The optimizer `hp` names; `momentum` (default hp.momentum) may be per parameter."""
    momentum = hp.momentum if momentum is None else momentum
    if hp.optimizer == "sgd":
        return SGD(size, dtype)
    if hp.optimizer == "momentum":
        return Momentum(size, dtype, momentum)
    if hp.optimizer == "nesterov":
        return Nesterov(size, dtype, momentum)
    if hp.optimizer == "adam":
        return Adam(size, dtype, hp.beta_1, hp.beta_2, hp.epsilon)
    # lbfgs searches a line per iteration (engine.lbfgs, driven by engine.training.train)
    raise InvalidInput(f"optimizer {hp.optimizer} has no per-step update rule; train it alone")
