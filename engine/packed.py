"""Many configurations of one sweep trained together: several networks packed into one.

Packing. K networks of the same depth train as ONE network. Every network sees the same input,
so the first layer is one dense (n_features + 1, Σh₁) matrix of their blocks side by side and
one product computes every network's first layer. A later layer is either one block-diagonal
(Σ fan_in + 1, Σ fan_out) matrix with one bias row (one product for all networks, the padding
between blocks multiplied by zero) or one block per network, whichever costs less (a product
has a fixed cost of a few microseconds; padding costs multiply-adds). The logits are
network-major, (K, C, m), softmaxed per network. One flat parameter vector holds everything, so
an optimizer step is a few NumPy calls for all K networks, with per-parameter vectors for the
learning rate, l1, l2 and momentum; the padding gets rate 0 and so stays exactly zero.

Minibatch networks shuffle with their own generators. Networks whose generators are in the same
state after initialisation share one input stream (an "input group"); with several groups each
gets its own rows of a block-diagonal first layer, fed its own batch side by side.

Exactness. Each network trains as `engine.training.train` trains it alone, up to rounding (a
packed product sums in its own order): the same initialisation (`init_params` on its own
`default_rng(seed)`), activation functions, loss, floating-point update steps, schedule, early
stopping, history and divergence rules. Rounding differences are amplified where training
itself is unstable (large learning rates), so two runs agree to ~1e-15 in calm stretches and
may drift apart for a while (the tutorial's sweep: ~1e-5 relative after 4000 epochs).

Isolation. A network whose values become non-finite must not reach the others, yet 0·NaN = NaN
in a block-diagonal product. So every array is checked (one sum) before it meets a
block-diagonal matrix; a network whose columns are not finite has them zeroed and fails alone,
diverged in that epoch. After every update the parameters are checked too. A network that
finished or failed has its block zeroed and frozen (rate 0) while the others go on.

    pack_key(hp, n_train)   configurations with equal keys may share a pack
    partition(hps, shape)   configurations split between workers, balanced, and their packs
    train_pack(hps, ...)    one pack trained as one network
    train_many(hps, ...)    packs and single configurations one after another, with callbacks
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

import numpy as np
from numpy.typing import DTypeLike

from engine.errors import EngineError, InvalidInput, TrainingCancelled, TrainingDiverged
from engine.hyperparameters import Activation, Hyperparameters
from engine.network import (
    BACKWARD,
    BLAS_THREADS_MIN_MACS,
    BLOCK_BYTES,
    FORWARD,
    MAX_CLASSES_BY_COLUMNS,
    MIN_BLOCK_ROWS,
    blas_single_thread,
    init_params,
)
from engine.schedules import LearningRateSchedule, make_schedule
from engine.training import (
    EXPLOSION_FACTOR,
    POLL_EVERY_BATCHES,
    HistoryPoint,
    StopReason,
    TrainResult,
    train,
    validated_splits,
)

Array = np.ndarray
Which = Literal["train", "test"]
OutcomeStatus = Literal["succeeded", "failed", "cancelled"]
Stats = tuple[Array, Array]  # per network: summed cross-entropy (K,) float64, hits (K,)

# np.dot's C function without the __array_function__ dispatch layer (many calls an epoch)
_dot = getattr(np.dot, "_implementation", np.dot)


@dataclass
class ConfigurationOutcome:
    """How one configuration ended. `result` is set when it succeeded, `error` when it failed;
    `history` holds the points recorded before it ended, whatever the ending."""

    index: int
    status: OutcomeStatus
    result: TrainResult | None = None
    error: EngineError | None = None
    history: list[HistoryPoint] = field(default_factory=list)
    seconds: float = 0.0  # from the start of its pack (or single run) to its end


# -- the packed network ------------------------------------------------------------------------


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


def _isolate(values: Array, column_owner: Array, failed: set[int]) -> None:
    """Zero the columns of every network with a non-finite value in `values` (m, width) and add
    those networks to `failed`; one sum when everything is finite."""
    if math.isfinite(float(np.add.reduce(values, axis=None))):
        return
    bad_columns = ~np.isfinite(values).all(axis=0)
    if not bad_columns.any():
        return  # the sum overflowed, the values did not
    networks = np.unique(column_owner[bad_columns])
    values[:, np.isin(column_owner, networks)] = 0
    failed.update(int(k) for k in networks)


class PackedWorkspace:
    """Buffers for passes over at most `rows` examples, and a gradient accumulator."""

    def __init__(self, network: PackedNetwork, rows: int) -> None:
        dtype = network.dtype
        self.network = network
        self.rows = rows
        self.activations = [np.empty((rows, width), dtype=dtype) for width in network.widths]
        self.deltas = [np.empty((rows, width), dtype=dtype) for width in network.widths]
        self.scratch = [np.empty((rows, width), dtype=dtype) for width in network.widths]
        self.ones = np.ones(rows, dtype=dtype)
        self.grad = np.empty_like(network.params)  # flat, laid out like params
        self.block_grad = np.empty_like(network.params)
        self._plans: dict[int, _PackedPlan] = {}

    def plan(self, m: int) -> _PackedPlan:
        plan = self._plans.get(m)
        if plan is None:
            plan = self._plans[m] = _PackedPlan(self, m)
        return plan

    # -- whole arrays, block by block ----------------------------------------------------------

    def summed_gradient(
        self, X_in: Array, targets: Array, y: Array | None, failed: set[int]
    ) -> tuple[Array, Stats | None]:
        """Sum over the rows of every network's CE gradient (flat, like params; what lands on
        the padding is left there: every step gives the padding a rate of 0); with labels y,
        also the per-network stats of the same forward pass (the parameters before the step).
        `targets`: see `_PackedPlan.output_delta`. Networks whose values are not finite are
        added to `failed` (their columns zeroed so that they reach no other network)."""
        n = X_in.shape[0]
        network = self.network
        stats: Stats | None = None
        if y is not None:
            stats = (np.zeros(network.n_networks), np.zeros(network.n_networks, dtype=np.int64))
        if n <= self.rows:  # one block (the usual case for small data): no slicing
            plan = self.plan(n)
            plan.forward(X_in, failed)
            if stats is not None and y is not None:
                plan.add_logit_stats(y, stats)
            plan.output_delta(targets)
            plan.backward(X_in, self.grad, failed)
            return self.grad, stats
        for start in range(0, n, self.rows):
            stop = min(start + self.rows, n)
            plan = self.plan(stop - start)
            X_block = X_in[start:stop]
            plan.forward(X_block, failed)
            if stats is not None and y is not None:
                plan.add_logit_stats(y[start:stop], stats)
            plan.output_delta(targets[..., start:stop])
            plan.backward(X_block, self.grad if start == 0 else self.block_grad, failed)
            if start:
                np.add(self.grad, self.block_grad, out=self.grad)
        return self.grad, stats

    def cross_entropy_and_correct(self, X_in: Array, y: Array) -> Stats:
        """Per network (summed CE (K,), hits (K,)); CE is NaN for a network whose values were
        not finite."""
        network = self.network
        stats = (np.zeros(network.n_networks), np.zeros(network.n_networks, dtype=np.int64))
        failed: set[int] = set()
        n = X_in.shape[0]
        for start in range(0, n, self.rows):
            stop = min(start + self.rows, n)
            plan = self.plan(stop - start)
            plan.forward(X_in[start:stop], failed)
            plan.add_logit_stats(y[start:stop], stats)
        if failed:
            stats[0][sorted(failed)] = math.nan
        return stats


# A product of a later layer's forward: (by np.dot?, left, right, out, bias), out = left @ right
_Product = tuple[bool, Array, Array, Array, Array]
# A later layer's backward: (check, products (inputs.T, delta, dW, db, W.T, input delta),
# inputs' activation A, input delta, scratch) for the derivative
_BackwardStep = tuple[
    "_Check | None", list[tuple[Array, Array, Array, Array, Array, Array]], Array, Array, Array
]


class _Check:
    """A finiteness check of an array before it meets a block-diagonal matrix: one dot with
    ones when every value is finite; else the guilty networks' columns are zeroed."""

    def __init__(self, values: Array, column_owner: Array) -> None:
        self.values = values  # (m, width), its columns owned by networks
        self.column_owner = column_owner
        contiguous = values if values.flags.c_contiguous else values.T
        if not contiguous.flags.c_contiguous:
            raise ValueError("a checked array must be contiguous (either way)")
        self.flat = contiguous.reshape(-1)  # a view of the same memory
        self.ones = np.ones_like(self.flat)

    def isolate(self, failed: set[int]) -> None:
        if not math.isfinite(_dot(self.flat, self.ones)):
            _isolate(self.values, self.column_owner, failed)


class _PackedPlan:
    """Forward and backward over one block of m rows, every view prepared once.

    The logits are class-major, (C, K, m): `logits[c]` holds every network's class c, so work
    per class runs over contiguous rows; `logits_flat` is the same memory as (C*K, m), the
    output columns' order (row c*K + k: network k, class c).
    """

    def __init__(self, workspace: PackedWorkspace, m: int) -> None:
        network = workspace.network
        K, C, dtype = network.n_networks, network.n_classes, network.dtype
        self.network = network
        self.activate = FORWARD[network.activation]
        self.backward_activation = BACKWARD[network.activation]
        self.activations = [A[:m] for A in workspace.activations]  # (m, Σh) each
        self.deltas = [D[:m] for D in workspace.deltas]
        self.scratch = [S[:m] for S in workspace.scratch]
        self.ones = workspace.ones[:m]
        self.logits = np.empty((C, K, m), dtype=dtype)
        self.logits_flat = self.logits.reshape(C * K, m)
        self.scratch_logits = np.empty((C, K, m), dtype=dtype)
        self.row_stat = np.empty((1, K, m), dtype=dtype)
        self.row_flat = self.row_stat[0]  # (K, m)
        self.classes = list(self.logits)  # (K, m) each
        self.scratch_classes = list(self.scratch_logits)
        self.by_columns = C <= MAX_CLASSES_BY_COLUMNS
        self.pick = (np.arange(K)[:, None], np.arange(m)[None, :])
        self.binary = C == 2
        self.flat_first = network.depth == 1  # the first layer gives the logits
        # Forward of each later layer: the activations to activate (and check, when they meet
        # a diagonal matrix), then its products (dot?, left, right, out, bias).
        self.forward_steps: list[tuple[Array, _Check | None, list[_Product]]] = []
        for later in network.later:
            last = later.index == network.depth - 1
            A = self.activations[later.index - 1]  # (m, Σ fan_in)
            check = None
            if later.diagonal and network.guarded:
                check = _Check(A, network.unit_owner[later.index - 1])
            products: list[_Product] = []
            if later.diagonal:
                matrix = later.matrix(network.params)
                if last:  # (C*K, m) = W.T @ A.T: the logits, class-major
                    products.append(
                        (True, matrix[:-1].T, A.T, self.logits_flat, matrix[-1][:, None])
                    )
                else:
                    out = self.activations[later.index]
                    products.append((True, A, matrix[:-1], out, matrix[-1]))
            else:
                for k, block in enumerate(later.blocks(network.params)):
                    inputs = A[:, later.inputs[k]]
                    if last:
                        out = self.logits[:, k, :]  # (C, m), strided
                        products.append((False, block[:-1].T, inputs.T, out, block[-1][:, None]))
                    else:
                        out = self.activations[later.index][:, later.outputs[k]]
                        products.append((False, inputs, block[:-1], out, block[-1]))
            self.forward_steps.append((A, check, products))
        self.backward_into = {
            id(workspace.grad): self._backward_steps(workspace.grad),
            id(workspace.block_grad): self._backward_steps(workspace.block_grad),
        }

    def _backward_steps(self, grad: Array) -> tuple[Array, list[_BackwardStep]]:
        """For a gradient vector: the first layer's view and, last layer first, each later
        layer's check, products (A.T, delta, dW view, db view, W.T, input delta view) and its
        inputs' activation and delta (for the derivative)."""
        network = self.network
        steps: list[_BackwardStep] = []
        for later in reversed(network.later):
            last = later.index == network.depth - 1
            A = self.activations[later.index - 1]
            previous = self.deltas[later.index - 1]  # (m, Σ fan_in)
            check = None
            products: list[tuple[Array, Array, Array, Array, Array, Array]] = []
            if later.diagonal:
                matrix, out = later.matrix(network.params), later.matrix(grad)
                delta = self.logits_flat.T if last else self.deltas[later.index]
                if network.guarded:
                    owner = network.output_owner if last else network.unit_owner[later.index]
                    check = _Check(delta, owner)
                products.append((A.T, delta, out[:-1], out[-1], matrix[:-1].T, previous))
            else:
                for k, (block, out) in enumerate(
                    zip(later.blocks(network.params), later.blocks(grad), strict=True)
                ):
                    delta = (
                        self.logits[:, k, :].T
                        if last
                        else self.deltas[later.index][:, later.outputs[k]]
                    )
                    inputs = later.inputs[k]
                    products.append(
                        (
                            A[:, inputs].T,
                            delta,
                            out[:-1],
                            out[-1],
                            block[:-1].T,
                            previous[:, inputs],
                        )
                    )
            steps.append((check, products, A, previous, self.scratch[later.index - 1]))
        return network.first_layer(grad), steps

    def forward(self, X_in: Array, failed: set[int]) -> None:
        """Logits of a block of inputs (m, G*(d+1)); hidden outputs kept."""
        first = self.network.first
        if self.flat_first:
            _dot(first.T, X_in.T, out=self.logits_flat)  # (C*K, m), class-major
            return
        _dot(X_in, first, out=self.activations[0])
        activate = self.activate
        for A, check, products in self.forward_steps:
            activate(A)
            if check is not None:
                check.isolate(failed)
            for dot, left, right, out, bias in products:
                if dot:
                    _dot(left, right, out=out)
                else:
                    np.matmul(left, right, out=out)
                np.add(out, bias, out=out)

    def output_delta(self, targets: Array) -> None:
        """logits <- softmax per network - Y, in place (the summed CE's gradient wrt the logits).
        `targets`: for C = 2 the indicator of class 1, (1, 1 or K, m); else one-hot (C, 1 or K,
        m). For C = 2 the softmax is P1 = 1/(1 + exp(z0 - z1)), P0 = 1 - P1, as in
        engine.network."""
        if self.binary:
            p1 = self.row_flat
            column_0, column_1 = self.classes
            np.subtract(column_0, column_1, out=p1)
            np.exp(p1, out=p1)  # overflow to inf gives P1 = 0, as it should
            np.add(p1, 1.0, out=p1)
            np.divide(1.0, p1, out=p1)
            np.subtract(p1, targets[0], out=column_1)
            np.negative(column_1, out=column_0)
            return
        logits = self.logits
        self._class_max()
        np.subtract(logits, self.row_stat, out=logits)
        np.exp(logits, out=logits)
        self._class_sum(logits, self.classes, self.row_flat)
        np.divide(logits, self.row_stat, out=logits)
        np.subtract(logits, targets, out=logits)

    def _class_max(self) -> None:
        """row_flat <- each network's largest logit for each row (K, m)."""
        if not self.by_columns:
            np.maximum.reduce(self.logits, axis=0, out=self.row_flat)
            return
        classes = self.classes
        np.maximum(classes[0], classes[1], out=self.row_flat)
        for values in classes[2:]:
            np.maximum(self.row_flat, values, out=self.row_flat)

    def _class_sum(self, values: Array, classes: list[Array], out: Array) -> None:
        """out <- the sums over the classes of values (C, K, m), whose class rows are classes."""
        if not self.by_columns:
            np.add.reduce(values, axis=0, out=out)
            return
        np.add(classes[0], classes[1], out=out)
        for row in classes[2:]:
            np.add(out, row, out=out)

    def backward(self, X_in: Array, grad: Array, failed: set[int]) -> None:
        """The block's SUMMED CE gradient into `grad` (the workspace's grad or block_grad),
        given P - Y in the logits; networks with non-finite deltas are isolated and added to
        `failed`."""
        grad_first, steps = self.backward_into[id(grad)]
        if self.flat_first:
            _dot(X_in.T, self.logits_flat.T, out=grad_first)
            return
        ones = self.ones
        for check, products, A, previous, scratch in steps:
            if check is not None:
                check.isolate(failed)
            for inputs_t, delta, out_weights, out_bias, weights_t, delta_in in products:
                _dot(inputs_t, delta, out=out_weights)  # (fan_in, fan_out)
                _dot(ones, delta, out=out_bias)
                if delta_in.flags.c_contiguous:
                    _dot(delta, weights_t, out=delta_in)  # (m, fan_in)
                else:
                    np.matmul(delta, weights_t, out=delta_in)
            self.backward_activation(A, previous, scratch)
        _dot(X_in.T, self.deltas[0], out=grad_first)

    def add_logit_stats(self, y: Array, stats: Stats) -> None:
        """Add the block's per-network summed CE and argmax hits (from the last forward's
        logits) to `stats`; leaves the logits shifted by their maximum (softmax unchanged)."""
        if self.binary:
            # CE = log(1 + exp(z_other - z_y)) = logaddexp(0, ±(z1 - z0)); class 1 wins ties
            # to class 0, as argmax does
            margin = self.scratch_classes[0]
            np.subtract(self.classes[1], self.classes[0], out=margin)  # (K, m)
            stats[1][:] += np.count_nonzero((margin > 0) == y, axis=1)
            np.multiply(margin, 1 - 2 * y, out=margin)
            np.logaddexp(0.0, margin, out=margin)
            stats[0][:] += margin.sum(axis=1, dtype=np.float64)
            return
        logits = self.logits
        stats[1][:] += np.count_nonzero(logits.argmax(axis=0) == y, axis=1)
        # CE_km = log sum_c exp(z_ckm - max_km) - (z_ykm - max_km)
        self._class_max()
        np.subtract(logits, self.row_stat, out=logits)
        picked = logits[y, self.pick[0], self.pick[1]]  # (K, m)
        exps = np.exp(logits, out=self.scratch_logits)
        sums = np.empty_like(self.row_flat)  # (K, m)
        self._class_sum(exps, self.scratch_classes, sums)
        np.log(sums, out=sums)
        stats[0][:] += sums.sum(axis=1, dtype=np.float64) - picked.sum(axis=1, dtype=np.float64)


# -- the packed optimizer ----------------------------------------------------------------------


class _PackedOptimizer:
    """engine.optimizers' steps for every network at once: per-parameter learning rates (and
    momentum), the same floating-point operations in the same order."""

    def __init__(self, hp: Hyperparameters, network: PackedNetwork, momentum: float | Array):
        size, dtype = network.params.size, network.dtype
        self.kind = hp.optimizer
        self.owner = network.owner
        self.momentum = momentum
        self.beta_1, self.beta_2, self.epsilon = hp.beta_1, hp.beta_2, hp.epsilon
        self.steps_taken = 0
        self._step = np.zeros(size, dtype=dtype)
        self.state: list[Array] = []
        if self.kind in ("momentum", "nesterov"):
            self.velocity = np.zeros(size, dtype=dtype)
            self.state.append(self.velocity)
        if self.kind == "nesterov":
            self._lookahead = np.zeros(size, dtype=dtype)
        if self.kind == "adam":
            self.first_moment = np.zeros(size, dtype=dtype)
            self.second_moment = np.zeros(size, dtype=dtype)
            self.state += [self.first_moment, self.second_moment]
            self._factor = np.zeros(size, dtype=dtype)

    def zero(self, entries: Array) -> None:
        for array in self.state:
            array[entries] = 0

    def update(
        self, params: Array, grads: Array, rate_vector: Array, rates: Array, scale: float = 1.0
    ) -> None:
        """One step along g = scale * grads (scale other than 1: Adam only); `rate_vector` (P,)
        holds each parameter's rate, `rates` (K + 1,) each network's (padding last, 0)."""
        self.steps_taken += 1
        step = self._step
        if self.kind == "sgd":
            np.multiply(grads, rate_vector, out=step)
            params -= step
        elif self.kind == "momentum":
            self.velocity *= self.momentum
            np.multiply(grads, rate_vector, out=step)
            self.velocity -= step
            params += self.velocity
        elif self.kind == "nesterov":
            self.velocity *= self.momentum
            np.multiply(grads, rate_vector, out=step)  # lr * g
            self.velocity -= step
            np.multiply(self.velocity, self.momentum, out=self._lookahead)
            self._lookahead -= step  # mu * v - lr * g
            params += self._lookahead
        else:
            t = self.steps_taken
            self.first_moment *= self.beta_1
            np.multiply(grads, (1.0 - self.beta_1) * scale, out=step)
            self.first_moment += step
            self.second_moment *= self.beta_2
            np.multiply(grads, grads, out=step)
            step *= (1.0 - self.beta_2) * scale * scale
            self.second_moment += step
            # lr / ((1 - b1^t) c) * m / (sqrt(v) + eps / c), c = 1/sqrt(1 - b2^t), as Adam does
            c = 1.0 / math.sqrt(1.0 - self.beta_2**t)
            np.sqrt(self.second_moment, out=step)
            step += self.epsilon / c
            np.divide(self.first_moment, step, out=step)
            np.take(np.divide(rates, (1.0 - self.beta_1**t) * c), self.owner, out=self._factor)
            step *= self._factor
            params -= step


# -- training one pack ---------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


class _Member:
    """One configuration inside a pack."""

    def __init__(self, index: int, hp: Hyperparameters, rng: np.random.Generator) -> None:
        self.index = index
        self.hp = hp
        self.rng = rng
        self.schedule: LearningRateSchedule = make_schedule(hp)
        self.history: list[HistoryPoint] = []
        self.explosion_limit = math.inf
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.best_params: Array | None = None  # its entries of params at best_epoch
        self.wait = 0
        self.rate = hp.learning_rate  # this epoch's
        self.pending: tuple[int, float] | None = None  # full batch: (epoch, rate) to record
        self.outcome: ConfigurationOutcome | None = None
        self.active = True  # until it has an outcome


RecordCallback = Callable[[int, HistoryPoint], None]
FinishCallback = Callable[[ConfigurationOutcome], None]


class _PackTrainer:
    def __init__(
        self,
        members: list[_Member],
        network: PackedNetwork,
        data: _PackData,
        on_record: RecordCallback | None,
        on_finish: FinishCallback | None,
        should_stop: Callable[[], bool] | None,
        clock: Callable[[], float],
        started: float,
        group_rngs: Sequence[np.random.Generator] = (),
    ) -> None:
        self.members = members
        self.group_rngs = list(group_rngs)  # minibatch: one shuffling generator per input group
        self.network = network
        self.data = data
        self.on_record = on_record
        self.on_finish = on_finish
        self.should_stop = should_stop
        self.clock = clock
        self.started = started
        K = network.n_networks
        first = members[0].hp
        self.batch_size = _effective_batch(first, data.n_train)
        self.full_batch = self.batch_size is None
        largest = max(data.n_train, data.n_test)
        self.workspace = PackedWorkspace(network, max(1, min(largest, network.block_rows())))
        self.train_input = network.tiled_input(data.X_train)  # (n, G*(d+1))
        self.test_input = network.tiled_input(data.X_test) if data.X_test is not None else None
        # targets by row: the class-1 indicator (1, n) for C = 2, else one-hot (C, n)
        self.row_targets = _row_targets(data.y_train, network.n_classes, network.dtype)
        self.targets = self.row_targets[:, None, :]  # (1 or C, 1, n): shared by every network
        momenta = [m.hp.momentum for m in members]
        momentum = self._per_parameter(momenta) if len(set(momenta)) > 1 else momenta[0]
        self.optimizer = _PackedOptimizer(first, network, momentum)
        self.rates = np.zeros(K + 1)  # per network, padding last (0)
        self.rate_vector = np.zeros_like(network.params)
        self.l1 = np.array([m.hp.l1 for m in members])
        self.l2 = np.array([m.hp.l2 for m in members])
        self._buffer = np.empty_like(network.params)
        self._penalty_vectors: dict[int, tuple[Array | None, Array | None]] = {}
        self._sgd_cache: dict[int, tuple[Array, Array | None]] = {}
        self._failed: set[int] = set()  # networks isolated in this step's passes
        self.plain_sgd = first.optimizer == "sgd" and not self.l1.any()
        self.penalized = bool(self.l1.any() or self.l2.any())
        self.n_active = len(members)
        self.ones = np.ones_like(network.params)
        # metrics of the parameters after an epoch: (which, epoch) -> (losses (K,), accuracies)
        self.cache: dict[tuple[Which, int], tuple[Array, Array]] = {}
        self.penalty_cache: dict[int, Array] = {}  # epoch -> each network's penalty
        self.n_train = data.n_train
        self.scheduled = [k for k, m in enumerate(members) if m.hp.lr_schedule != "constant"]
        # full batch without a test split: plateau watches the training loss, which the next
        # epoch's forward pass gives for free (as train does)
        self.waiting: list[int] = []  # members with a pending record
        self.plateau_on_train = [
            k
            for k, m in enumerate(members)
            if m.schedule.needs_monitor and data.X_test is None and self.full_batch
        ]

    # -- per-parameter vectors ----------------------------------------------------------------

    def _per_parameter(self, values: Sequence[float]) -> Array:
        """(P,) with each network's value on its parameters and 0 on the padding."""
        per_network = np.array([*values, 0.0])
        return per_network[self.network.owner].astype(self.network.dtype)

    def _penalty_vectors_for(self, n: int) -> tuple[Array | None, Array | None]:
        """(l1/n, l2/n) on each network's weights, 0 elsewhere; None when all zero."""
        cached = self._penalty_vectors.get(n)
        if cached is None:
            mask = self.network.weight_mask
            l1 = self._per_parameter([v / n for v in self.l1]) * mask if self.l1.any() else None
            l2 = self._per_parameter([v / n for v in self.l2]) * mask if self.l2.any() else None
            cached = self._penalty_vectors[n] = (l1, l2)
        return cached

    def _sgd_vectors(self, n: int) -> tuple[Array, Array | None]:
        """Plain SGD's (lr/n per parameter, decay 1 - lr*l2/n on weights or None), as
        engine.optimizers.SGD.step computes them; cached until a rate changes."""
        cached = self._sgd_cache.get(n)
        if cached is None:
            rates = self.rates[:-1].tolist()
            scaled = self._per_parameter([rate / n for rate in rates])
            decay = None
            if self.l2.any():
                shrink = [rate * l2 / n for rate, l2 in zip(rates, self.l2.tolist(), strict=True)]
                decay = 1.0 - self.network.weight_mask * self._per_parameter(shrink)
            cached = self._sgd_cache[n] = (scaled, decay)
        return cached

    def _set_rates(self, epochs_completed: int, members: Sequence[int]) -> None:
        changed = False
        for k in members:
            member = self.members[k]
            if not member.active:
                continue
            member.rate = member.schedule.rate(epochs_completed)
            if self.rates[k] != member.rate:
                self.rates[k] = member.rate
                changed = True
        if changed:
            np.take(self.rates.astype(self.network.dtype), self.network.owner, out=self.rate_vector)
            self._sgd_cache = {}

    # -- metrics ------------------------------------------------------------------------------

    def _store(self, which: Which, epoch: int, stats: Stats) -> tuple[Array, Array]:
        n = self.n_train if which == "train" else self.data.n_test
        penalties = self.penalty_cache.get(epoch)
        if penalties is None:  # the same parameters for both splits
            penalties = self.network.penalties(self.n_train, self.l1, self.l2)
            self.penalty_cache = {epoch: penalties}
        result = self.cache[(which, epoch)] = (stats[0] / n + penalties, stats[1] / n)
        return result

    def _metrics(self, which: Which, epoch: int) -> tuple[Array, Array]:
        """Every network's (loss (K,), accuracy (K,)) on a split, for the current parameters
        (those after `epoch`); computed once."""
        cached = self.cache.get((which, epoch))
        if cached is not None:
            return cached
        X_in = self.train_input if which == "train" else self.test_input
        y = self.data.y_train if which == "train" else self.data.y_test
        assert X_in is not None and y is not None
        return self._store(which, epoch, self.workspace.cross_entropy_and_correct(X_in, y))

    def _checked(self, k: int, which: Which, epoch: int) -> tuple[float, float] | None:
        """Member k's (loss, accuracy) on a split after `epoch`, or None after failing it as
        train would."""
        member = self.members[k]
        losses, accuracies = self._metrics(which, epoch)
        value = float(losses[k])
        learning_rate = member.hp.learning_rate
        if not math.isfinite(value):
            detail = (
                f"the {'training' if which == 'train' else 'test'} loss is not finite; lower "
                f"the learning rate (now {learning_rate:g}) or standardize the features"
            )
            self._fail(k, TrainingDiverged(epoch, detail))
            return None
        if which == "train" and value > member.explosion_limit:
            detail = (
                f"the training loss {value:.4g} exceeded {EXPLOSION_FACTOR:g} x max(initial "
                f"loss, log(n_classes)) = {member.explosion_limit:.4g}; lower the learning "
                f"rate (now {learning_rate:g})"
            )
            self._fail(k, TrainingDiverged(epoch, detail))
            return None
        return value, float(accuracies[k])

    def _point(self, k: int, epoch: int, learning_rate: float) -> HistoryPoint | None:
        train = self._checked(k, "train", epoch)
        if train is None:
            return None
        test: tuple[float | None, float | None] = (None, None)
        if self.data.X_test is not None:
            checked = self._checked(k, "test", epoch)
            if checked is None:
                return None
            test = checked
        return HistoryPoint(epoch, train[0], train[1], test[0], test[1], learning_rate)

    def _record(self, k: int, epoch: int, learning_rate: float) -> bool:
        """Append member k's point for `epoch`; False if a check failed it instead."""
        point = self._point(k, epoch, learning_rate)
        if point is None:
            return False
        member = self.members[k]
        member.history.append(point)
        if self.on_record is not None:
            self.on_record(member.index, point)
        return True

    # -- members ending -----------------------------------------------------------------------

    def _retire(self, k: int, outcome: ConfigurationOutcome) -> None:
        """Record k's outcome; zero and freeze its block."""
        self.members[k].outcome = outcome
        self.members[k].active = False
        self.n_active -= 1
        entries = self.network.entries[k]
        self.network.params[entries] = 0
        self.optimizer.zero(entries)
        self.rates[k] = 0.0
        self.rate_vector[entries] = 0
        self._sgd_cache = {}
        if self.on_finish is not None:
            self.on_finish(outcome)

    def _fail(self, k: int, error: EngineError) -> None:
        member = self.members[k]
        seconds = self.clock() - self.started
        outcome = ConfigurationOutcome(
            member.index, "failed", error=error, history=member.history, seconds=seconds
        )
        self._retire(k, outcome)

    def _restored_metrics(self, k: int, restored: Array) -> dict[str, float | None]:
        """Final metrics of network k with the parameters `restored` (laid out like params),
        evaluated alone."""
        member = self.members[k]
        hp = member.hp
        weights, biases = self.network.network_weights(k, restored)
        alone = PackedNetwork([self.network.layer_sizes[k]], hp.activation, self.network.dtype)
        alone.set_network(0, weights, biases)
        data = self.data
        workspace = PackedWorkspace(
            alone, max(1, min(max(data.n_train, data.n_test), alone.block_rows()))
        )
        penalty = float(alone.penalties(data.n_train, np.array([hp.l1]), np.array([hp.l2]))[0])
        metrics: dict[str, float | None] = {"test_loss": None, "test_accuracy": None}
        splits: list[tuple[str, Array | None, Array | None, int]] = [
            ("train", data.X_train, data.y_train, data.n_train),
            ("test", data.X_test, data.y_test, data.n_test),
        ]
        for which, X, y, n in splits:
            if X is None or y is None:
                continue
            ce_sums, correct = workspace.cross_entropy_and_correct(X, y)
            metrics[f"{which}_loss"] = float(ce_sums[0]) / n + penalty
            metrics[f"{which}_accuracy"] = int(correct[0]) / n
        return metrics

    def _succeed(self, k: int, epoch: int, reason: StopReason) -> None:
        member = self.members[k]
        final = self._point(k, epoch, 0.0)
        if final is None:
            return
        metrics: dict[str, float | None] = {
            "train_loss": final.train_loss,
            "train_accuracy": final.train_accuracy,
            "test_loss": final.test_loss,
            "test_accuracy": final.test_accuracy,
        }
        params = self.network.params
        if member.best_params is not None and member.best_epoch not in (None, epoch):
            params = params.copy()
            params[self.network.entries[k]] = member.best_params
            metrics = self._restored_metrics(k, params)
        weights, biases = self.network.network_weights(k, params)
        result = TrainResult(
            weights=weights,
            biases=biases,
            history=member.history,
            epochs_run=epoch,
            stop_reason=reason,
            best_epoch=member.best_epoch,
            metrics=metrics,
        )
        seconds = self.clock() - self.started
        outcome = ConfigurationOutcome(
            member.index, "succeeded", result=result, history=member.history, seconds=seconds
        )
        self._retire(k, outcome)

    # -- the loop -----------------------------------------------------------------------------

    def _poll(self, epochs_completed: int) -> None:
        if self.should_stop is not None and self.should_stop():
            for k, member in enumerate(self.members):
                if member.active and member.pending is not None:  # still its parameters
                    self._record(k, *member.pending)
                    member.pending = None
            raise _Cancelled

    def _update(self, grad_sum: Array, n: int, epoch: int) -> None:
        """One optimizer step from the summed CE gradient over n rows, penalties included (the
        floating-point steps of engine.optimizers), then fail every network not finite."""
        params = self.network.params
        if self.plain_sgd:
            # w * (1 - lr*l2/n on weights) - (lr/n) * G
            scaled, decay = self._sgd_vectors(n)
            if decay is not None:
                params *= decay
            np.multiply(grad_sum, scaled, out=self._buffer)
            params -= self._buffer
        elif self.optimizer.kind == "adam" and not self.penalized:
            # g = grad_sum / n, folded into Adam's moment updates
            self.optimizer.update(params, grad_sum, self.rate_vector, self.rates, 1.0 / n)
        else:
            grad = grad_sum
            grad *= 1.0 / n
            l1, l2 = self._penalty_vectors_for(n)
            if l2 is not None:
                np.multiply(params, l2, out=self._buffer)
                grad += self._buffer
            if l1 is not None:
                np.sign(params, out=self._buffer)
                self._buffer *= l1
                grad += self._buffer
            self.optimizer.update(params, grad, self.rate_vector, self.rates)
        failed = self._failed
        if not math.isfinite(np.dot(params, self.ones)):  # the sum: NaN/inf-propagating
            failed.update(np.unique(self.network.owner[~np.isfinite(params)]).tolist())
        if failed:
            if len(self.members) in failed:  # an overflowing cross term on the padding: 0·inf
                params[self.network.padding_entries] = 0
                failed.discard(len(self.members))
            for k in sorted(failed):
                params[self.network.entries[k]] = 0
                if self.members[k].active:
                    detail = (
                        "a weight became NaN or infinite; lower the learning rate (this epoch "
                        f"used {self.members[k].rate:g})"
                    )
                    self._fail(k, TrainingDiverged(epoch, detail))
            failed.clear()

    def _full_batch_epoch(self, epoch: int) -> None:
        waiting = self.waiting
        want_stats = bool(waiting) or bool(self.plateau_on_train)
        grad_sum, stats = self.workspace.summed_gradient(
            self.train_input,
            self.targets,
            self.data.y_train if want_stats else None,
            self._failed,
        )
        if stats is not None:  # the metrics of the parameters after epoch - 1
            self._store("train", epoch - 1, stats)
            if epoch > 1:
                for k in self.plateau_on_train:
                    if self.members[k].active:
                        checked = self._checked(k, "train", epoch - 1)
                        if checked is not None:
                            self.members[k].schedule.observe(checked[0])
            for k in list(waiting):
                member = self.members[k]
                if member.active and member.pending is not None:
                    self._record(k, *member.pending)
                member.pending = None
            waiting.clear()
        self._set_rates(epoch - 1, self.scheduled)
        self._update(grad_sum, self.n_train, epoch)

    def _minibatch_epoch(self, epoch: int) -> None:
        assert self.batch_size is not None
        network = self.network
        data = self.data
        size = self.batch_size
        self._set_rates(epoch - 1, self.scheduled)
        X_batch, targets_batch = self.batch_buffers
        d1 = network.n_features + 1
        orders = [rng.permutation(data.n_train) for rng in self.group_rngs]
        for index, start in enumerate(range(0, data.n_train, size)):
            if index and index % POLL_EVERY_BATCHES == 0:
                self._poll(epoch - 1)
            if network.n_groups == 1:
                rows = orders[0][start : start + size]
                m = rows.shape[0]
                np.take(data.X_train, rows, axis=0, out=X_batch[:m])
                targets_batch[:, 0, :m] = self.row_targets[:, rows]
            else:
                group_rows = [order[start : start + size] for order in orders]
                m = group_rows[0].shape[0]
                for g, rows in enumerate(group_rows):
                    X_batch[:m, g * d1 : (g + 1) * d1] = data.X_train[rows]
                labels = data.y_train[np.stack(group_rows)][self.group_of]  # (K, m)
                self._group_targets(targets_batch[..., :m], labels)
            grad_sum, _ = self.workspace.summed_gradient(
                X_batch[:m], targets_batch[..., :m], None, self._failed
            )
            self._update(grad_sum, m, epoch)

    def _group_targets(self, targets: Array, labels: Array) -> None:
        """Each network's targets for its own rows into (1 or C, K, m), from labels (K, m)."""
        if self.network.n_classes == 2:
            np.equal(labels, 1, out=targets[0], casting="unsafe")
            return
        K, m = labels.shape
        targets.fill(0)
        targets[labels, np.arange(K)[:, None], np.arange(m)[None, :]] = 1

    def _after_epoch(self, k: int, epoch: int) -> None:
        """What train does after an epoch, for member k."""
        member = self.members[k]
        hp = member.hp
        stopping = False
        reason: StopReason = "completed"
        if hp.early_stopping:
            checked = self._checked(k, "test", epoch)
            if checked is None:
                return
            if checked[0] < member.best_loss:
                member.best_loss, member.best_epoch, member.wait = checked[0], epoch, 0
                member.best_params = self.network.params[self.network.entries[k]]
            else:
                member.wait += 1
                if member.wait >= hp.patience:
                    stopping, reason = True, "early_stopping"
        if member.schedule.needs_monitor and k not in self.plateau_on_train:
            which: Which = "test" if self.data.X_test is not None else "train"
            monitored = self._checked(k, which, epoch)
            if monitored is None:
                return
            member.schedule.observe(monitored[0])
        if stopping or epoch == hp.epochs:
            if self._record(k, epoch, member.rate):
                self._succeed(k, epoch, reason)
            return
        if epoch % hp.record_every == 0:
            if self.full_batch:
                member.pending = (epoch, member.rate)
                self.waiting.append(k)
            else:
                self._record(k, epoch, member.rate)

    def run(self) -> None:
        network = self.network
        if self.batch_size is not None:
            rows = self.batch_size
            width = network.n_groups * (network.n_features + 1)
            networks = network.n_networks if network.n_groups > 1 else 1
            self.batch_buffers = (
                np.empty((rows, width), dtype=network.dtype),
                np.empty((self.row_targets.shape[0], networks, rows), dtype=network.dtype),
            )
            self.group_of = np.array(network.input_groups)
        losses, _ = self._metrics("train", 0)
        for k, member in enumerate(self.members):
            if not math.isfinite(float(losses[k])):
                detail = (
                    "the initial network's loss on X_train is not finite (features too "
                    "large?); standardize the features"
                )
                self._fail(k, InvalidInput(detail))
                continue
            member.explosion_limit = EXPLOSION_FACTOR * max(
                float(losses[k]), math.log(network.n_classes)
            )
        self._set_rates(0, range(len(self.members)))
        # members that need attention after every epoch, and the others' next epoch to look
        every_epoch = [
            k
            for k, m in enumerate(self.members)
            if m.hp.early_stopping or (m.schedule.needs_monitor and k not in self.plateau_on_train)
        ]
        last_epoch = max(member.hp.epochs for member in self.members)
        try:
            for epoch in range(1, last_epoch + 1):
                if not self.n_active:
                    break
                self._poll(epoch - 1)
                if len(self.cache) > 4:
                    for key in [key for key in self.cache if key[1] < epoch - 1]:
                        del self.cache[key]
                if self.full_batch:
                    self._full_batch_epoch(epoch)
                else:
                    self._minibatch_epoch(epoch)
                for k, member in enumerate(self.members):
                    if member.active and (
                        k in every_epoch
                        or epoch % member.hp.record_every == 0
                        or epoch == member.hp.epochs
                    ):
                        self._after_epoch(k, epoch)
        except _Cancelled:
            seconds = self.clock() - self.started
            for member in self.members:
                if member.active:
                    member.outcome = ConfigurationOutcome(
                        member.index, "cancelled", history=member.history, seconds=seconds
                    )


@dataclass(frozen=True)
class _PackData:
    """Validated data in the training dtype: X arrays carry the ones column."""

    X_train: Array  # (n_train, d + 1)
    y_train: Array  # (n_train,)
    X_test: Array | None  # (n_test, d + 1)
    y_test: Array | None
    n_classes: int

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return 0 if self.X_test is None else int(self.X_test.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1]) - 1


def _prepared(
    hp: Hyperparameters,
    X_train: object,
    y_train: object,
    n_classes: int,
    X_test: object | None,
    y_test: object | None,
) -> _PackData:
    """The data checked and converted exactly as train checks it (InvalidInput otherwise)."""
    checked = hp.model_copy(update={"early_stopping": False})
    train_split, test_split = validated_splits(checked, X_train, y_train, n_classes, X_test, y_test)
    return _PackData(
        train_split.X_aug,
        train_split.y,
        test_split.X_aug if test_split else None,
        test_split.y if test_split else None,
        int(n_classes),
    )


def _row_targets(y: Array, n_classes: int, dtype: DTypeLike) -> Array:
    """(1, n) indicator of class 1 when n_classes = 2, else one-hot (n_classes, n)."""
    if n_classes == 2:
        return (y == 1).astype(dtype).reshape(1, -1)
    Y = np.zeros((n_classes, y.shape[0]), dtype=dtype)
    Y[y, np.arange(y.shape[0])] = 1
    return Y


def _input_groups(members: list[_Member], minibatch: bool) -> list[int]:
    """Group index per member: equal generator states share a group (full batch: one)."""
    if not minibatch:
        return [0] * len(members)
    states: list[str] = []
    groups = []
    for member in members:
        state = repr(member.rng.bit_generator.state)
        if state not in states:
            states.append(state)
        groups.append(states.index(state))
    return groups


def train_pack(
    hps: Sequence[Hyperparameters],
    X_train: Array,
    y_train: Array,
    n_classes: int,
    X_test: Array | None = None,
    y_test: Array | None = None,
    *,
    indices: Sequence[int] | None = None,
    on_record: RecordCallback | None = None,
    on_finish: FinishCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[ConfigurationOutcome]:
    """Train configurations that `pack_key` lets share a pack, as one network.

    Returns one outcome per configuration in the order given (`indices` names them, default
    0..K-1). `on_record(index, point)` follows each history point and `on_finish(outcome)`
    each configuration that succeeded or failed, as it happens. `should_stop` is polled like
    train polls it; a cancelled pack returns its unfinished configurations as "cancelled".
    """
    if not hps:
        return []
    started = clock()
    data = _prepared(hps[0], X_train, y_train, n_classes, X_test, y_test)
    keys = {pack_key(hp, data.n_train) for hp in hps}
    if len(keys) != 1 or None in keys:
        raise InvalidInput(
            "these configurations cannot share a pack: depth, activation, optimizer, batch "
            "size, dtype and Adam's constants must match, and max_seconds be unset"
        )
    names = list(indices) if indices is not None else list(range(len(hps)))
    dtype = np.dtype(hps[0].dtype)
    members: list[_Member] = []
    outcomes: dict[int, ConfigurationOutcome] = {}
    sizes: list[list[int]] = []
    initial: list[tuple[list[Array], list[Array]]] = []
    for index, hp in zip(names, hps, strict=True):
        if hp.early_stopping and data.X_test is None:
            error = InvalidInput(
                "early_stopping monitors the test loss: pass X_test and y_test, or set "
                "early_stopping to false"
            )
            outcomes[index] = ConfigurationOutcome(index, "failed", error=error)
            if on_finish is not None:
                on_finish(outcomes[index])
            continue
        rng = np.random.default_rng(hp.seed)
        layer_sizes = [data.n_features, *hp.hidden_layers, data.n_classes]
        initial.append(init_params(layer_sizes, hp.init, dtype, rng))
        sizes.append(layer_sizes)
        members.append(_Member(index, hp, rng))
    if members:
        batch = _effective_batch(members[0].hp, data.n_train)
        minibatch = batch is not None
        groups = _input_groups(members, minibatch)
        rows = batch or min(data.n_train, PASS_ROWS)
        network = PackedNetwork(sizes, members[0].hp.activation, dtype, groups, rows)
        for k, (weights, biases) in enumerate(initial):
            network.set_network(k, weights, biases)
        group_rngs: list[np.random.Generator] = []
        if minibatch:
            first_of_group: dict[int, np.random.Generator] = {}
            for member, group in zip(members, groups, strict=True):
                first_of_group.setdefault(group, member.rng)
            group_rngs = [first_of_group[g] for g in range(network.n_groups)]
        trainer = _PackTrainer(
            members,
            network,
            data,
            on_record,
            on_finish,
            should_stop,
            clock,
            started,
            group_rngs,
        )
        # BLAS threads cost more than they give on small products (and oversubscribe the
        # machine's other workers): one thread unless a product is big, as train decides.
        shapes = [network.first.shape] + [
            shape for later in network.later for shape in later.shapes
        ]
        largest = trainer.workspace.rows * max(r * c for r, c in shapes)
        # overflow and NaN are caught by the divergence checks, not reported as warnings
        with np.errstate(all="ignore"), blas_single_thread(largest < BLAS_THREADS_MIN_MACS):
            trainer.run()
        for member in members:
            assert member.outcome is not None
            outcomes[member.index] = member.outcome
    return [outcomes[index] for index in names]


# -- planning: which configurations share a pack, and which worker trains what -----------------

PackKey = tuple[Hashable, ...]

# A rough model of one core's time, to decide packing and to balance workers (seconds),
# measured on the tutorial's networks (2 vCPUs, busy): ~38 us an epoch for 1 hidden unit alone,
# ~140 us for 50 (~13 ns a hidden unit and row, all told), a pack of 6 of them ~150 us.
STEP_SECONDS = 30e-6  # fixed cost of one forward + backward + update, whatever the sizes
PACK_STEP_SECONDS = 12e-6  # more for a pack of several (finiteness checks, wider products)
NETWORK_STEP_SECONDS = 1.5e-6  # per network and later layer in a pack
EPOCH_SECONDS = 3e-6  # per configuration and epoch: bookkeeping
MAC_SECONDS = 0.05e-9  # one multiply-add of a matrix product
ACTIVATION_SECONDS: dict[str, float] = {  # one unit on one row: activation and derivative
    "tanh": 12e-9,
    "sigmoid": 13e-9,
    "relu": 2e-9,
    "leaky_relu": 4e-9,
    "identity": 0.5e-9,
}
EXP_SECONDS = 4e-9  # one exponential of the softmax


def _effective_batch(hp: Hyperparameters, n_train: int) -> int | None:
    return hp.batch_size if hp.batch_size is not None and hp.batch_size < n_train else None


def pack_key(hp: Hyperparameters, n_train: int) -> PackKey | None:
    """Configurations with equal keys can train in one pack; None: this one trains alone.

    Depth, activation, optimizer, effective batch size, dtype and Adam's constants must match;
    learning rate, schedule, l1, l2, momentum, init, seed, epochs, record_every, early stopping
    and the widths may differ. A time budget (max_seconds) is measured per run: alone.
    """
    if hp.max_seconds is not None:
        return None
    adam = (hp.beta_1, hp.beta_2, hp.epsilon) if hp.optimizer == "adam" else None
    return (
        len(hp.hidden_layers),
        hp.activation,
        hp.optimizer,
        _effective_batch(hp, n_train),
        hp.dtype,
        adam,
    )


@dataclass(frozen=True)
class DataShape:
    """What the cost model needs to know about the data."""

    n_train: int
    n_test: int
    n_features: int
    n_classes: int


def estimate_seconds(hps: Sequence[Hyperparameters], shape: DataShape) -> float:
    """Rough single-core seconds to train `hps` as one pack (or alone, for one)."""
    first = hps[0]
    sizes = [[shape.n_features, *hp.hidden_layers, shape.n_classes] for hp in hps]
    batch = _effective_batch(first, shape.n_train)
    rows = batch or shape.n_train
    steps = math.ceil(shape.n_train / rows)
    groups = len({hp.seed for hp in hps}) if batch is not None and len(hps) > 1 else 1
    macs = sum(r * c for r, c in packed_shapes(sizes, groups))
    units = sum(sum(hp.hidden_layers) for hp in hps)
    row_forward = (
        MAC_SECONDS * macs
        + ACTIVATION_SECONDS[first.activation] * units
        + EXP_SECONDS * shape.n_classes * len(hps)
    )
    row_step = row_forward + 2 * MAC_SECONDS * macs  # the backward pass: two matmuls a layer
    every = min(hp.record_every for hp in hps)
    monitored = any(hp.early_stopping or hp.lr_schedule == "plateau" for hp in hps)
    evaluated = shape.n_test / every + (shape.n_test if monitored else 0)
    if batch is not None:
        evaluated += shape.n_train / every
    step = STEP_SECONDS
    if len(hps) > 1:
        step += PACK_STEP_SECONDS
        step += NETWORK_STEP_SECONDS * len(hps) * (len(first.hidden_layers) or 1)
    per_epoch = steps * (step + rows * row_step) + EPOCH_SECONDS * len(hps)
    return max(hp.epochs for hp in hps) * (per_epoch + evaluated * row_forward)


def partition(
    hps: Sequence[Hyperparameters], shape: DataShape, parts: int = 1
) -> list[list[list[int]]]:
    """Split configurations into at most `parts` shares, each a list of packs (lists of indices
    into hps), balancing the estimated time. A configuration joins a pack only when the model
    says that beats training it alone. Empty shares are dropped."""
    if parts < 1:
        raise InvalidInput(f"parts must be >= 1, got {parts}")
    alone = [estimate_seconds([hp], shape) for hp in hps]
    keys = [pack_key(hp, shape.n_train) for hp in hps]
    shares: list[list[list[int]]] = [[] for _ in range(parts)]
    totals = [0.0] * parts
    for index in sorted(range(len(hps)), key=lambda i: (-alone[i], i)):
        best: tuple[float, int, int | None, float] | None = None  # total, share, pack, cost
        for share_index, share in enumerate(shares):
            cost, target = alone[index], None
            for pack_index, pack in enumerate(share):
                if keys[index] is None or keys[pack[0]] != keys[index]:
                    continue
                before = estimate_seconds([hps[i] for i in pack], shape)
                added = estimate_seconds([hps[i] for i in [*pack, index]], shape) - before
                if added < cost:
                    cost, target = added, pack_index
            total = totals[share_index] + cost
            if best is None or total < best[0]:
                best = (total, share_index, target, cost)
        assert best is not None
        _total, share_index, target, cost = best
        if target is None:
            shares[share_index].append([index])
        else:
            shares[share_index][target].append(index)
        totals[share_index] += cost
    return [[sorted(pack) for pack in share] for share in shares if share]


def plan_packs(hps: Sequence[Hyperparameters], shape: DataShape) -> list[list[int]]:
    """The packs one worker trains `hps` in (lists of indices; single ones train alone)."""
    shares = partition(hps, shape, 1)
    return shares[0] if shares else []


# -- training many -------------------------------------------------------------------------------


def _train_alone(
    index: int,
    hp: Hyperparameters,
    data: tuple[Array, Array, int, Array | None, Array | None],
    on_record: RecordCallback | None,
    should_stop: Callable[[], bool] | None,
    clock: Callable[[], float],
) -> ConfigurationOutcome:
    history: list[HistoryPoint] = []

    def record(point: HistoryPoint) -> None:
        history.append(point)
        if on_record is not None:
            on_record(index, point)

    started = clock()
    X_train, y_train, n_classes, X_test, y_test = data
    try:
        result = train(
            hp,
            X_train,
            y_train,
            n_classes,
            X_test,
            y_test,
            on_record=record,
            should_stop=should_stop,
            clock=clock,
        )
    except TrainingCancelled:
        return ConfigurationOutcome(index, "cancelled", history=history, seconds=clock() - started)
    except (TrainingDiverged, InvalidInput) as error:
        seconds = clock() - started
        return ConfigurationOutcome(index, "failed", error=error, history=history, seconds=seconds)
    seconds = clock() - started
    return ConfigurationOutcome(
        index, "succeeded", result=result, history=result.history, seconds=seconds
    )


def train_many(
    hps: Sequence[Hyperparameters],
    X_train: Array,
    y_train: Array,
    n_classes: int,
    X_test: Array | None = None,
    y_test: Array | None = None,
    *,
    packs: Sequence[Sequence[int]] | None = None,
    on_record: RecordCallback | None = None,
    on_finish: FinishCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[ConfigurationOutcome]:
    """Train every configuration, packed as `packs` says (default: `plan_packs`), one pack after
    another. A configuration that fails (diverged, invalid) fails alone; after a cancellation
    (should_stop) finished configurations keep their outcomes and the rest are "cancelled".
    Returns one outcome per configuration, in the order of `hps`. Data that train would refuse
    raises InvalidInput before anything trains."""
    if not hps:
        return []
    prepared = _prepared(hps[0], X_train, y_train, n_classes, X_test, y_test)
    if packs is None:
        shape = DataShape(
            prepared.n_train, prepared.n_test, prepared.n_features, prepared.n_classes
        )
        packs = plan_packs(hps, shape)
    if sorted(i for pack in packs for i in pack) != list(range(len(hps))):
        raise InvalidInput(f"packs must name every configuration 0..{len(hps) - 1} once")
    data = (X_train, y_train, n_classes, X_test, y_test)
    outcomes: dict[int, ConfigurationOutcome] = {}
    cancelled = False
    for pack in packs:
        cancelled = cancelled or (should_stop is not None and should_stop())
        if cancelled:
            for index in pack:
                outcomes[index] = ConfigurationOutcome(index, "cancelled")
            continue
        if len(pack) == 1:
            outcome = _train_alone(pack[0], hps[pack[0]], data, on_record, should_stop, clock)
            if on_finish is not None and outcome.status != "cancelled":
                on_finish(outcome)
            results = [outcome]
        else:
            results = train_pack(
                [hps[i] for i in pack],
                X_train,
                y_train,
                n_classes,
                X_test,
                y_test,
                indices=list(pack),
                on_record=on_record,
                on_finish=on_finish,
                should_stop=should_stop,
                clock=clock,
            )
        for outcome in results:
            outcomes[outcome.index] = outcome
            cancelled = cancelled or outcome.status == "cancelled"
    return [outcomes[i] for i in range(len(hps))]
