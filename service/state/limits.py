"""This deployment's limits on training work, checked before anything is queued.

Each refusal is a 422 naming the field, the limit (its setting and value) and what to do. The
work of one network is `work_units`: training points x parameters x epochs; a job's must stay
under max_work, and a sweep's summed over its configurations.
"""

from __future__ import annotations

import itertools
import json

from pydantic import JsonValue

from engine.errors import InvalidInput
from engine.features import check_width, input_width
from engine.hyperparameters import Hyperparameters
from service.errors import InvalidRequest, LimitExceeded
from service.settings import Settings
from service.state.records import TrainingData

HP = ("body", "hyperparameters")


def n_parameters(widths: list[int]) -> int:
    """Weights and biases of a dense network with layer `widths`, input to output."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(widths))


def widths(hp: Hyperparameters, data: TrainingData) -> list[int]:
    """Layer widths of the network `hp` builds on `data`: its input map's columns first."""
    return [input_width(hp.input_features, data.n_features), *hp.hidden_layers, data.n_classes]


def work_units(hp: Hyperparameters, data: TrainingData) -> int:
    return data.train_size * n_parameters(widths(hp, data)) * hp.epochs


def check_limits(
    hp: Hyperparameters, data: TrainingData, dataset_id: str, settings: Settings
) -> None:
    """Refuse, before queuing, a job this deployment will not run (422 naming the limit)."""
    try:
        check_width(hp.input_features, data.n_features, max(data.train_size, data.test_size))
    except InvalidInput as exc:
        where = [*HP, "input_features"]
        if input_width(hp.input_features, data.n_features) < 1:  # no column at all
            raise InvalidRequest.at(where, str(exc)) from None
        raise LimitExceeded.at(where, str(exc), "limit_exceeded") from None
    layers = hp.hidden_layers
    if len(layers) > settings.max_hidden_layers:
        raise LimitExceeded.at(
            [*HP, "hidden_layers"],
            f"{len(layers)} hidden layers exceed max_hidden_layers = {settings.max_hidden_layers}",
            "limit_exceeded",
        )
    for index, units in enumerate(layers):
        if units > settings.max_units_per_layer:
            raise LimitExceeded.at(
                [*HP, "hidden_layers", index],
                f"{units} units exceed max_units_per_layer = {settings.max_units_per_layer}",
                "limit_exceeded",
            )
    if hp.epochs > settings.max_epochs:
        raise LimitExceeded.at(
            [*HP, "epochs"],
            f"{hp.epochs} epochs exceed max_epochs = {settings.max_epochs}",
            "limit_exceeded",
        )
    if hp.batch_size is not None and hp.batch_size > data.train_size:
        raise InvalidRequest.at(
            [*HP, "batch_size"],
            f"batch_size {hp.batch_size} is larger than the training split "
            f"({data.train_size} points); use at most {data.train_size} or null for "
            "full batch",
        )
    if hp.early_stopping and data.test_size == 0:
        raise InvalidRequest.at(
            [*HP, "early_stopping"],
            f"early_stopping needs a test split but dataset {dataset_id} has test_fraction 0; "
            "create the dataset with test_fraction > 0 or turn early_stopping off",
        )
    work = work_units(hp, data)
    if work > settings.max_work:
        parameters = n_parameters(widths(hp, data))
        raise LimitExceeded.at(
            [*HP, "epochs"],
            f"this job needs {work:.3g} units of work (training points {data.train_size} x "
            f"parameters {parameters} x epochs {hp.epochs}), over max_work = "
            f"{settings.max_work:.3g}; use fewer epochs, fewer or smaller layers, or less data",
            "limit_exceeded",
        )


def check_configuration(
    hp: Hyperparameters,
    varied: dict[str, JsonValue],
    grid: dict[str, list[JsonValue]],
    data: TrainingData,
    dataset_id: str,
    settings: Settings,
) -> None:
    """A job's limits, for one configuration of a sweep; the 422 names the grid value (or the
    base field, or the baseline)."""
    try:
        check_limits(hp, data, dataset_id, settings)
    except InvalidRequest as exc:
        issue = exc.errors[0] if exc.errors else None
        field_name = str(issue.loc[2]) if issue is not None and len(issue.loc) > 2 else ""
        if field_name in varied:
            position = grid[field_name].index(varied[field_name])
            where: list[str | int] = ["body", "grid", field_name, position]
            name = f"configuration {json.dumps(varied)}"
        elif varied:
            where, name = ["body", "base", field_name], f"configuration {json.dumps(varied)}"
        else:
            where, name = ["body", "baseline"], "the baseline"
        message = issue.msg if issue is not None else exc.detail
        kind = issue.type if issue is not None else "value_error"
        raise type(exc).at(where, f"{name}: {message}", kind) from None


def check_sweep_work(
    total: int, configurations: int, with_baseline: bool, settings: Settings
) -> None:
    """The work of a sweep's configurations (and baseline), summed, within max_work."""
    if total > settings.max_work:
        raise LimitExceeded.at(
            ["body", "grid"],
            f"this sweep needs {total:.3g} units of work in all (training points x parameters "
            f"x epochs, summed over its {configurations} configurations"
            f"{' and the baseline' if with_baseline else ''}), over max_work = "
            f"{settings.max_work:.3g}; use fewer configurations, epochs or units",
            "limit_exceeded",
        )
