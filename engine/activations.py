"""Hidden-layer activations, dispatched by the names users pass.

Each derivative is written in terms of the activation's OUTPUT `A = f(Z)`, so the backward pass
needs no copy of the pre-activations: tanh' = 1 - A², sigmoid' = A(1 - A), relu' = [A > 0].
Functions work in place on `Z` (the caller owns it) and return it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.hyperparameters import Activation

LEAKY_SLOPE = 0.01

Array = np.ndarray


def _tanh(Z: Array) -> Array:
    return np.tanh(Z, out=Z)


def _relu(Z: Array) -> Array:
    return np.maximum(Z, 0, out=Z)


def _leaky_relu(Z: Array) -> Array:
    # max(z, slope*z) equals z for z > 0 and slope*z otherwise, for 0 < slope < 1.
    return np.maximum(Z, Z * LEAKY_SLOPE, out=Z)


def _sigmoid(Z: Array) -> Array:
    # 1/(1+e^-z) overflows e^-z for very negative z; 0.5*(1+tanh(z/2)) is the same and stable.
    np.multiply(Z, 0.5, out=Z)
    np.tanh(Z, out=Z)
    np.add(Z, 1.0, out=Z)
    return np.multiply(Z, 0.5, out=Z)


def _identity(Z: Array) -> Array:
    return Z


def _tanh_grad(A: Array, delta: Array) -> None:
    delta *= 1.0 - A * A


def _relu_grad(A: Array, delta: Array) -> None:
    delta *= A > 0


def _leaky_relu_grad(A: Array, delta: Array) -> None:
    delta *= np.where(A > 0, 1.0, LEAKY_SLOPE).astype(delta.dtype, copy=False)


def _sigmoid_grad(A: Array, delta: Array) -> None:
    delta *= A * (1.0 - A)


def _identity_grad(A: Array, delta: Array) -> None:
    return None


ACTIVATIONS: dict[Activation, Callable[[Array], Array]] = {
    "tanh": _tanh,
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "sigmoid": _sigmoid,
    "identity": _identity,
}

# (A, delta) -> None: multiplies delta in place by f'(Z), expressed through A = f(Z).
DERIVATIVES: dict[Activation, Callable[[Array, Array], None]] = {
    "tanh": _tanh_grad,
    "relu": _relu_grad,
    "leaky_relu": _leaky_relu_grad,
    "sigmoid": _sigmoid_grad,
    "identity": _identity_grad,
}


def log_softmax(Z: Array) -> Array:
    """Row-wise log-softmax by log-sum-exp: finite for any finite logits. Works in place."""
    Z -= Z.max(axis=1, keepdims=True)
    Z -= np.log(np.exp(Z).sum(axis=1, keepdims=True))
    return Z


def softmax(Z: Array) -> Array:
    """Row-wise softmax, shifted by the row maximum so exp never overflows. Works in place."""
    Z -= Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z
