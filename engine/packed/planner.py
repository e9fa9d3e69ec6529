"""Planning: which configurations share a pack, and which worker trains what."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from engine.errors import InvalidInput
from engine.features import input_width
from engine.hyperparameters import Hyperparameters
from engine.packed.network import packed_shapes
from engine.training import effective_batch_size

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
# L-BFGS iterations (alone only), measured on the tutorial's [3] and [50] networks under load
# and scaled by the load's factor on sgd epochs (3.1x): 1.12 loss evaluations an iteration,
# ~50 us of line-search bookkeeping and ~12 us per curvature pair in the two-loop recursion.
LBFGS_EVALUATIONS = 1.12
LBFGS_ITERATION_SECONDS = 50e-6
LBFGS_PAIR_SECONDS = 12e-6


def pack_key(hp: Hyperparameters, n_train: int) -> PackKey | None:
    """Configurations with equal keys can train in one pack; None: this one trains alone.

    Input features (one map: one input), depth, activation, optimizer, effective batch size,
    dtype and Adam's constants must match; learning rate, schedule, l1, l2, momentum, init,
    seed, epochs, record_every, early stopping and the widths may differ. A time budget
    (max_seconds) is measured per run: alone.
    L-BFGS (optimizer lbfgs) trains alone: its line search takes a different number of
    evaluations per configuration and iteration, so configurations cannot share passes.
    """
    if hp.max_seconds is not None or hp.optimizer == "lbfgs":
        return None
    adam = (hp.beta_1, hp.beta_2, hp.epsilon) if hp.optimizer == "adam" else None
    return (
        tuple(hp.input_features),
        len(hp.hidden_layers),
        hp.activation,
        hp.optimizer,
        effective_batch_size(hp, n_train),
        hp.dtype,
        adam,
    )


@dataclass(frozen=True)
class DataShape:
    """What the cost model needs to know about the data."""

    n_train: int
    n_test: int
    n_features: int  # raw: each configuration's input map gives its network's input width
    n_classes: int


def estimate_seconds(hps: Sequence[Hyperparameters], shape: DataShape) -> float:
    """Rough single-core seconds to train `hps` as one pack (or alone, for one)."""
    first = hps[0]
    sizes = [
        [input_width(hp.input_features, shape.n_features), *hp.hidden_layers, shape.n_classes]
        for hp in hps
    ]
    batch = effective_batch_size(first, shape.n_train)
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
    if first.optimizer == "lbfgs":  # alone; epochs bound its iterations (tolerance may end it)
        per_epoch = (
            LBFGS_EVALUATIONS * per_epoch
            + LBFGS_ITERATION_SECONDS
            + LBFGS_PAIR_SECONDS * first.lbfgs_memory
        )
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
