"""Forward and backward passes of a packed network, block by block of rows, with the
finiteness checks that keep one network's NaN from reaching the others."""

from __future__ import annotations

import math

import numpy as np

from engine.activations import ACTIVATIONS, DERIVATIVES
from engine.network import MAX_CLASSES_BY_COLUMNS, PassBuffers, dot, reduce_classes
from engine.packed.network import PackedNetwork

Array = np.ndarray
# Per network: summed cross-entropy (K,) float64 and hits (K,); regression: summed squared error
# and summed absolute error per network and output, (K, C) float64 each.
Stats = tuple[Array, Array]


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


class PackedWorkspace(PassBuffers["_PackedPlan"]):
    """PassBuffers of a packed network."""

    def __init__(self, network: PackedNetwork, rows: int) -> None:
        super().__init__(network.params, network.widths, rows)
        self.network = network

    def new_stats(self) -> Stats:
        """Zero stats to add blocks to."""
        K, C = self.network.n_networks, self.network.n_classes
        if self.network.task == "regression":
            return np.zeros((K, C)), np.zeros((K, C))
        return np.zeros(K), np.zeros(K, dtype=np.int64)

    def _new_plan(self, m: int) -> _PackedPlan:
        return _PackedPlan(self, m)

    # -- whole arrays, block by block ----------------------------------------------------------

    def summed_gradient(
        self, X_in: Array, targets: Array, y: Array | None, failed: set[int]
    ) -> tuple[Array, Stats | None]:
        """Sum over the rows of every network's CE gradient (flat, like params; what lands on
        the padding is left there: every step gives the padding a rate of 0); with labels y,
        also the per-network stats of the same forward pass (the parameters before the step);
        regression's y: the targets again, laid out like `targets`, rows last.
        `targets`: see `_PackedPlan.output_delta`. Networks whose values are not finite are
        added to `failed` (their columns zeroed so that they reach no other network)."""
        n = X_in.shape[0]
        stats: Stats | None = None
        if y is not None:
            stats = self.new_stats()
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
                plan.add_logit_stats(y[..., start:stop], stats)
            plan.output_delta(targets[..., start:stop])
            plan.backward(X_block, self.grad if start == 0 else self.block_grad, failed)
            if start:
                np.add(self.grad, self.block_grad, out=self.grad)
        return self.grad, stats

    def cross_entropy_and_correct(self, X_in: Array, y: Array) -> Stats:
        """Per network (summed CE (K,), hits (K,)), or for regression (summed squared error,
        summed absolute error) (K, C) against the targets y (C, 1 or K, n); the first is NaN for
        a network whose values were not finite."""
        stats = self.new_stats()
        failed: set[int] = set()
        n = X_in.shape[0]
        for start in range(0, n, self.rows):
            stop = min(start + self.rows, n)
            plan = self.plan(stop - start)
            plan.forward(X_in[start:stop], failed)
            plan.add_logit_stats(y[..., start:stop], stats)
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
        if not math.isfinite(dot(self.flat, self.ones)):
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
        self.activate = ACTIVATIONS[network.activation]
        self.backward_activation = DERIVATIVES[network.activation]
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
        self.regression = network.task == "regression"
        self.binary = C == 2 and not self.regression
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
            dot(first.T, X_in.T, out=self.logits_flat)  # (C*K, m), class-major
            return
        dot(X_in, first, out=self.activations[0])
        activate = self.activate
        for A, check, products in self.forward_steps:
            activate(A)
            if check is not None:
                check.isolate(failed)
            for by_dot, left, right, out, bias in products:
                if by_dot:
                    dot(left, right, out=out)
                else:
                    np.matmul(left, right, out=out)
                np.add(out, bias, out=out)

    def output_delta(self, targets: Array) -> None:
        """logits <- softmax per network - Y, in place (the summed CE's gradient wrt the logits).
        `targets`: for C = 2 the indicator of class 1, (1, 1 or K, m); else one-hot (C, 1 or K,
        m). For C = 2 the softmax is P1 = 1/(1 + exp(z0 - z1)), P0 = 1 - P1, as in
        engine.network. Regression: logits - Y with targets (C, 1 or K, m) (identity output,
        half the squared error)."""
        if self.regression:
            np.subtract(self.logits, targets, out=self.logits)
            return
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
        classes = self.classes if self.by_columns else None
        reduce_classes(np.maximum, self.logits, 0, classes, self.row_flat, self.row_flat)

    def _class_sum(self, values: Array, classes: list[Array], out: Array) -> None:
        """out <- the sums over the classes of values (C, K, m), whose class rows are classes."""
        reduce_classes(np.add, values, 0, classes if self.by_columns else None, out, out)

    def backward(self, X_in: Array, grad: Array, failed: set[int]) -> None:
        """The block's SUMMED CE gradient into `grad` (the workspace's grad or block_grad),
        given P - Y in the logits; networks with non-finite deltas are isolated and added to
        `failed`."""
        grad_first, steps = self.backward_into[id(grad)]
        if self.flat_first:
            dot(X_in.T, self.logits_flat.T, out=grad_first)
            return
        ones = self.ones
        for check, products, A, previous, scratch in steps:
            if check is not None:
                check.isolate(failed)
            for inputs_t, delta, out_weights, out_bias, weights_t, delta_in in products:
                dot(inputs_t, delta, out=out_weights)  # (fan_in, fan_out)
                dot(ones, delta, out=out_bias)
                if delta_in.flags.c_contiguous:
                    dot(delta, weights_t, out=delta_in)  # (m, fan_in)
                else:
                    np.matmul(delta, weights_t, out=delta_in)
            self.backward_activation(A, previous, scratch)
        dot(X_in.T, self.deltas[0], out=grad_first)

    def add_logit_stats(self, y: Array, stats: Stats) -> None:
        """Add the block's per-network summed CE and argmax hits (from the last forward's
        logits) to `stats`; leaves the logits shifted by their maximum (softmax unchanged).
        Regression: summed squared and absolute errors (K, C) against targets y (C, 1 or K, m),
        the logits unchanged."""
        if self.regression:
            errors = np.subtract(self.logits, y, out=self.scratch_logits)  # (C, K, m)
            stats[0][:] += np.einsum("ckm,ckm->kc", errors, errors, dtype=np.float64)
            stats[1][:] += np.abs(errors, out=errors).sum(axis=2, dtype=np.float64).T
            return
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
