"""Sweep planning: `partition` balances the estimated time of the workers' shares."""

from __future__ import annotations

from typing import Any

from engine.hyperparameters import Hyperparameters
from engine.packed import DataShape, estimate_seconds, partition

TUTORIAL = DataShape(n_train=160, n_test=40, n_features=2, n_classes=2)
TUTORIAL_SIZES = [[1], [2], [3], [4], [5], [20], [50]]


def _hp(**options: Any) -> Hyperparameters:
    return Hyperparameters(activation="tanh", optimizer="sgd", learning_rate=2.0, **options)


def share_seconds(hps: list[Hyperparameters], share: list[list[int]]) -> float:
    """The estimated time of one worker's share: its packs one after another."""
    return sum(estimate_seconds([hps[i] for i in pack], TUTORIAL) for pack in share)


def test_configurations_alone_are_balanced_to_within_the_smallest() -> None:
    # a time budget makes each train alone: six runs costing 1, 2, ..., 6 units
    hps = [_hp(hidden_layers=[8], epochs=1000 * k, max_seconds=60.0) for k in range(1, 7)]
    alone = [estimate_seconds([hp], TUTORIAL) for hp in hps]
    shares = partition(hps, TUTORIAL, 2)
    assert sorted(i for share in shares for pack in share for i in pack) == list(range(6))
    assert all(len(pack) == 1 for share in shares for pack in share)
    totals = sorted(share_seconds(hps, share) for share in shares)
    assert totals[1] - totals[0] <= min(alone) * 1.0001  # 11 vs 10 units, no worse
    assert totals[1] <= sum(alone) / 2 + min(alone) * 1.0001


def test_equal_configurations_split_evenly() -> None:
    hps = [_hp(hidden_layers=[8], epochs=2000, seed=seed, max_seconds=60.0) for seed in range(4)]
    for parts, sizes in ((2, [2, 2]), (3, [1, 1, 2]), (4, [1, 1, 1, 1])):
        shares = partition(hps, TUTORIAL, parts)
        assert sorted(sum(len(pack) for pack in share) for share in shares) == sizes, parts


def test_the_tutorial_sizes_split_as_the_largest_network_against_the_rest() -> None:
    """README's measurement: on 2 workers, [50] trains alone and the other six share a worker
    (the largest network is ~30% of the sum and cannot be split)."""
    hps = [_hp(hidden_layers=sizes, epochs=20000, l2=0.01) for sizes in TUTORIAL_SIZES]
    shares = partition(hps, TUTORIAL, 2)
    members = sorted(sorted(i for pack in share for i in pack) for share in shares)
    assert members == [[0, 1, 2, 3, 4, 5], [6]]
    totals = [share_seconds(hps, share) for share in shares]
    largest_alone = estimate_seconds([hps[6]], TUTORIAL)
    assert max(totals) <= max(largest_alone, sum(totals) / 2) * 1.25
