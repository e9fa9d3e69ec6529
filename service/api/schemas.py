"""Request and response bodies. Families follow `XCreate` (request), `XPublic` (one resource)
and `XsPublic` (a page of them). Training options are the engine's own `Hyperparameters`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_serializer
from pydantic.json_schema import JsonDict

from engine.datasets import (
    DESCRIPTIONS,
    MAX_ABS_VALUE,
    MAX_FEATURES,
    MAX_GENERATED_FEATURES,
    MIN_FRIEDMAN_FEATURES,
    PARAMETERS,
)
from engine.datasets import Kind as DatasetKind
from engine.hyperparameters import Hyperparameters, Task
from service.state.records import ErrorType, StopReason

Label = StrictInt | StrictStr
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0
# Which DatasetCreate fields apply to which kind: generator parameters as engine.datasets'
# PARAMETERS says, the custom fields to custom only; name, seed, test_fraction, standardize to all.
GENERATOR_FIELDS = ("n_samples", "noise", "n_classes", "n_features")
CUSTOM_FIELDS = ("points", "labels", "feature_names", "task", "targets", "target_names")
SHARED_FIELDS = ("name", "seed", "test_fraction", "standardize")


def _kind_table() -> str:
    lines = []
    for kind, description in DESCRIPTIONS.items():
        taken = ", ".join(f"{name}={value}" for name, value in PARAMETERS[kind].items())
        extra = (
            "; takes points and labels (classification) or targets (regression), "
            "feature_names, target_names, task"
            if kind == "custom"
            else ""
        )
        lines.append(f"- {kind}: {description} ({taken or 'no generator parameters'}{extra})")
    return "\n".join(lines)


STOP_REASON_DESCRIPTION = (
    "Why training stopped, once succeeded: completed (every epoch ran), early_stopping, "
    "time_budget (max_seconds spent); lbfgs only: converged (the gradient's largest entry "
    "reached tolerance), stalled (no step along the gradient lowers the loss any more)."
)


class Request(BaseModel):
    """Base of request bodies: unknown fields, non-finite numbers and values of the wrong JSON
    type (`"5"` or `true` for a number, `1` for a boolean) are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def name_field(default: str, **extra: Any) -> Any:
    """A create body's optional `name`: a label for people, 1 to 200 characters."""
    return Field(
        default=None,
        min_length=1,
        max_length=200,
        description=f"A label for people; defaults to {default}.",
        **extra,
    )


# --- datasets --------------------------------------------------------------------------------


def applicable_fields(kind: DatasetKind) -> tuple[str, ...]:
    """The DatasetCreate fields, besides kind and SHARED_FIELDS, that `kind` takes."""
    generator = tuple(name for name in GENERATOR_FIELDS if name in PARAMETERS[kind])
    return generator + (CUSTOM_FIELDS if kind == "custom" else ())


_FINITE = {"type": "number", "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE}
# What the JSON Schema of the custom fields says beyond pydantic's types; the engine checks the
# same (engine.datasets.from_points), plus what JSON Schema cannot say: one label per point,
# rows of one length, at least 2 classes, feature names one per column.
_CUSTOM_SCHEMAS: dict[str, dict[str, Any]] = {
    "points": {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_FEATURES,
            "items": {"type": "number", "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE},
        },
    },
    "labels": {
        "anyOf": [
            {"type": "array", "minItems": 2, "items": {"type": "integer"}},
            {"type": "array", "minItems": 2, "items": {"type": "string"}},
        ]
    },
    "feature_names": {
        "anyOf": [
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_FEATURES,
                "uniqueItems": True,
                "items": {"type": "string", "pattern": "\\S"},
            },
            {"type": "null"},
        ]
    },
    "targets": {
        "anyOf": [
            {"type": "array", "minItems": 1, "items": _FINITE},
            {
                "type": "array",
                "minItems": 1,
                "items": {"type": "array", "minItems": 1, "items": _FINITE},
            },
        ]
    },
    "target_names": {
        "anyOf": [
            {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "pattern": "\\S"},
            },
            {"type": "null"},
        ]
    },
}


# The fewest points a generated dataset can have: two classes at least, two points a class.
MIN_GENERATED_SAMPLES = 2 * 2

DATASET_EXAMPLES = [
    {"kind": "moons", "n_samples": 200, "noise": 0.2, "seed": 0, "test_fraction": 0.2},
    {"kind": "iris", "test_fraction": 0.3, "standardize": True},
    {
        "kind": "custom",
        "points": [[0, 0], [0, 1], [1, 0], [1, 1], [0.1, 0.1], [0.1, 0.9]],
        "labels": ["a", "b", "b", "a", "a", "b"],
        "test_fraction": 0,
    },
]


def _one_branch_per_kind(schema: dict[str, Any]) -> None:
    """DatasetCreate's JSON Schema as what the service accepts: `oneOf` one object per group of
    kinds taking the same fields, each listing only those (a field that does not apply is a
    422), custom requiring points and labels. The request JSON is the model's, unchanged."""
    properties = schema.pop("properties")
    schema.pop("required", None)
    schema.pop("additionalProperties", None)
    schema["description"] += "\n\nkind: " + properties["kind"]["description"]
    groups: dict[tuple[str, ...], list[DatasetKind]] = {}
    for kind in DESCRIPTIONS:
        groups.setdefault(applicable_fields(kind), []).append(kind)
    branches = []
    for fields, kinds in groups.items():
        described = {name: properties[name] for name in (*SHARED_FIELDS, *fields)}
        for name in set(fields) & set(_CUSTOM_SCHEMAS):
            described[name] = {
                **_CUSTOM_SCHEMAS[name],
                "description": properties[name]["description"],
            }
        if "n_samples" in fields:
            counts = {**properties["n_samples"]["anyOf"][0], "minimum": MIN_GENERATED_SAMPLES}
            described["n_samples"] = {
                **properties["n_samples"],
                "anyOf": [counts, {"type": "null"}],
            }
        branches.append(
            {
                "title": ", ".join(kinds),
                "type": "object",
                "properties": {"kind": {"type": "string", "enum": kinds}, **described},
                "required": ["kind", *(name for name in ("points",) if name in fields)],
                "additionalProperties": False,
            }
        )
        if "labels" in fields:  # custom: labels (classification) or targets (regression)
            branches[-1]["oneOf"] = [{"required": ["labels"]}, {"required": ["targets"]}]
    schema["oneOf"] = branches
    schema["examples"] = DATASET_EXAMPLES


class DatasetCreate(Request):
    """A dataset to generate, load or accept. Only the parameters of its kind may be given."""

    model_config = ConfigDict(json_schema_extra=lambda schema, _: _one_branch_per_kind(schema))

    kind: DatasetKind = Field(
        description="Where the points come from, and which parameters apply (defaults in "
        "brackets):\n" + _kind_table()
    )
    name: str | None = name_field("the kind", examples=["moons, a bit noisy"])
    n_samples: int | None = Field(
        default=None,
        ge=1,
        description="Points to generate (generated kinds only): at least 2 per class, at most "
        "max_samples.",
        examples=[200],
    )
    noise: float | None = Field(
        default=None,
        ge=0,
        description="Noise of the generator (generated kinds only; see kind).",
        examples=[0.2],
    )
    n_classes: int | None = Field(
        default=None,
        ge=2,
        le=10,
        description="Classes to generate (blobs, spiral, gaussian only).",
        examples=[3],
    )
    n_features: int | None = Field(
        default=None,
        ge=MIN_FRIEDMAN_FEATURES,
        le=MAX_GENERATED_FEATURES,
        description="Features to generate (friedman1 only; its target reads the first five).",
        examples=[10],
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**32 - 1,
        description="Seeds the generator (generated kinds) and the train/test split (every "
        "kind); default 0.",
        examples=[0],
    )
    test_fraction: float = Field(
        default=DEFAULT_TEST_FRACTION,
        ge=0,
        lt=1,
        description="Share of each class (of the points, for regression) held out for "
        "testing; 0 = no test split.",
        examples=[0.2],
    )
    standardize: bool = Field(
        default=True,
        description="Standardize features with the training split's mean and standard "
        "deviation (and regression targets likewise). Models keep the scalers, so predictions "
        "take raw points and give values in the targets' units.",
    )
    points: list[list[float]] | None = Field(
        default=None,
        description="custom only: one row of feature values per point, each a finite number "
        f"within +-{MAX_ABS_VALUE:g}; at most {MAX_FEATURES} per row.",
        examples=[[[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]],
    )
    labels: list[Label] | None = Field(
        default=None,
        description="custom classification only: one class label per point, all integers or "
        "all strings.",
        examples=[["a", "b", "b", "a"]],
    )
    feature_names: list[str] | None = Field(
        default=None,
        description="custom only: a name per feature column; default x1, x2, ...",
        examples=[["width", "height"]],
    )
    task: Task | None = Field(
        default=None,
        description="custom only: classification (labels) or regression (targets); default: "
        "what the body carries. Other kinds have their own (reg_plane, reg_gauss, friedman1 "
        "and diabetes are regression, the rest classification).",
    )
    targets: list[float] | list[list[float]] | None = Field(
        default=None,
        description="custom regression only: one finite target per point, or one row of "
        f"targets (all of one length) per point, each within +-{MAX_ABS_VALUE:g}.",
        examples=[[0.5, 1.5, -0.25, 2.0]],
    )
    target_names: list[str] | None = Field(
        default=None,
        description="custom regression only: a name per target column; default y (one "
        "target) or y1, y2, ...",
        examples=[["price"]],
    )


PointSide = Literal["train", "test"]


class DatasetPublic(BaseModel):
    """A dataset and its train/test split."""

    id: str = Field(description="Opaque id.", examples=["ds_5f0c2a9e81d34b7a"])
    name: str = Field(description="A label for people.", examples=["moons"])
    kind: DatasetKind = Field(description="Where the points came from.")
    task: Task = Field(
        default="classification",
        description="classification (class labels) or regression (real-valued targets).",
    )
    n_samples: int = Field(description="Points in the dataset.", examples=[200])
    n_features: int = Field(description="Feature columns per point.", examples=[2])
    n_classes: int = Field(description="Distinct class labels (0 for regression).", examples=[2])
    classes: list[Label] = Field(
        description="Class labels, sorted ([] for regression).", examples=[[0, 1]]
    )
    class_counts: list[int] = Field(
        description="Points per class, in the order of `classes`.", examples=[[100, 100]]
    )
    target_names: list[str] = Field(
        default_factory=list,
        description="Regression: the name of each target column ([] for classification).",
        examples=[["y"]],
    )
    feature_names: list[str] = Field(description="Feature names.", examples=[["x1", "x2"]])
    train_size: int = Field(description="Points in the training split.", examples=[160])
    test_size: int = Field(description="Points in the test split (0: none).", examples=[40])
    test_fraction: float = Field(description="Requested test share.", examples=[0.2])
    standardize: bool = Field(
        description="Whether features (and regression targets) are standardized for training."
    )
    seed: int = Field(description="Seed of the generator and of the split.", examples=[0])
    parameters: dict[str, int | float] = Field(
        description="Generator parameters used, defaults included ({} for other kinds).",
        examples=[{"n_samples": 200, "noise": 0.2, "seed": 0}],
    )
    created_at: datetime = Field(description="Creation time, UTC.")
    points: list[list[float]] | None = Field(
        default=None, description="With include_points=true: the raw feature rows."
    )
    labels: list[Label] | None = Field(
        default=None,
        description="With include_points=true: the label of each point (classification).",
    )
    targets: list[list[float]] | None = Field(
        default=None,
        description="With include_points=true: the targets of each point (regression).",
    )
    split: list[PointSide] | None = Field(
        default=None, description="With include_points=true: the side of each point."
    )


class Page(BaseModel):
    """A page of a listing, oldest first: a listing names its items and what its total
    counts."""

    items: list[Any]
    total: int
    limit: int = Field(description="Page size used.")
    offset: int = Field(description="Items skipped before this page.")


class DatasetsPublic(Page):
    """A page of datasets, oldest first."""

    items: list[DatasetPublic] = Field(description="This page's datasets.")
    total: int = Field(description="Datasets in all pages.", examples=[12])
    limit: int = Field(description="Page size used.", examples=[50])
    offset: int = Field(description="Items skipped before this page.", examples=[0])


# --- jobs ------------------------------------------------------------------------------------


# The options of the job and sweep examples: the tutorial's, as README's quick start trains them.
EXAMPLE_OPTIONS: JsonDict = {
    "activation": "tanh",
    "optimizer": "sgd",
    "learning_rate": 2.0,
    "l2": 0.01,
    "epochs": 20000,
}
JOB_EXAMPLE: JsonDict = {
    "dataset_id": "ds_5f0c2a9e81d34b7a",
    "name": "three tanh units",
    "hyperparameters": {"hidden_layers": [3], **EXAMPLE_OPTIONS},
}


class JobCreate(Request):
    """Train a network on a dataset's training split."""

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})

    dataset_id: str = Field(
        description="The dataset to train on (422 if it does not exist).",
        examples=["ds_5f0c2a9e81d34b7a"],
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters,
        description="Training options; every one is optional and the full set, defaults "
        "included, is echoed back.",
    )
    name: str | None = name_field("the dataset's name")
    baseline: bool = Field(
        default=False,
        description="Also train softmax (logistic) regression: the same options with "
        "hidden_layers [], on the same split, after the network; reported as `baseline`.",
    )
    init_model_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Continue training this model (an id or one of your aliases; 404 if you "
        "have none of that name): from its weights, its optimizer state when it kept one, "
        "and its input scaling. Options left out of `hyperparameters` are the model's; "
        "hidden_layers, activation, input_features and dtype must equal the model's, the "
        "dataset must have its features and classes (else a 422 naming the field), and no "
        "baseline is trained. History epochs count on from the model's.",
        examples=["mdl_2b7e9c0d4f1a3e58"],
    )


REGRESSION_METRICS = ("train_mse", "test_mse", "train_mae", "test_mae", "train_r2", "test_r2")
ACCURACIES = ("train_accuracy", "test_accuracy")


class TaskMetrics(BaseModel):
    """The metrics beside the losses, by the task of the data: a classification body carries
    train_accuracy and test_accuracy, a regression body train_mse, test_mse, train_mae,
    test_mae, train_r2 and test_r2 instead; the other task's fields are left out. Test values
    are null without a test split."""

    train_accuracy: float | None = Field(
        default=None,
        description="Classification: share of training points classified right.",
        examples=[0.97],
    )
    test_accuracy: float | None = Field(
        default=None, description="Classification: the same on the test split.", examples=[0.95]
    )
    train_mse: float | None = Field(
        default=None,
        description="Regression: mean squared error on the training split, over points and "
        "targets, in the targets' units squared.",
    )
    test_mse: float | None = Field(default=None, description="Regression: on the test split.")
    train_mae: float | None = Field(
        default=None,
        description="Regression: mean absolute error on the training split, in the targets' units.",
    )
    test_mae: float | None = Field(default=None, description="Regression: on the test split.")
    train_r2: float | None = Field(
        default=None,
        description="Regression: coefficient of determination on the training split (mean "
        "over targets; 1 is perfect, 0 is predicting the mean).",
    )
    test_r2: float | None = Field(default=None, description="Regression: on the test split.")

    # No return annotation: pydantic then keeps the fields in the OpenAPI schema.
    @model_serializer(mode="wrap")
    def _task_fields_only(self, handler):  # type: ignore[no-untyped-def]
        """The task's metrics only, placed after the losses (a subclass's fields come after
        the base's, so `epoch` would otherwise follow them)."""
        body = handler(self)
        regression = any(body.get(name) is not None for name in REGRESSION_METRICS)
        kept = REGRESSION_METRICS if regression else ACCURACIES
        metrics = {name: body.pop(name) for name in (*ACCURACIES, *REGRESSION_METRICS)}
        ordered = {}
        for name, value in body.items():
            ordered[name] = value
            if name == "test_loss":
                ordered |= {key: metrics[key] for key in kept}
        return ordered if "test_loss" in body else body | {key: metrics[key] for key in kept}


class Metrics(TaskMetrics):
    """Loss (mean cross-entropy, or half the squared error for regression, plus
    regularization) on each split, and the task's metrics."""

    train_loss: float = Field(description="Loss on the training split.", examples=[0.071])
    test_loss: float | None = Field(description="null without a test split.", examples=[0.09])


class HistoryPointPublic(TaskMetrics):
    """One recorded epoch."""

    epoch: int = Field(description="Epochs completed.", examples=[1000])
    train_loss: float = Field(description="Loss on the training split.", examples=[0.31])
    test_loss: float | None = Field(description="null without a test split.", examples=[0.33])
    learning_rate: float = Field(description="Learning rate in that epoch.", examples=[0.01])


class ProgressEvent(HistoryPointPublic):
    """`data` of an SSE `progress` event."""

    job_id: str = Field(description="The job.", examples=["job_91c3d0a4e5f67b28"])
    snapshot_epoch: int | None = Field(
        default=None,
        description="Epoch of the latest parameter snapshot when this point was recorded: a new "
        "value means a new decision boundary to draw. null before the first snapshot.",
        examples=[1000],
    )


class JobErrorPublic(BaseModel):
    """Why a job failed."""

    type: ErrorType = Field(
        description="diverged: the loss became non-finite (lower the learning rate); timeout: "
        "the job ran past job_timeout_seconds; worker_lost: its worker process died; "
        "invalid_input: the engine refused the data or options; interrupted: the service "
        "stopped while it ran, twice; insufficient_storage: its model would pass "
        "max_stored_bytes; internal: a bug."
    )
    detail: str = Field(
        description="What happened and what to do.",
        examples=["training diverged at epoch 10: ...; lower the learning rate (now 1000)"],
    )


JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobBaselinePublic(TaskMetrics):
    """The baseline a job trained beside its network: logistic regression (linear regression
    for regression data)."""

    model_id: str | None = Field(description="Its model (an ordinary one); null if it failed.")
    train_loss: float | None = Field(description="Final loss on the training split.")
    test_loss: float | None = Field(description="Final test loss; null without a test split.")
    epochs_run: int = Field(description="Epochs it trained.")
    error: JobErrorPublic | None = Field(description="Why it failed (the job is unaffected).")


class JobPublic(BaseModel):
    """A training job. `succeeded`, `failed` and `cancelled` are final."""

    id: str = Field(description="Opaque id.", examples=["job_91c3d0a4e5f67b28"])
    name: str = Field(description="A label for people.", examples=["three tanh units"])
    status: JobStatusName = Field(
        description="queued -> running -> succeeded | failed | cancelled (a queued job can "
        "also be cancelled)."
    )
    dataset_id: str = Field(
        description="The dataset it trains on.", examples=["ds_5f0c2a9e81d34b7a"]
    )
    hyperparameters: Hyperparameters = Field(description="Every option, defaults included.")
    epoch: int = Field(description="Last recorded epoch (epochs run once finished).")
    epochs: int = Field(description="Epochs asked for.")
    train_size: int = Field(description="Training points.")
    test_size: int = Field(description="Test points (0: no test metrics).")
    created_at: datetime = Field(description="When it was queued, UTC.")
    started_at: datetime | None = Field(description="When a worker picked it up.")
    finished_at: datetime | None = Field(description="When it reached a final state.")
    elapsed_seconds: float | None = Field(
        description="Seconds since started (until finished); null while queued."
    )
    metrics: Metrics | None = Field(
        description="Latest recorded point while running; final metrics once succeeded."
    )
    model_id: str | None = Field(description="The trained model, once succeeded.")
    error: JobErrorPublic | None = Field(description="Set when failed.")
    stop_reason: StopReason | None = Field(description=STOP_REASON_DESCRIPTION)
    cancel_requested: bool = Field(description="A cancel was asked for.")
    attempt: int = Field(
        description="Runs started: 2 after the service restarted while it ran (it ran again "
        "from its start; with a data directory only).",
        examples=[1],
    )
    baseline: JobBaselinePublic | None = Field(
        default=None,
        description="With baseline: true, the logistic-regression baseline once the job succeeded.",
    )
    snapshot_epoch: int | None = Field(
        default=None,
        description="Epoch of the latest parameter snapshot (GET /v1/jobs/{job_id}/"
        "decision-boundary.png draws it); null before the first or with snapshot_every null.",
        examples=[2000],
    )
    init_model_id: str | None = Field(
        default=None, description="The model whose training it continues (its id)."
    )
    initial_epoch: int = Field(
        default=0,
        description="Epochs that model had trained: the history counts on from there, and "
        "`epoch` ends at initial_epoch + epochs. 0 for a job from scratch.",
    )


class JobsPublic(Page):
    """A page of jobs, oldest first."""

    items: list[JobPublic] = Field(description="This page's jobs.")
    total: int = Field(description="Jobs in all pages (after the status filter).")


class JobSnapshots(BaseModel):
    """The epochs of a job's kept parameter snapshots, oldest first."""

    job_id: str = Field(description="The job.", examples=["job_91c3d0a4e5f67b28"])
    epochs: list[int] = Field(
        description="One per kept snapshot (at most 100, thinned evenly, the first and the "
        "latest kept); each is a valid `epoch` for the job's decision-boundary.png.",
        examples=[[100, 200, 300]],
    )


class JobHistory(BaseModel):
    """Recorded points of a job, oldest first."""

    job_id: str = Field(description="The job.", examples=["job_91c3d0a4e5f67b28"])
    history: list[HistoryPointPublic] = Field(
        description="One point every record_every epochs plus the last epoch run."
    )


# --- models ----------------------------------------------------------------------------------


# An alias: a stable name a key gives one of its models (MLflow's registry convention). No
# underscore, so an alias can never look like an id (`mdl_2b7e41f09ac35d86`); 1 to 63 letters,
# digits, `-` and `.`, starting with a letter or digit.
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$"
ALIAS_DESCRIPTION = (
    "A model's alias: 1 to 63 letters, digits, `-` and `.`, starting with a letter or digit "
    "(no `_`, so it never looks like a model id). Each API key has its own aliases."
)
MODEL_REF_DESCRIPTION = "A model id (`mdl_...`) or one of this key's aliases of a model."


class ModelPublic(BaseModel):
    """A trained network, ready to predict."""

    id: str = Field(description="Opaque id.", examples=["mdl_2b7e41f09ac35d86"])
    name: str = Field(description="A label for people (the job's name).")
    job_id: str | None = Field(
        description="The job that trained it (null when imported or trained by a sweep)."
    )
    sweep_id: str | None = Field(
        default=None, description="The sweep that trained it, if a sweep did."
    )
    dataset_id: str | None = Field(
        description="Its dataset (null when imported); it may have been deleted since."
    )
    hyperparameters: Hyperparameters = Field(description="The options it was trained with.")
    metrics: Metrics | None = Field(description="Final metrics (null when imported).")
    n_parameters: int = Field(description="Weights and biases.", examples=[17])
    n_features: int = Field(description="Values per input point.", examples=[2])
    feature_names: list[str] = Field(
        description="Name of each input value.", examples=[["x1", "x2"]]
    )
    classes: list[Label] = Field(
        description="Labels it predicts, sorted ([] for regression).", examples=[[0, 1]]
    )
    task: Task = Field(
        default="classification",
        description="classification (predicts classes) or regression (predicts values).",
    )
    target_names: list[str] = Field(
        default_factory=list,
        description="Regression: the target each output predicts ([] for classification).",
        examples=[["y"]],
    )
    architecture: list[int] = Field(
        description="Layer widths, input to output.", examples=[[2, 3, 2]]
    )
    activation: str = Field(description="Hidden-layer activation.", examples=["tanh"])
    has_history: bool = Field(description="Whether loss-curve.png is available.")
    created_at: datetime = Field(description="When it was registered, UTC.")
    aliases: list[str] = Field(
        default_factory=list,
        description="The aliases this API key gave the model, sorted; any of them names it "
        "wherever a model id is taken.",
        examples=[["moons-best"]],
    )
    continued_from: str | None = Field(
        default=None,
        description="The model whose training this one continued (init_model_id), if any.",
    )


class ModelsPublic(Page):
    """A page of models, oldest first."""

    items: list[ModelPublic] = Field(description="This page's models.")
    total: int = Field(description="Models in all pages.")


class PredictRequest(Request):
    """Raw feature rows, in the dataset's units (the model applies its own scaling)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"points": [[0.5, -0.25]]}]})

    points: list[list[float]] = Field(
        min_length=1, description="One row of n_features finite numbers per point."
    )


class Prediction(BaseModel):
    """A classifier's answer: the most probable class of each point and every class's
    probability. A regression model's: `values` only (the other fields are absent)."""

    classes: list[Label] | None = Field(
        default=None, description="Classification: predicted label per point.", examples=[[1]]
    )
    probabilities: list[list[float]] | None = Field(
        default=None,
        description="Classification: per point, one probability per model class (in the "
        "model's `classes` order), summing to 1.",
        examples=[[[0.12, 0.88]]],
    )
    values: list[list[float]] | None = Field(
        default=None,
        description="Regression: per point, one predicted value per target (in the model's "
        "`target_names` order), in the targets' units.",
        examples=[[[151.2]]],
    )


# --- operations ------------------------------------------------------------------------------


class Health(BaseModel):
    """The service answers (and, from /readyz, its workers are up)."""

    status: Literal["ok"] = Field(default="ok", description="Always ok.")


class ClusterWorker(BaseModel):
    """One worker of the Dask cluster training runs on."""

    name: str = Field(description="The worker's address.", examples=["tcp://10.0.0.5:40123"])
    pid: int = Field(description="Its process id, on its own machine.")
    resources: dict[str, float] = Field(
        description="The resources it offers; jobs need `train`.", examples=[{"train": 1.0}]
    )


CLUSTER_DESCRIPTION = (
    "The workers of the Dask cluster training runs on; null when it runs in worker processes "
    "on this machine."
)


class Readiness(Health):
    """Every training worker is up."""

    cluster: list[ClusterWorker] | None = Field(description=CLUSTER_DESCRIPTION)


class Limits(BaseModel):
    """Deployment limits checked on top of the hyperparameter bounds."""

    max_hidden_layers: int = Field(description="Hidden layers per network.")
    max_units_per_layer: int = Field(description="Units per hidden layer.")
    max_samples: int = Field(description="Points per dataset.")
    max_epochs: int = Field(description="Epochs per job.")
    max_work: float = Field(description="Training points x parameters x epochs per job.")
    predict_max_points: int = Field(description="Points per prediction request.")
    max_request_bytes: int = Field(description="Request body size.")
    max_queued_jobs: int = Field(description="Jobs waiting for a worker.")
    job_timeout_seconds: float = Field(description="Wall-clock time per job.")
    page_size_max: int = Field(description="Items per page.")
    max_stored_bytes: int = Field(description="Bytes of datasets and models kept.")
    max_active_jobs_per_key: int = Field(description="Queued plus running jobs and sweeps a key.")
    rate_limit: str = Field(description="Average requests a key, e.g. 100/s.")
    rate_limit_burst: int = Field(description="Requests a key at once above its rate.")
    request_timeout_seconds: float = Field(description="Time a prediction or picture may take.")
    keys_required: bool = Field(description="Whether /v1 routes need an API key.")


class Info(BaseModel):
    """What this service is and how it is configured."""

    version: str = Field(description="Package version.", examples=["0.1.0"])
    executor_backend: str = Field(description="Where jobs run.", examples=["LocalProcessExecutor"])
    workers: int = Field(description="Training worker processes.")
    worker_pids: list[int] = Field(description="Process ids of the live workers.")
    ready: bool = Field(description="Every worker is up (as /readyz).")
    cluster: list[ClusterWorker] | None = Field(description=CLUSTER_DESCRIPTION)
    queued_jobs: int = Field(description="Jobs waiting for a worker.")
    running_jobs: int = Field(description="Jobs on a worker now.")
    store_backend: Literal["memory", "sqlite"] = Field(
        description="Where datasets, models, jobs and sweeps are kept."
    )
    stored_bytes: int = Field(description="Bytes of dataset and model content kept now.")
    limits: Limits = Field(description="Deployment limits.")
