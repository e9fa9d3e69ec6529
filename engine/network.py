"""Forward and backward passes, the loss, and parameter initialisation.

Parameter layout. All parameters live in ONE flat, contiguous vector `Network.params`, so an
optimizer updates the whole network with a handful of NumPy calls. Layer l (fan_in -> fan_out)
owns the block `layers[l]`, a (fan_in + 1, fan_out) view: rows [:fan_in] are the weights W,
the last row is the bias b. Activations carry a trailing column of ones, so

    Z = [A, 1] @ [[W], [b]]            one matmul per layer, bias included
    dL/d[[W], [b]] = [A, 1].T @ delta  one matmul gives dW and db together

Loss (what `loss_and_gradients` differentiates), for n examples and K >= 2 classes:

    L = mean_i CE(softmax(z_i), y_i) + l2/(2n) * sum ||W||^2 + l1/n * sum |W|

over weights only, never biases. CE is computed by log-sum-exp (finite for any finite logits) and
the fused softmax + cross-entropy output delta is (P - Y)/n. A minibatch uses its own n, so the
gradient of a batch loss is the gradient of that batch's mean loss.

Large inputs are processed in blocks of rows (`block_rows`), forward and backward per block,
accumulating the gradient, so no (n, hidden) array is ever held for the whole data set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.typing import DTypeLike

from engine.activations import ACTIVATIONS, DERIVATIVES
from engine.errors import InvalidInput
from engine.hyperparameters import Activation, Init

Array = np.ndarray

# Target bytes for one block's widest activation buffer: a few such buffers stay in L2 together.
BLOCK_BYTES = 128 * 1024
MIN_BLOCK_ROWS = 256


def init_params(
    layer_sizes: Sequence[int], init: Init, dtype: DTypeLike, rng: np.random.Generator
) -> tuple[list[Array], list[Array]]:
    """Initial weights (fan_in, fan_out) and zero biases (fan_out,) per layer, input side first.

    RNG draw order (a packed trainer must reproduce it): for each layer, input side first, ONE
    draw of a (fan_in, fan_out) float64 array: `rng.standard_normal` for lecun and he,
    `rng.uniform(-limit, limit)` for xavier; then scaled in float64 and cast to `dtype`.
    Biases draw nothing. `train` calls this first on `np.random.default_rng(seed)`; the per-epoch
    shuffles (`rng.permutation(n)`, minibatch training only) follow on the same generator.
    """
    if len(layer_sizes) < 2 or any(int(size) < 1 for size in layer_sizes):
        raise InvalidInput(f"layer_sizes needs >= 2 positive widths, got {list(layer_sizes)}")
    weights: list[Array] = []
    biases: list[Array] = []
    for fan_in, fan_out in pairwise(int(size) for size in layer_sizes):
        if init == "lecun":
            W = rng.standard_normal((fan_in, fan_out)) / math.sqrt(fan_in)
        elif init == "he":
            W = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        elif init == "xavier":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            W = rng.uniform(-limit, limit, (fan_in, fan_out))
        else:
            raise InvalidInput(f"init must be one of lecun, xavier, he; got {init!r}")
        weights.append(W.astype(dtype))
        biases.append(np.zeros(fan_out, dtype=dtype))
    return weights, biases


def block_rows(layer_sizes: Sequence[int], itemsize: int) -> int:
    """Rows per block: the widest (rows, width + 1) buffer takes about BLOCK_BYTES."""
    widest = max(layer_sizes[1:]) + 1
    return max(MIN_BLOCK_ROWS, BLOCK_BYTES // (widest * itemsize))


def with_ones_column(X: Array, dtype: DTypeLike) -> Array:
    """[X, 1] in `dtype`: (n, n_features + 1), C-contiguous."""
    X_aug = np.empty((X.shape[0], X.shape[1] + 1), dtype=dtype)
    X_aug[:, :-1] = X
    X_aug[:, -1] = 1
    return X_aug


def one_hot(y: Array, n_classes: int, dtype: DTypeLike) -> Array:
    """(n, n_classes) with Y[i, y[i]] = 1."""
    Y = np.zeros((y.shape[0], n_classes), dtype=dtype)
    Y[np.arange(y.shape[0]), y] = 1
    return Y


@dataclass
class _BlockViews:
    """The [:m] slices of a workspace's buffers, cached per row count m."""

    hidden: list[Array]  # (m, h + 1) per hidden layer, last column ones
    units: list[Array]  # (m, h) views of `hidden` without the ones column
    deltas: list[Array]  # (m, h) per hidden layer
    logits: Array  # (m, K)
    row_stat: Array  # (m, 1)
    row_index: Array  # (m,) = arange(m)


class Workspace:
    """Preallocated scratch for forward/backward over at most `rows` examples, plus a gradient
    accumulator. One per thread."""

    def __init__(self, network: Network, rows: int) -> None:
        dtype = network.dtype
        widths = network.layer_sizes[1:-1]
        self.rows = rows
        self._hidden = [np.ones((rows, width + 1), dtype=dtype) for width in widths]
        self._deltas = [np.empty((rows, width), dtype=dtype) for width in widths]
        self._logits = np.empty((rows, network.n_classes), dtype=dtype)
        self._row_stat = np.empty((rows, 1), dtype=dtype)
        self._row_index = np.arange(rows)
        # Flat gradient (same layout as params) and a per-layer matmul target for accumulating.
        self.grad = np.empty_like(network.params)
        self.grad_layers = network.layer_views(self.grad)
        self.block_grad = np.empty_like(network.params)
        self.block_grad_layers = network.layer_views(self.block_grad)
        self._views: dict[int, _BlockViews] = {}

    def views(self, m: int) -> _BlockViews:
        cached = self._views.get(m)
        if cached is None:
            hidden = [H[:m] for H in self._hidden]
            cached = _BlockViews(
                hidden=hidden,
                units=[H[:, :-1] for H in hidden],
                deltas=[D[:m] for D in self._deltas],
                logits=self._logits[:m],
                row_stat=self._row_stat[:m],
                row_index=self._row_index[:m],
            )
            self._views[m] = cached
        return cached


class Network:
    """A multilayer perceptron: hidden layers of one activation, a linear output, softmax."""

    def __init__(self, layer_sizes: Sequence[int], activation: Activation, dtype: DTypeLike):
        self.layer_sizes = [int(size) for size in layer_sizes]
        if len(self.layer_sizes) < 2 or min(self.layer_sizes) < 1:
            raise InvalidInput(f"layer_sizes needs >= 2 positive widths, got {self.layer_sizes}")
        if activation not in ACTIVATIONS:
            raise InvalidInput(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.activation: Activation = activation
        self._activate = ACTIVATIONS[activation]
        self._derivative = DERIVATIVES[activation]
        self.dtype = np.dtype(dtype)
        self.n_classes = self.layer_sizes[-1]
        self.params = np.zeros(sum((a + 1) * b for a, b in pairwise(self.layer_sizes)), self.dtype)
        self.layers = self.layer_views(self.params)  # (fan_in + 1, fan_out) each
        self.weights = [L[:-1] for L in self.layers]  # (fan_in, fan_out) views
        self.biases = [L[-1] for L in self.layers]  # (fan_out,) views
        # 1 where params holds a weight, 0 where it holds a bias: penalties skip biases.
        self.weight_mask = np.zeros_like(self.params)
        for mask_layer in self.layer_views(self.weight_mask):
            mask_layer[:-1] = 1

    def layer_views(self, flat: Array) -> list[Array]:
        """Per-layer (fan_in + 1, fan_out) views of a vector laid out like `params`."""
        views = []
        offset = 0
        for fan_in, fan_out in pairwise(self.layer_sizes):
            size = (fan_in + 1) * fan_out
            views.append(flat[offset : offset + size].reshape(fan_in + 1, fan_out))
            offset += size
        return views

    def set_params(self, weights: Sequence[Array], biases: Sequence[Array]) -> None:
        for layer, W, b in zip(self.layers, weights, biases, strict=True):
            if W.shape != (layer.shape[0] - 1, layer.shape[1]) or b.shape != (layer.shape[1],):
                raise InvalidInput(
                    f"weights/biases of shape {W.shape}/{b.shape} do not fit layer "
                    f"{layer.shape[0] - 1} -> {layer.shape[1]}"
                )
            layer[:-1] = W
            layer[-1] = b

    def copy_weights(self) -> tuple[list[Array], list[Array]]:
        """Independent copies of the weights and biases."""
        return [W.copy() for W in self.weights], [b.copy() for b in self.biases]

    def workspace(self, rows: int) -> Workspace:
        return Workspace(self, rows)

    def block_rows(self) -> int:
        return block_rows(self.layer_sizes, self.dtype.itemsize)

    # -- one block -------------------------------------------------------------------------

    def _forward_block(self, views: _BlockViews, X_aug: Array) -> Array:
        """Logits (m, K) for a block [X, 1] (m, n_features + 1); hidden outputs stay in views."""
        A = X_aug
        for layer, H, units in zip(self.layers, views.hidden, views.units, strict=False):
            np.matmul(A, layer, out=units)  # (m, h) into [A', 1]
            self._activate(units)
            A = H
        np.matmul(A, self.layers[-1], out=views.logits)
        return views.logits

    def _backward_block(
        self, views: _BlockViews, X_aug: Array, delta: Array, out_layers: list[Array]
    ) -> None:
        """Write the SUMMED gradient of the block's CE into out_layers, given delta = P - Y."""
        for index in range(len(self.layers) - 1, -1, -1):
            A_in = X_aug if index == 0 else views.hidden[index - 1]  # (m, fan_in + 1)
            np.matmul(A_in.T, delta, out=out_layers[index])  # (fan_in + 1, fan_out)
            if index:
                previous = views.deltas[index - 1]  # (m, fan_in)
                np.matmul(delta, self.weights[index].T, out=previous)
                self._derivative(views.units[index - 1], previous)
                delta = previous

    @staticmethod
    def _softmax_minus_targets(logits: Array, Y: Array, row_stat: Array) -> None:
        """logits <- softmax(logits) - Y, in place, stable for any finite logits."""
        np.max(logits, axis=1, keepdims=True, out=row_stat)
        logits -= row_stat
        np.exp(logits, out=logits)
        np.sum(logits, axis=1, keepdims=True, out=row_stat)
        logits /= row_stat
        logits -= Y

    # -- whole arrays, blocked -------------------------------------------------------------

    def summed_gradient(self, workspace: Workspace, X_aug: Array, Y: Array) -> Array:
        """Sum over the rows of the CE gradient, into workspace.grad (flat), block by block."""
        n = X_aug.shape[0]
        step = workspace.rows
        for start in range(0, n, step):
            stop = min(start + step, n)
            views = workspace.views(stop - start)
            X_block = X_aug[start:stop]
            logits = self._forward_block(views, X_block)
            self._softmax_minus_targets(logits, Y[start:stop], views.row_stat)
            if start == 0:
                self._backward_block(views, X_block, logits, workspace.grad_layers)
            else:
                self._backward_block(views, X_block, logits, workspace.block_grad_layers)
                workspace.grad += workspace.block_grad
        return workspace.grad

    def add_penalty_gradient(self, grad_sum: Array, n: int, l1: float, l2: float) -> Array:
        """grad_sum (summed CE gradient) <- gradient of the MEAN loss with penalties, in place."""
        grad_sum *= 1.0 / n
        if l2:
            grad_sum += self.params * self.weight_mask * (l2 / n)
        if l1:
            grad_sum += np.sign(self.params) * self.weight_mask * (l1 / n)
        return grad_sum

    def gradient(
        self, workspace: Workspace, X_aug: Array, Y: Array, l1: float = 0.0, l2: float = 0.0
    ) -> Array:
        """Flat gradient of the mean loss over the rows of X_aug (n, n_features + 1)."""
        grad = self.summed_gradient(workspace, X_aug, Y)
        return self.add_penalty_gradient(grad, X_aug.shape[0], l1, l2)

    def penalty(self, n: int, l1: float, l2: float) -> float:
        """l2/(2n) * sum W^2 + l1/n * sum |W| over weights (float64)."""
        total = 0.0
        for W in self.weights:
            if l2:
                total += l2 / (2 * n) * float(np.vdot(W, W))
            if l1:
                total += l1 / n * float(np.abs(W).sum(dtype=np.float64))
        return total

    def cross_entropy_and_correct(
        self, workspace: Workspace, X_aug: Array, y: Array
    ) -> tuple[float, int]:
        """(summed cross-entropy, number of argmax hits) over the rows, block by block."""
        n = X_aug.shape[0]
        step = workspace.rows
        ce_sum = 0.0
        correct = 0
        for start in range(0, n, step):
            stop = min(start + step, n)
            views = workspace.views(stop - start)
            labels = y[start:stop]
            logits = self._forward_block(views, X_aug[start:stop])
            correct += int(np.count_nonzero(logits.argmax(axis=1) == labels))
            # CE_i = log sum_k exp(z_ik - max_i) - (z_iy - max_i)
            np.max(logits, axis=1, keepdims=True, out=views.row_stat)
            logits -= views.row_stat
            picked = logits[views.row_index, labels]
            np.exp(logits, out=logits)
            sums = logits.sum(axis=1)
            ce_sum += float(np.log(sums).sum(dtype=np.float64)) - float(
                picked.sum(dtype=np.float64)
            )
        return ce_sum, correct

    def probabilities(self, workspace: Workspace, X_aug: Array) -> Array:
        """Softmax outputs (n, K) in float64 for the rows of [X, 1], block by block."""
        n = X_aug.shape[0]
        out = np.empty((n, self.n_classes), dtype=np.float64)
        step = workspace.rows
        for start in range(0, n, step):
            stop = min(start + step, n)
            views = workspace.views(stop - start)
            logits = self._forward_block(views, X_aug[start:stop])
            np.max(logits, axis=1, keepdims=True, out=views.row_stat)
            logits -= views.row_stat
            np.exp(logits, out=logits)
            np.sum(logits, axis=1, keepdims=True, out=views.row_stat)
            logits /= views.row_stat
            out[start:stop] = logits
        return out


# -- functional front end: plain weights and biases in, plain arrays out --------------------


def _network_for(
    weights: Sequence[Array], biases: Sequence[Array], activation: Activation, dtype: DTypeLike
) -> Network:
    if not weights or len(weights) != len(biases):
        raise InvalidInput(
            f"need as many weight matrices as bias vectors (>= 1), got {len(weights)} and "
            f"{len(biases)}"
        )
    sizes = [int(weights[0].shape[0])] + [int(W.shape[1]) for W in weights]
    network = Network(sizes, activation, dtype)
    network.set_params(weights, biases)
    return network


def loss(
    weights: Sequence[Array],
    biases: Sequence[Array],
    activation: Activation,
    X: Array,
    y: Array,
    *,
    l1: float = 0.0,
    l2: float = 0.0,
) -> float:
    """The mean loss L (see the module docstring) of the network on (X, y), in float64 sums."""
    dtype = weights[0].dtype
    network = _network_for(weights, biases, activation, dtype)
    workspace = network.workspace(min(X.shape[0], network.block_rows()))
    ce_sum, _ = network.cross_entropy_and_correct(
        workspace, with_ones_column(X, dtype), np.asarray(y)
    )
    n = X.shape[0]
    return ce_sum / n + network.penalty(n, l1, l2)


def loss_and_gradients(
    weights: Sequence[Array],
    biases: Sequence[Array],
    activation: Activation,
    X: Array,
    y: Array,
    *,
    l1: float = 0.0,
    l2: float = 0.0,
) -> tuple[float, list[Array], list[Array]]:
    """(L, dL/dW per layer, dL/db per layer) by backpropagation, the same code `train` runs."""
    dtype = weights[0].dtype
    network = _network_for(weights, biases, activation, dtype)
    n_classes = network.n_classes
    X_aug = with_ones_column(X, dtype)
    workspace = network.workspace(min(X.shape[0], network.block_rows()))
    grad = network.gradient(workspace, X_aug, one_hot(np.asarray(y), n_classes, dtype), l1, l2)
    layers = network.layer_views(grad.copy())
    value = loss(weights, biases, activation, X, y, l1=l1, l2=l2)
    return value, [L[:-1] for L in layers], [L[-1] for L in layers]


def predict_proba(
    weights: Sequence[Array], biases: Sequence[Array], activation: Activation, X: Array
) -> Array:
    """Softmax class probabilities (n, K), float64, by the training forward pass."""
    dtype = weights[0].dtype
    network = _network_for(weights, biases, activation, dtype)
    workspace = network.workspace(max(1, min(X.shape[0], network.block_rows())))
    return network.probabilities(workspace, with_ones_column(X, dtype))
