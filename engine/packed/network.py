"""The packed network: the parameters of K networks of one depth in one flat vector.

The first layer is one dense (G·(d+1), Σh₁) matrix (network k's block: its input group's rows,
its columns); a later layer is one block-diagonal (Σ fan_in + 1, Σ fan_out) matrix with one bias
row, or one (fan_in + 1, fan_out) block per network, whichever costs less (see `_is_diagonal`).
`owner` maps every parameter to its network (K: padding, zero for ever).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.typing import DTypeLike

from engine.errors import InvalidInput
from engine.hyperparameters import Activation, Task
from engine.network import BLOCK_BYTES, MIN_BLOCK_ROWS

Array = np.ndarray

# A later layer is one block-diagonal matrix (one product per pass, padding multiplied by zero)
# while that costs less than a small product per network: measured on the tutorial's pack,
# a product's fixed cost is ~2 us and a multiply-add ~0.1 ns.
CALL_SECONDS = 2e-6
DIAGONAL_MAC_SECONDS = 0.1e-9
PASS_ROWS = 1024  # rows a full-batch pass is taken to have when choosing layouts


def _is_diagonal(fan_ins: Sequence[int], fan_outs: Sequence[int], rows: int) -> bool:
    """Whether a later layer with these per-network widths is packed block-diagonally."""
    K = len(fan_ins)
    padded = (sum(fan_ins) + 1) * sum(fan_outs)
    real = sum((a + 1) * b for a, b in zip(fan_ins, fan_outs, strict=True))
    return K == 1 or rows * (padded - real) * DIAGONAL_MAC_SECONDS < (K - 1) * 2 * CALL_SECONDS


def packed_shapes(
    layer_sizes: Sequence[Sequence[int]], n_groups: int = 1, rows: int = 256
) -> list[tuple[int, int]]:
    """(rows, columns) of every block of the flat parameter vector: the packed first layer,
    then each later layer as one block-diagonal matrix or one block per network."""
    d = layer_sizes[0][0]
    shapes = [(n_groups * (d + 1), sum(sizes[1] for sizes in layer_sizes))]
    for layer in range(1, len(layer_sizes[0]) - 1):
        fan_ins = [sizes[layer] for sizes in layer_sizes]
        fan_outs = [sizes[layer + 1] for sizes in layer_sizes]
        if _is_diagonal(fan_ins, fan_outs, rows):
            shapes.append((sum(fan_ins) + 1, sum(fan_outs)))
        else:
            shapes += [(a + 1, b) for a, b in zip(fan_ins, fan_outs, strict=True)]
    return shapes


def _column_slices(widths: Sequence[int]) -> list[slice]:
    starts = np.cumsum([0, *widths]).tolist()
    return [slice(a, b) for a, b in pairwise(starts)]


@dataclass(frozen=True)
class _LaterLayer:
    """Layer `index` >= 1 of every network: its place in the flat vector and in the packed
    activations. `blocks[k]` is network k's (fan_in + 1, fan_out) block, bias row last (a view
    into `matrix` when the layer is diagonal)."""

    index: int
    diagonal: bool
    offset: int
    shapes: list[tuple[int, int]]  # the one matrix's, or each network's block's
    inputs: Sequence[slice | Array]  # network k's columns of the layer's input (m, Σ fan_in)
    outputs: Sequence[slice | Array]  # its columns of the output (the logits: class-major)

    @property
    def size(self) -> int:
        return sum(rows * columns for rows, columns in self.shapes)

    def matrix(self, flat: Array) -> Array:
        """The diagonal layer's (Σ fan_in + 1, Σ fan_out) matrix in a vector like params."""
        rows, columns = self.shapes[0]
        return flat[self.offset : self.offset + rows * columns].reshape(rows, columns)

    def blocks(self, flat: Array) -> list[Array]:
        if self.diagonal:
            matrix = self.matrix(flat)
            return [
                matrix[np.r_[rows, matrix.shape[0] - 1]][:, columns]
                for rows, columns in zip(self.inputs, self.outputs, strict=True)
            ]
        views, offset = [], self.offset
        for rows, columns in self.shapes:
            views.append(flat[offset : offset + rows * columns].reshape(rows, columns))
            offset += rows * columns
        return views


class PackedNetwork:
    """K multilayer perceptrons of one depth and activation as one; see the module docstring.

    Parameters, in one flat vector: the first layer packed as a (G·(d+1), Σh₁) matrix (network
    k's block: the rows of its input group, its columns), then every later layer either as one
    block-diagonal (Σ fan_in + 1, Σ fan_out) matrix with one bias row, or as one (fan_in + 1,
    fan_out) block per network (see `_is_diagonal`; `rows` is the rows a pass will take).
    `input_groups[k]` is network k's input group (0..G-1; default: all share group 0).
    """

    def __init__(
        self,
        layer_sizes: Sequence[Sequence[int]],
        activation: Activation,
        dtype: DTypeLike,
        input_groups: Sequence[int] | None = None,
        rows: int = 256,
        task: Task = "classification",
    ) -> None:
        sizes = [[int(width) for width in network] for network in layer_sizes]
        if not sizes or any(len(s) < 2 or min(s) < 1 for s in sizes):
            raise InvalidInput(f"a pack needs networks of >= 2 positive widths, got {sizes}")
        first = sizes[0]
        if any(len(s) != len(first) or s[0] != first[0] or s[-1] != first[-1] for s in sizes):
            raise InvalidInput(
                f"networks in a pack need the same depth, inputs and outputs, got {sizes}"
            )
        K = len(sizes)
        groups = [int(g) for g in input_groups] if input_groups is not None else [0] * K
        if len(groups) != K or min(groups) < 0:
            raise InvalidInput(f"input_groups needs one group index >= 0 per network: {groups}")
        G = max(groups) + 1
        d, C = first[0], first[-1]
        self.layer_sizes = sizes
        self.n_networks, self.n_groups, self.n_features, self.n_classes = K, G, d, C
        self.depth = len(first) - 1
        self.input_groups = groups
        self.activation: Activation = activation
        self.dtype = np.dtype(dtype)
        self.task: Task = task  # regression: identity outputs, half the squared error
        # Each network's columns of each packed hidden layer and, last, of the output: the
        # logits are class-major, row c*K + k of (C*K, m) is network k's class c.
        self.columns: list[Sequence[slice | Array]] = [
            _column_slices([s[b] for s in sizes]) for b in range(1, self.depth)
        ]
        self.columns.append([np.arange(C) * K + k for k in range(K)])
        self.widths = [sum(s[b] for s in sizes) for b in range(1, self.depth)]  # hidden layers
        first_shape = (G * (d + 1), self.widths[0] if self.widths else K * C)
        offset = first_shape[0] * first_shape[1]
        self.later: list[_LaterLayer] = []
        for layer in range(1, self.depth):
            fan_ins = [s[layer] for s in sizes]
            fan_outs = [s[layer + 1] for s in sizes]
            diagonal = _is_diagonal(fan_ins, fan_outs, rows)
            shapes = (
                [(sum(fan_ins) + 1, sum(fan_outs))]
                if diagonal
                else [(a + 1, b) for a, b in zip(fan_ins, fan_outs, strict=True)]
            )
            later = _LaterLayer(
                layer, diagonal, offset, shapes, self.columns[layer - 1], self.columns[layer]
            )
            self.later.append(later)
            offset += later.size
        self.params = np.zeros(offset, self.dtype)
        self.first = self.first_layer(self.params)  # (G*(d+1), Σh₁)
        # owner[i]: the network parameter i belongs to; K marks padding (zero for ever)
        self.owner = np.full(offset, K, dtype=np.intp)
        self.weight_mask = np.zeros(offset, self.dtype)  # 1 on weights, 0 on biases and padding
        first_owner, first_mask = self.first_layer(self.owner), self.first_layer(self.weight_mask)
        for k, (g, columns) in enumerate(zip(groups, self.columns[0], strict=True)):
            first_owner[g * (d + 1) : (g + 1) * (d + 1), columns] = k
            first_mask[g * (d + 1) : g * (d + 1) + d, columns] = 1
        for later in self.later:
            if later.diagonal:
                owner, mask = later.matrix(self.owner), later.matrix(self.weight_mask)
                for k, (rows_k, columns) in enumerate(
                    zip(later.inputs, later.outputs, strict=True)
                ):
                    owner[rows_k, columns] = k
                    owner[-1, columns] = k
                    mask[rows_k, columns] = 1
            else:
                for k, (owner_block, mask_block) in enumerate(
                    zip(later.blocks(self.owner), later.blocks(self.weight_mask), strict=True)
                ):
                    owner_block[...] = k
                    mask_block[:-1] = 1
        self.entries = [np.flatnonzero(self.owner == k) for k in range(K)]
        self.padding_entries = np.flatnonzero(self.owner == K)
        self.weight_entries = np.flatnonzero(self.weight_mask)  # every network's weights
        self.weight_owner = self.owner[self.weight_entries]
        # the network of each column of each hidden layer, and of the (m, K*C) output
        self.unit_owner = [
            np.repeat(np.arange(K), [s[b] for s in sizes]) for b in range(1, self.depth)
        ]
        self.output_owner = np.tile(np.arange(K), C)
        # with K > 1 an array that meets a diagonal matrix is checked for non-finite values
        self.guarded = K > 1

    def first_layer(self, flat: Array) -> Array:
        """The packed first layer's (G*(d+1), Σh₁) view of a vector laid out like params."""
        rows = self.n_groups * (self.n_features + 1)
        columns = self.widths[0] if self.widths else self.n_networks * self.n_classes
        return flat[: rows * columns].reshape(rows, columns)

    def _first_rows(self, k: int) -> slice:
        g = self.input_groups[k]
        return slice(g * (self.n_features + 1), (g + 1) * (self.n_features + 1))

    def set_network(self, k: int, weights: Sequence[Array], biases: Sequence[Array]) -> None:
        if len(weights) != self.depth or len(biases) != self.depth:
            raise InvalidInput(f"network {k} needs {self.depth} weight matrices and bias vectors")
        rows, columns = self._first_rows(k), self.columns[0][k]
        self.first[rows.start : rows.stop - 1, columns] = weights[0]
        self.first[rows.stop - 1, columns] = biases[0]
        for later, W, b in zip(self.later, weights[1:], biases[1:], strict=True):
            if later.diagonal:
                matrix = later.matrix(self.params)
                matrix[later.inputs[k], later.outputs[k]] = W
                matrix[-1, later.outputs[k]] = b
            else:
                target = later.blocks(self.params)[k]
                target[:-1] = W
                target[-1] = b

    def network_weights(self, k: int, flat: Array | None = None) -> tuple[list[Array], list[Array]]:
        """Copies of network k's weights (fan_in, fan_out) and biases (fan_out,)."""
        source = self.params if flat is None else flat
        first = self.first_layer(source)[self._first_rows(k), self.columns[0][k]]
        weights, biases = [first[:-1].copy()], [first[-1].copy()]
        for later in self.later:
            block = later.blocks(source)[k]  # a copy when diagonal
            weights.append(block[:-1].copy())
            biases.append(block[-1].copy())
        return weights, biases

    def block_rows(self) -> int:
        widest = max([*self.widths, self.n_networks * self.n_classes, 1])
        return max(MIN_BLOCK_ROWS, BLOCK_BYTES // (widest * self.dtype.itemsize))

    def tiled_input(self, X_aug: Array) -> Array:
        """[X, 1] (n, d + 1) as every group's input side by side: (n, G * (d + 1))."""
        return X_aug if self.n_groups == 1 else np.tile(X_aug, (1, self.n_groups))

    def penalties(self, n: int, l1: Array, l2: Array) -> Array:
        """Per network l2/(2n)·ΣW² + l1/n·Σ|W| (K,) float64, given l1, l2 per network (K,)."""
        K = self.n_networks
        weights = self.params[self.weight_entries].astype(np.float64)
        totals = np.zeros(K)
        if l2.any():
            squares = np.bincount(self.weight_owner, weights=weights * weights, minlength=K)
            totals += l2 / (2 * n) * squares
        if l1.any():
            absolutes = np.bincount(self.weight_owner, weights=np.abs(weights), minlength=K)
            totals += l1 / n * absolutes
        return totals
