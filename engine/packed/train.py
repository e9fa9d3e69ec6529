"""The entry points: `train_pack` trains configurations that can share a pack as one network,
`train_many` trains every configuration of a sweep, packed as planned, one pack after another;
each configuration ends as `engine.training.train` ends it alone."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from engine.errors import InvalidInput, TrainingCancelled, TrainingDiverged
from engine.hyperparameters import Hyperparameters
from engine.network import BLAS_THREADS_MIN_MACS, blas_single_thread, init_params
from engine.packed.network import PASS_ROWS, PackedNetwork
from engine.packed.planner import DataShape, pack_key, plan_packs
from engine.packed.trainer import (
    ConfigurationOutcome,
    FinishCallback,
    Member,
    PackData,
    PackTrainer,
    RecordCallback,
)
from engine.training import (
    CLASSIFICATION,
    Controls,
    HistoryPoint,
    Objective,
    early_stopping_needs_a_test_split,
    effective_batch_size,
    train,
    validated_splits,
)

Array = np.ndarray

# The data as train takes it: (X_train, y_train, n_classes, X_test, y_test)
TrainArguments = tuple[Array, Array, int, Array | None, Array | None]


def _prepared(hp: Hyperparameters, arguments: TrainArguments, objective: Objective) -> PackData:
    """The data checked and converted exactly as train checks it (InvalidInput otherwise)."""
    checked = hp.model_copy(update={"early_stopping": False})
    train_split, test_split = validated_splits(checked, *arguments, objective)
    return PackData(
        train_split.X_aug,
        train_split.y,
        test_split.X_aug if test_split else None,
        test_split.y if test_split else None,
        int(arguments[2]),
        objective,
        train_split.total_squares,
        test_split.total_squares if test_split else None,
    )


def _input_groups(members: list[Member], minibatch: bool) -> list[int]:
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
    objective: Objective = CLASSIFICATION,
) -> list[ConfigurationOutcome]:
    """Train configurations that `pack_key` lets share a pack (one input map), as one network
    (for the `objective`, as train takes it).

    Returns one outcome per configuration in the order given (`indices` names them, default
    0..K-1). `on_record(index, point)` follows each history point and `on_finish(outcome)`
    each configuration that succeeded or failed, as it happens. `should_stop` is polled like
    train polls it; a cancelled pack returns its unfinished configurations as "cancelled".
    """
    if not hps:
        return []
    controls = Controls(should_stop, clock, clock())
    arguments = (X_train, y_train, n_classes, X_test, y_test)
    data = _prepared(hps[0], arguments, objective)
    return _train_pack(hps, data, indices, on_record, on_finish, controls)


def _train_pack(
    hps: Sequence[Hyperparameters],
    data: PackData,
    indices: Sequence[int] | None,
    on_record: RecordCallback | None,
    on_finish: FinishCallback | None,
    controls: Controls,
) -> list[ConfigurationOutcome]:
    keys = {pack_key(hp, data.n_train) for hp in hps}
    if len(keys) != 1 or None in keys:
        raise InvalidInput(
            "these configurations cannot share a pack: input features, depth, activation, "
            "optimizer, batch "
            "size, dtype and Adam's constants must match, and max_seconds be unset"
        )
    names = list(indices) if indices is not None else list(range(len(hps)))
    dtype = np.dtype(hps[0].dtype)
    batch = effective_batch_size(hps[0], data.n_train)
    members: list[Member] = []
    outcomes: dict[int, ConfigurationOutcome] = {}
    sizes: list[list[int]] = []
    initial: list[tuple[list[Array], list[Array]]] = []
    for index, hp in zip(names, hps, strict=True):
        if hp.early_stopping and data.X_test is None:
            error = early_stopping_needs_a_test_split()
            outcomes[index] = ConfigurationOutcome(index, "failed", error=error)
            if on_finish is not None:
                on_finish(outcomes[index])
            continue
        rng = np.random.default_rng(hp.seed)
        layer_sizes = [data.n_features, *hp.hidden_layers, data.n_classes]
        initial.append(init_params(layer_sizes, hp.init, dtype, rng))
        sizes.append(layer_sizes)
        members.append(
            Member(index, hp, rng, full_batch=batch is None, has_test=data.X_test is not None)
        )
    if members:
        minibatch = batch is not None
        groups = _input_groups(members, minibatch)
        rows = batch or min(data.n_train, PASS_ROWS)
        network = PackedNetwork(
            sizes, members[0].hp.activation, dtype, groups, rows, data.objective.task
        )
        for k, (weights, biases) in enumerate(initial):
            network.set_network(k, weights, biases)
        group_rngs: list[np.random.Generator] = []
        if minibatch:
            first_of_group: dict[int, np.random.Generator] = {}
            for member, group in zip(members, groups, strict=True):
                first_of_group.setdefault(group, member.rng)
            group_rngs = [first_of_group[g] for g in range(network.n_groups)]
        trainer = PackTrainer(members, network, data, on_record, on_finish, controls, group_rngs)
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


# -- training many -------------------------------------------------------------------------------


def _train_alone(
    index: int,
    hp: Hyperparameters,
    arguments: TrainArguments,
    on_record: RecordCallback | None,
    should_stop: Callable[[], bool] | None,
    clock: Callable[[], float],
    objective: Objective,
) -> ConfigurationOutcome:
    history: list[HistoryPoint] = []

    def record(point: HistoryPoint) -> None:
        history.append(point)
        if on_record is not None:
            on_record(index, point)

    started = clock()
    try:
        result = train(
            hp,
            *arguments,
            on_record=record,
            should_stop=should_stop,
            clock=clock,
            objective=objective,
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
    objective: Objective = CLASSIFICATION,
) -> list[ConfigurationOutcome]:
    """Train every configuration, packed as `packs` says (default: `plan_packs`), one pack after
    another. A configuration that fails (diverged, invalid) fails alone; after a cancellation
    (should_stop) finished configurations keep their outcomes and the rest are "cancelled".
    Returns one outcome per configuration, in the order of `hps`. Data that train would refuse
    raises InvalidInput before anything trains."""
    if not hps:
        return []
    arguments = (X_train, y_train, n_classes, X_test, y_test)
    # The data through each input map the configurations use (checked once per map; every
    # map is checked before anything trains).
    prepared = {tuple(hp.input_features): hp for hp in hps}
    by_map = {features: _prepared(hp, arguments, objective) for features, hp in prepared.items()}
    if packs is None:
        first = by_map[tuple(hps[0].input_features)]
        n_features = int(np.asarray(X_train).shape[1])  # raw; the maps widen it per pack
        shape = DataShape(first.n_train, first.n_test, n_features, first.n_classes)
        packs = plan_packs(hps, shape)
    if sorted(i for pack in packs for i in pack) != list(range(len(hps))):
        raise InvalidInput(f"packs must name every configuration 0..{len(hps) - 1} once")
    outcomes: dict[int, ConfigurationOutcome] = {}
    cancelled = False
    for pack in packs:
        cancelled = cancelled or (should_stop is not None and should_stop())
        if cancelled:
            for index in pack:
                outcomes[index] = ConfigurationOutcome(index, "cancelled")
            continue
        if len(pack) == 1:
            outcome = _train_alone(
                pack[0], hps[pack[0]], arguments, on_record, should_stop, clock, objective
            )
            if on_finish is not None and outcome.status != "cancelled":
                on_finish(outcome)
            results = [outcome]
        else:
            controls = Controls(should_stop, clock, clock())
            members = [hps[i] for i in pack]
            data = by_map[tuple(members[0].input_features)]  # one map per pack (pack_key)
            results = _train_pack(members, data, pack, on_record, on_finish, controls)
        for outcome in results:
            outcomes[outcome.index] = outcome
            cancelled = cancelled or outcome.status == "cancelled"
    return [outcomes[i] for i in range(len(hps))]
