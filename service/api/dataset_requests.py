"""Dataset creation: which request fields apply to which kind, deployment limits, then the engine.

The builders are synchronous (generation, CSV parsing and splitting can take tens of
milliseconds): routes call them through a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine import datasets as engine_datasets
from engine.datasets import FIXED_N_CLASSES, PARAMETERS, Dataset, Kind
from engine.hyperparameters import Task
from service.api.schemas import (
    CUSTOM_FIELDS,
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    GENERATOR_FIELDS,
    DatasetCreate,
    applicable_fields,
)
from service.errors import InvalidRequest, LimitExceeded
from service.settings import Settings
from service.state.records import DatasetContent, DatasetRecord, new_id, utc_now


def _takes(kind: Kind) -> str:
    taken = [name for name in PARAMETERS[kind] if name != "seed"]
    if kind == "custom":
        return "custom takes points, labels or targets, feature_names, target_names and task"
    if not taken:
        return f"{kind} takes no generator parameters"
    return f"{kind} takes {', '.join(taken)}"


def check_applicable(body: DatasetCreate) -> None:
    """Refuse a field that does not apply to the kind, naming it (422)."""
    given = body.model_fields_set
    kind = body.kind
    taken = applicable_fields(kind)
    for field in (*GENERATOR_FIELDS, *CUSTOM_FIELDS):
        if field in given and field not in taken:
            fixed = next((n for k, n in FIXED_N_CLASSES.items() if k == kind), None)
            why = f" (it always has {fixed} classes)" if fixed else ""
            raise InvalidRequest.at(
                ["body", field],
                f"{field} applies only to kind custom; {_takes(kind)}"
                if field in CUSTOM_FIELDS
                else f"{field} does not apply to {kind}{why}; {_takes(kind)}",
                "not_applicable",
            )
    if kind == "custom":
        if body.points is None:
            raise InvalidRequest.at(["body", "points"], "kind custom needs points", "missing")
        _check_custom_task(body)


REGRESSION_ONLY = ("targets", "target_names")


def custom_task(body: DatasetCreate) -> Task:
    """A custom body's task: as given, else regression when it carries targets."""
    if body.task is not None:
        return body.task
    return "regression" if body.targets is not None else "classification"


def _check_custom_task(body: DatasetCreate) -> None:
    """Labels go with classification, targets and target names with regression (422)."""
    task = custom_task(body)
    if task == "classification":
        if body.labels is None:
            raise InvalidRequest.at(
                ["body", "labels"],
                "kind custom needs labels (classification) or targets (regression)",
                "missing",
            )
        for field in REGRESSION_ONLY:
            if getattr(body, field) is not None:
                raise InvalidRequest.at(
                    ["body", field],
                    f"{field} applies to regression data only; drop it, or send targets "
                    "instead of labels (task regression)",
                    "not_applicable",
                )
        return
    if body.labels is not None:
        raise InvalidRequest.at(
            ["body", "labels"],
            "labels apply to classification data only; a regression dataset takes targets",
            "not_applicable",
        )
    if body.targets is None:
        raise InvalidRequest.at(
            ["body", "targets"], "a custom regression dataset needs targets", "missing"
        )


def _check_samples(n_samples: int, settings: Settings, loc: list[str | int]) -> None:
    if n_samples > settings.max_samples:
        raise LimitExceeded.at(
            loc,
            f"{n_samples} points exceed max_samples = {settings.max_samples}",
            "limit_exceeded",
        )


@dataclass(frozen=True)
class SplitOptions:
    test_fraction: float = DEFAULT_TEST_FRACTION
    standardize: bool = True
    seed: int = DEFAULT_SPLIT_SEED


def _record(
    kind: Kind,
    name: str,
    dataset: Dataset,
    parameters: dict[str, int | float],
    options: SplitOptions,
) -> tuple[DatasetRecord, DatasetContent]:
    split = engine_datasets.split(
        dataset,
        test_fraction=options.test_fraction,
        standardize=options.standardize,
        seed=options.seed,
    )
    content = DatasetContent(dataset, split)
    record = DatasetRecord.describe(
        content,
        id=new_id("ds"),
        name=name,
        kind=kind,
        parameters=parameters,
        test_fraction=options.test_fraction,
        standardize=options.standardize,
        seed=options.seed,
        created_at=utc_now(),
    )
    return record, content


def build(body: DatasetCreate, settings: Settings) -> tuple[DatasetRecord, DatasetContent]:
    """A dataset record from a JSON request (engine InvalidInput propagates as 422)."""
    check_applicable(body)
    kind = body.kind
    seed = body.seed if body.seed is not None else DEFAULT_SPLIT_SEED
    options = SplitOptions(body.test_fraction, body.standardize, seed)
    parameters: dict[str, int | float] = {}
    if kind in engine_datasets.GENERATED_KINDS:
        parameters = {
            name: value if (value := getattr(body, name)) is not None else default
            for name, default in PARAMETERS[kind].items()
        }
        parameters["seed"] = seed
        _check_samples(int(parameters["n_samples"]), settings, ["body", "n_samples"])
        dataset = engine_datasets.generate(
            kind,
            n_samples=body.n_samples,
            noise=body.noise,
            n_classes=body.n_classes,
            n_features=body.n_features,
            seed=seed,
            max_samples=settings.max_samples,
        )
    elif kind == "custom":
        assert body.points is not None
        _check_samples(len(body.points), settings, ["body", "points"])
        dataset = engine_datasets.from_points(
            body.points,
            body.labels,
            body.feature_names,
            targets=body.targets,
            target_names=body.target_names,
            max_samples=settings.max_samples,
        )
    else:
        dataset = engine_datasets.load_builtin(kind)
        _check_samples(dataset.n_samples, settings, ["body", "kind"])
    return _record(kind, body.name or kind, dataset, parameters, options)


def build_from_csv(
    text: str,
    *,
    label_column: str | None,
    name: str | None,
    options: SplitOptions,
    settings: Settings,
    task: Task = "classification",
) -> tuple[DatasetRecord, DatasetContent]:
    """A custom dataset from CSV text (errors name the line); for regression the label column
    holds the target."""
    dataset = engine_datasets.from_csv(
        text, label_column, max_samples=settings.max_samples, task=task
    )
    return _record("custom", name or "csv", dataset, {}, options)
