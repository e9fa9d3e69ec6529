"""Forward and backward passes, the loss, and parameter initialisation.

Parameter layout. All parameters live in ONE flat, contiguous vector `Network.params`, so an
optimizer updates the whole network with a handful of NumPy calls. Layer l (fan_in -> fan_out)
owns the block `layers[l]`, a (fan_in + 1, fan_out) view: rows [:fan_in] are the weights W, the
last row is the bias b. Gradients use the same layout. The input carries a trailing column of
ones, so the first layer is one matmul [X, 1] @ [[W], [b]] and its gradient [X, 1].T @ delta
yields dW and db together; hidden activations stay contiguous (elementwise work on strided
views is slow) and later layers add their bias explicitly.

Loss (what `loss_and_gradients` differentiates), for n examples. Classification, K >= 2
classes:

    L = mean_i CE(softmax(z_i), y_i) + l2/(2n) * sum ||W||^2 + l1/n * sum |W|

over weights only, never biases. CE is computed by log-sum-exp (finite for any finite logits) and
the fused softmax + cross-entropy output delta is (P - Y)/n. For K = 2 the softmax is computed as
P1 = 1/(1 + exp(z0 - z1)), P0 = 1 - P1 (the same function, fewer operations).

Regression, K >= 1 real-valued outputs, identity output:

    L = 1/(2n) * sum_i sum_k (z_ik - y_ik)^2 + the same penalties

with output delta (Z - Y)/n: half the squared error summed over outputs, averaged over examples.
This is the function scikit-learn's MLPRegressor differentiates (its backpropagation starts from
the same delta and adds alpha/n * W), so `l2` means its `alpha` and both take the same steps; for
one output it is also the value MLPRegressor reports (its `squared_loss` divides by the number of
outputs as well, which its gradient does not). A minibatch uses its own n, so the gradient of a
batch loss is the gradient of that batch's mean loss.

Large inputs are processed in blocks of rows (`block_rows`), forward and backward per block,
accumulating the gradient, so no (n, hidden) array is ever held for the whole data set. Inputs of
at least PARALLEL_MIN_ELEMENTS activations are split into two fixed halves run on two threads
(NumPy releases the GIL); the split depends only on the shapes, so results are reproducible.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from itertools import pairwise
from typing import Any, Generic, TypeVar, cast

import numpy as np
from numpy.typing import DTypeLike

from engine.activations import ACTIVATIONS, DERIVATIVES, softmax
from engine.errors import InvalidInput, check_deadline
from engine.hyperparameters import Activation, Init, Task
from engine.optimizers import Penalty

Array = np.ndarray
PlanT = TypeVar("PlanT")

# Rows per block: the widest (rows, width) activation takes about BLOCK_BYTES, so the two or
# three buffers an operation touches stay in the 1 MiB L2 cache. Measured on a float32 gradient
# pass over 100k rows x [100] (one thread): 128 KiB 50.8 ms, 192 KiB 48.3, 384 KiB 46.2,
# 576 KiB 46.3 (fewer blocks, fewer Python-level calls, until the cache runs out).
BLOCK_BYTES = 384 * 1024
MIN_BLOCK_ROWS = 64
MAX_CLASSES_BY_COLUMNS = 8
# Split a pass over two threads from this many (rows x widest layer) activations on.
PARALLEL_MIN_ELEMENTS = 1 << 20

# BLAS (OpenBLAS) splits matrix products of more than ~2^18 multiply-adds over its own threads.
# For the products of small networks that costs more than it gains, and on a busy machine (or
# beside our own pass threads) a thread waiting for a descheduled partner slows a product by
# 10-40x. So training pins BLAS to one thread unless its largest product reaches this size.
BLAS_THREADS_MIN_MACS = 1 << 24

# np.dot's C function without the __array_function__ dispatch layer (~0.3 us a call; several
# calls per layer and epoch). Falls back to np.dot where NumPy does not expose it.
dot = getattr(np.dot, "_implementation", np.dot)


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
    """Rows per block for a network of these widths."""
    return max(MIN_BLOCK_ROWS, BLOCK_BYTES // (max(layer_sizes[1:]) * itemsize))


def with_ones_column(X: Array, dtype: DTypeLike) -> Array:
    """[X, 1] in `dtype`: (n, n_features + 1), C-contiguous."""
    X_aug = np.empty((X.shape[0], X.shape[1] + 1), dtype=dtype)
    X_aug[:, :-1] = X
    X_aug[:, -1] = 1
    return X_aug


def targets_for(y: Array, n_classes: int, dtype: DTypeLike, task: Task = "classification") -> Array:
    """What the output delta subtracts: one-hot (n, K), or for K = 2 the column [y == 1] (n, 1);
    for regression the targets themselves (n, K), C-contiguous in `dtype`."""
    if task == "regression":
        return np.ascontiguousarray(np.asarray(y).reshape(y.shape[0], -1), dtype=dtype)
    if n_classes == 2:
        return (y == 1).astype(dtype).reshape(-1, 1)
    Y = np.zeros((y.shape[0], n_classes), dtype=dtype)
    Y[np.arange(y.shape[0]), y] = 1
    return Y


# What a pass reports with its gradient or on its own: classification (summed cross-entropy,
# number of argmax hits); regression (summed squared error (K,), summed absolute error (K,)),
# per output column, float64. `data_loss` turns either into the loss's summed data term.
Stats = tuple[Any, Any]


def data_loss(stats: Stats, task: Task) -> float:
    """The summed data term of L from a pass's stats: summed CE, or half the summed squared
    error over every output."""
    if task == "regression":
        return 0.5 * float(np.sum(stats[0]))
    return float(stats[0])


def add_stats(total: Stats | None, stats: Stats) -> Stats:
    """Two passes' stats over disjoint rows, summed (the first may be None: nothing yet)."""
    if total is None:
        return stats
    return total[0] + stats[0], total[1] + stats[1]


_blas_controller: Any = None


def largest_product(layer_sizes: Sequence[int], rows: int) -> int:
    """Multiply-adds of the biggest matrix product in a pass over `rows` rows at a time."""
    return rows * max((fan_in + 1) * fan_out for fan_in, fan_out in pairwise(layer_sizes))


def blas_single_thread(needed: bool) -> AbstractContextManager[object]:
    """While active, BLAS runs on the calling thread only (when `needed` and threadpoolctl,
    a scikit-learn dependency, is installed)."""
    global _blas_controller
    if not needed:
        return nullcontext()
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - installed with scikit-learn
            return nullcontext()
        _blas_controller = ThreadpoolController()
    return cast(AbstractContextManager[object], _blas_controller.limit(limits=1, user_api="blas"))


def reduce_classes(
    ufunc: np.ufunc,
    values: Array,
    axis: int,
    classes: list[Array] | None,
    out: Array,
    reduced_out: Array,
) -> None:
    """`ufunc` (maximum, add) over the classes of `values`, whose class axis is `axis`: with
    `classes` (the classes' views, for few classes: NumPy reduces a short axis slowly, ~per
    row) one elementwise call per class into `out`, shaped like a view; else one reduce into
    `reduced_out` (the same memory without the class axis)."""
    if classes is None:
        ufunc.reduce(values, axis=axis, out=reduced_out)
        return
    ufunc(classes[0], classes[1], out=out)
    for values_c in classes[2:]:
        ufunc(out, values_c, out=out)


class PassBuffers(ABC, Generic[PlanT]):
    """Preallocated buffers for passes over at most `rows` examples through hidden layers of
    these widths (activations, deltas, scratch: (rows, width) each), a ones vector, and two
    gradient vectors laid out like `params` (the sum and one block's); plus the bound plan for
    each block size. One per thread."""

    def __init__(self, params: Array, widths: Sequence[int], rows: int) -> None:
        dtype = params.dtype
        self.rows = rows
        self.activations = [np.empty((rows, width), dtype=dtype) for width in widths]
        self.deltas = [np.empty((rows, width), dtype=dtype) for width in widths]
        self.scratch = [np.empty((rows, width), dtype=dtype) for width in widths]
        self.ones = np.ones(rows, dtype=dtype)
        self.grad = np.empty_like(params)  # flat, laid out like params
        self.block_grad = np.empty_like(params)
        self._plans: dict[int, PlanT] = {}

    @abstractmethod
    def _new_plan(self, m: int) -> PlanT: ...

    def plan(self, m: int) -> PlanT:
        """The bound forward/backward for a block of m <= rows examples (cached)."""
        plan = self._plans.get(m)
        if plan is None:
            plan = self._plans[m] = self._new_plan(m)
        return plan


class Workspace(PassBuffers["_BlockPlan"]):
    """PassBuffers of one network, with its logits' buffers."""

    def __init__(self, network: Network, rows: int) -> None:
        super().__init__(network.params, network.layer_sizes[1:-1], rows)
        dtype = network.dtype
        self.network = network
        self.logits = np.empty((rows, network.n_outputs), dtype=dtype)
        self.logits_scratch = np.empty((rows, network.n_outputs), dtype=dtype)
        self.row_stat = np.empty((rows, 1), dtype=dtype)
        self.row_index = np.arange(rows)
        self.grad_layers = network.layer_views(self.grad)
        self.block_grad_layers = network.layer_views(self.block_grad)

    def _new_plan(self, m: int) -> _BlockPlan:
        return _BlockPlan(self, m)


class _BlockPlan:
    """Forward and backward over one block of m rows, every view and operand bound once
    (the per-epoch cost of small networks is the number of Python-level calls)."""

    def __init__(self, workspace: Workspace, m: int) -> None:
        network = workspace.network
        self.activate = ACTIVATIONS[network.activation]
        self.backward_activation = DERIVATIVES[network.activation]
        activations = [A[:m] for A in workspace.activations]  # (m, h) each
        self.logits = workspace.logits[:m]  # (m, K)
        self.logits_scratch = workspace.logits_scratch[:m]
        self.row_stat = workspace.row_stat[:m]  # (m, 1)
        self.row_flat = self.row_stat[:, 0]  # (m,)
        self.row_index = workspace.row_index[:m]
        self.regression = network.task == "regression"
        self.binary = network.n_classes == 2 and not self.regression
        self.column_0 = self.logits[:, 0:1]
        self.column_1 = self.logits[:, 1:2]
        # NumPy reduces along a short last axis slowly (~per row): for few classes, row maxima
        # and sums are elementwise ops over (m, 1) column views instead.
        self.by_columns = network.n_classes <= MAX_CLASSES_BY_COLUMNS
        self.logit_columns = [self.logits[:, k : k + 1] for k in range(network.n_classes)]
        self.scratch_columns = [self.logits_scratch[:, k : k + 1] for k in range(network.n_classes)]
        self.first_layer = network.layers[0]  # (n_features + 1, h1)
        self.first_out = activations[0] if activations else self.logits
        # Layers 1..L-1: (input activation, W, b, output buffer).
        outputs = [*activations[1:], self.logits] if activations else []
        self.later = list(
            zip(activations, network.weights[1:], network.biases[1:], outputs, strict=True)
        )
        # Backward steps from the output down to layer 1, per gradient accumulator:
        # (A.T, dW out, db out, W.T, delta of A, scratch, A).
        deltas = [D[:m] for D in workspace.deltas]
        scratch = [S[:m] for S in workspace.scratch]
        ones = workspace.ones[:m]
        self.ones = ones
        self.backward_steps = []
        self.first_grad = []
        for grad_layers in (workspace.grad_layers, workspace.block_grad_layers):
            steps = [
                (A.T, grad_layers[index][:-1], grad_layers[index][-1], W_t, D, S, A)
                for index, (A, W_t, D, S) in enumerate(
                    zip(activations, network.weights_t[1:], deltas, scratch, strict=True),
                    start=1,
                )
            ]
            self.backward_steps.append(steps[::-1])
            self.first_grad.append(grad_layers[0])

    def forward(self, X_aug: Array) -> Array:
        """Logits (m, K) of a block [X, 1] (m, n_features + 1); hidden outputs kept for backward."""
        Z = dot(X_aug, self.first_layer, self.first_out)
        activate = self.activate
        for A, W, b, out in self.later:
            activate(A)
            dot(A, W, out)
            Z = np.add(out, b, out=out)
        return Z

    def output_delta(self, targets: Array) -> Array:
        """logits <- softmax(logits) - Y in place (the summed CE's gradient wrt the logits);
        for regression logits - Y (the summed half squared error's)."""
        logits = self.logits
        if self.regression:
            return np.subtract(logits, targets, out=logits)
        if self.binary:  # P1 = 1/(1 + exp(z0 - z1)); delta1 = P1 - y1; delta0 = -delta1
            p1 = self.row_stat
            np.subtract(self.column_0, self.column_1, out=p1)
            np.exp(p1, out=p1)  # overflow to inf gives P1 = 0, as it should
            np.add(p1, 1.0, out=p1)
            np.divide(1.0, p1, out=p1)
            np.subtract(p1, targets, out=self.column_1)
            np.negative(self.column_1, out=self.column_0)
            return logits
        self.row_max()
        np.subtract(logits, self.row_stat, out=logits)
        np.exp(logits, out=logits)
        self.row_sum(logits, self.logit_columns)
        np.divide(logits, self.row_stat, out=logits)
        np.subtract(logits, targets, out=logits)
        return logits

    def row_max(self) -> None:
        """row_stat <- the row maxima of the logits (m, 1)."""
        columns = self.logit_columns if self.by_columns else None
        reduce_classes(np.maximum, self.logits, 1, columns, self.row_stat, self.row_flat)

    def row_sum(self, values: Array, columns: list[Array]) -> None:
        """row_stat <- the row sums of values (m, K), whose column views are `columns`."""
        by_columns = columns if self.by_columns else None
        reduce_classes(np.add, values, 1, by_columns, self.row_stat, self.row_flat)

    def gradient(
        self, X_aug: Array, targets: Array, y: Array | None, accumulator: int
    ) -> Stats | None:
        """The block's SUMMED CE gradient into the workspace's grad (accumulator 0) or
        block_grad (1): forward, output delta and backward. With labels y (regression: the
        targets again), also the block's stats from the same forward pass."""
        self.forward(X_aug)
        if self.regression:
            delta = self.output_delta(targets)  # (m, K): the errors
            stats = None if y is None else error_stats(delta, self.logits_scratch)
        else:
            stats = None if y is None else self.logit_stats(y)
            delta = self.output_delta(targets)  # (m, K)
        backward_activation = self.backward_activation
        ones = self.ones
        for A_t, dW, db, W_t, previous, scratch, A in self.backward_steps[accumulator]:
            dot(A_t, delta, dW)  # (fan_in, fan_out)
            dot(ones, delta, db)  # (fan_out,)
            dot(delta, W_t, previous)  # (m, fan_in)
            backward_activation(A, previous, scratch)
            delta = previous
        dot(X_aug.T, delta, self.first_grad[accumulator])
        return stats

    def logit_stats(self, y: Array) -> Stats:
        """(summed CE, number of argmax hits) of the block from the logits of the last forward;
        regression: (summed squared error (K,), summed absolute error (K,)) against targets y.

        Leaves the logits shifted by their row maximum (softmax does not change).
        """
        logits = self.logits
        if self.regression:
            errors = np.subtract(logits, y, out=self.logits_scratch)  # (m, K)
            return error_stats(errors, errors)
        correct = int(np.count_nonzero(logits.argmax(axis=1) == y))
        # CE_i = log sum_k exp(z_ik - max_i) - (z_iy - max_i)
        self.row_max()
        np.subtract(logits, self.row_stat, out=logits)
        picked = logits[self.row_index, y].sum(dtype=np.float64)
        exps = np.exp(logits, out=self.logits_scratch)
        self.row_sum(exps, self.scratch_columns)
        np.log(self.row_flat, out=self.row_flat)
        return float(self.row_flat.sum(dtype=np.float64)) - float(picked), correct


def error_stats(errors: Array, scratch: Array) -> Stats:
    """(summed squared error (K,), summed absolute error (K,)) of errors (m, K), per column, in
    float64; `scratch` (m, K) may be `errors` itself (then it is overwritten)."""
    squared = np.einsum("ij,ij->j", errors, errors, dtype=np.float64)  # (K,)
    absolute = np.abs(errors, out=scratch).sum(axis=0, dtype=np.float64)  # (K,)
    return squared, absolute


class Network:
    """A multilayer perceptron: hidden layers of one activation, a linear output, softmax for
    classification (`task`), identity for regression."""

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activation: Activation,
        dtype: DTypeLike,
        task: Task = "classification",
    ):
        self.layer_sizes = [int(size) for size in layer_sizes]
        if len(self.layer_sizes) < 2 or min(self.layer_sizes) < 1:
            raise InvalidInput(f"layer_sizes needs >= 2 positive widths, got {self.layer_sizes}")
        if activation not in ACTIVATIONS:
            raise InvalidInput(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.activation: Activation = activation
        self.dtype = np.dtype(dtype)
        self.task: Task = task
        self.n_outputs = self.layer_sizes[-1]
        self.n_classes = self.n_outputs  # classification's name for the output width
        self.params = np.zeros(sum((a + 1) * b for a, b in pairwise(self.layer_sizes)), self.dtype)
        self.layers = self.layer_views(self.params)  # (fan_in + 1, fan_out) each
        self.weights = [L[:-1] for L in self.layers]  # (fan_in, fan_out) views
        self.weights_t = [W.T for W in self.weights]  # (fan_out, fan_in) views
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

    def block_rows(self) -> int:
        return block_rows(self.layer_sizes, self.dtype.itemsize)

    def penalty(self, n: int, l1: float, l2: float) -> float:
        """l2/(2n) * sum W^2 + l1/n * sum |W| over weights, as a Python float."""
        total = 0.0
        for W in self.weights:
            if l2:
                total += l2 / (2 * n) * float(np.vdot(W, W))
            if l1:
                total += l1 / n * float(np.abs(W).sum(dtype=np.float64))
        return total


def _summed_gradient_range(
    workspace: Workspace, X_aug: Array, targets: Array, y: Array | None, start: int, stop: int
) -> tuple[Array, Stats | None]:
    """Sum over rows [start, stop) of the CE gradient, into workspace.grad, block by block;
    with labels y, also the stats of the same forward pass (the parameters before the step)."""
    step = workspace.rows
    total: Stats | None = None
    for block_start in range(start, stop, step):
        block_stop = min(block_start + step, stop)
        plan = workspace.plan(block_stop - block_start)
        first = block_start == start
        stats = plan.gradient(
            X_aug[block_start:block_stop],
            targets[block_start:block_stop],
            None if y is None else y[block_start:block_stop],
            0 if first else 1,
        )
        if not first:
            np.add(workspace.grad, workspace.block_grad, out=workspace.grad)
        if stats is not None:
            total = add_stats(total, stats)
    return workspace.grad, total


def _cross_entropy_range(
    workspace: Workspace, X_aug: Array, y: Array, start: int, stop: int
) -> Stats:
    step = workspace.rows
    total: Stats | None = None
    for block_start in range(start, stop, step):
        block_stop = min(block_start + step, stop)
        plan = workspace.plan(block_stop - block_start)
        plan.forward(X_aug[block_start:block_stop])
        total = add_stats(total, plan.logit_stats(y[block_start:block_stop]))
    assert total is not None  # stop > start
    return total


def _in_worker(function: Callable[..., object], *args: object) -> object:
    # NumPy's error state is per thread: overflow is handled by the caller's checks, not warned.
    with np.errstate(all="ignore"):
        return function(*args)


class Passes:
    """Blocked (and, for big inputs, two-threaded) gradient and loss passes over whole arrays.

    Owns the workspaces and the helper thread; call `close` when done (or use `with`).
    """

    def __init__(self, network: Network, max_rows: int, threads: bool = True) -> None:
        self.network = network
        self.threads = threads  # False: never split a pass (BLAS threads are in use)
        rows = max(1, min(max_rows, network.block_rows()))
        self.workspace = Workspace(network, rows)
        self._second: Workspace | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._widest = max(network.layer_sizes[1:])

    def __enter__(self) -> Passes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _split(self, n: int) -> int | None:
        """Row where the second thread's half starts (block aligned), or None: one thread."""
        rows = self.workspace.rows
        if not self.threads or n * self._widest < PARALLEL_MIN_ELEMENTS or n < 2 * rows:
            return None
        if self._executor is None:
            self._second = Workspace(self.network, rows)
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-pass")
        blocks = -(-n // rows)
        return -(-blocks // 2) * rows

    def summed_gradient(
        self, X_aug: Array, targets: Array, y: Array | None = None
    ) -> tuple[Array, Stats | None]:
        """Sum over all rows of the CE gradient (flat, laid out like params); with labels y,
        also (summed CE, argmax hits) of the same forward pass, i.e. of the current params."""
        n = X_aug.shape[0]
        workspace = self.workspace
        if n <= workspace.rows:  # one block: the small-data case, kept lean
            return workspace.grad, workspace.plan(n).gradient(X_aug, targets, y, 0)
        middle = self._split(n)
        if middle is None:
            return _summed_gradient_range(workspace, X_aug, targets, y, 0, n)
        assert self._executor is not None and self._second is not None
        pending = self._executor.submit(
            _in_worker, _summed_gradient_range, self._second, X_aug, targets, y, middle, n
        )
        grad, stats = _summed_gradient_range(self.workspace, X_aug, targets, y, 0, middle)
        second_grad, second_stats = cast(tuple[Array, Stats | None], pending.result())
        np.add(grad, second_grad, out=grad)
        if stats is None or second_stats is None:
            return grad, None
        return grad, add_stats(stats, second_stats)

    def cross_entropy_and_correct(self, X_aug: Array, y: Array) -> Stats:
        """The stats over all rows: (summed CE, argmax hits), or for regression (summed squared
        error (K,), summed absolute error (K,)) against the targets y (n, K)."""
        n = X_aug.shape[0]
        middle = self._split(n)
        if middle is None:
            return _cross_entropy_range(self.workspace, X_aug, y, 0, n)
        assert self._executor is not None and self._second is not None
        pending = self._executor.submit(
            _in_worker, _cross_entropy_range, self._second, X_aug, y, middle, n
        )
        first = _cross_entropy_range(self.workspace, X_aug, y, 0, middle)
        return add_stats(first, cast(Stats, pending.result()))

    def probabilities(self, X_aug: Array) -> Array:
        """Softmax outputs (n, K), the logits' softmax taken in float64, block by block; for
        regression the outputs themselves (n, K), float64."""
        n = X_aug.shape[0]
        out = np.empty((n, self.network.n_outputs), dtype=np.float64)
        regression = self.network.task == "regression"
        rows = self.workspace.rows
        for start in range(0, n, rows):
            check_deadline()  # a caller's engine.errors.deadline stops a long prediction here
            stop = min(start + rows, n)
            plan = self.workspace.plan(stop - start)
            out[start:stop] = plan.forward(X_aug[start:stop])
            if not regression:
                softmax(out[start:stop])
        return out


# -- functional front end: plain weights and biases in, plain arrays out --------------------


def _network_for(
    weights: Sequence[Array],
    biases: Sequence[Array],
    activation: Activation,
    task: Task = "classification",
) -> Network:
    if not weights or len(weights) != len(biases):
        raise InvalidInput(
            f"need as many weight matrices as bias vectors (>= 1), got {len(weights)} and "
            f"{len(biases)}"
        )
    sizes = [int(weights[0].shape[0])] + [int(W.shape[1]) for W in weights]
    network = Network(sizes, activation, weights[0].dtype, task)
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
    task: Task = "classification",
) -> float:
    """The mean loss L (see the module docstring) of the network on (X, y), summed in float64;
    y: class indices (n,), or for regression targets (n,) or (n, K)."""
    network = _network_for(weights, biases, activation, task)
    n = X.shape[0]
    labels = np.asarray(y)
    if task == "regression":
        labels = targets_for(labels, network.n_outputs, network.dtype, task)
    with Passes(network, n) as passes, np.errstate(all="ignore"):
        stats = passes.cross_entropy_and_correct(with_ones_column(X, network.dtype), labels)
    return data_loss(stats, task) / n + network.penalty(n, l1, l2)


def loss_and_gradients(
    weights: Sequence[Array],
    biases: Sequence[Array],
    activation: Activation,
    X: Array,
    y: Array,
    *,
    l1: float = 0.0,
    l2: float = 0.0,
    task: Task = "classification",
) -> tuple[float, list[Array], list[Array]]:
    """(L, dL/dW per layer, dL/db per layer) by backpropagation, the same code `train` runs."""
    network = _network_for(weights, biases, activation, task)
    n = X.shape[0]
    labels = np.asarray(y)
    with Passes(network, n) as passes, np.errstate(all="ignore"):
        grad_sum, _ = passes.summed_gradient(
            with_ones_column(X, network.dtype),
            targets_for(labels, network.n_outputs, network.dtype, task),
        )
        grad = grad_sum * (1.0 / n)
        penalty = Penalty(network.weight_mask, l1, l2)
        penalty.add_gradient(grad, network.params, n, np.empty_like(grad))
    layers = network.layer_views(grad)
    value = loss(weights, biases, activation, X, labels, l1=l1, l2=l2, task=task)
    return value, [L[:-1] for L in layers], [L[-1] for L in layers]


def predict_proba(
    weights: Sequence[Array], biases: Sequence[Array], activation: Activation, X: Array
) -> Array:
    """Softmax class probabilities (n, K), float64, by the training forward pass."""
    network = _network_for(weights, biases, activation)
    with Passes(network, X.shape[0]) as passes, np.errstate(all="ignore"):
        return passes.probabilities(with_ones_column(X, network.dtype))


def predict_values(
    weights: Sequence[Array], biases: Sequence[Array], activation: Activation, X: Array
) -> Array:
    """A regression network's outputs (n, K), float64, by the training forward pass."""
    network = _network_for(weights, biases, activation, "regression")
    with Passes(network, X.shape[0]) as passes, np.errstate(all="ignore"):
        return passes.probabilities(with_ones_column(X, network.dtype))
