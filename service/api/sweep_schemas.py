"""Request and response bodies of /v1/sweeps: `SweepCreate`, `SweepPublic`, `SweepsPublic` and the
rows and events they hold. Training options are the engine's own `Hyperparameters`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.json_schema import JsonDict

from engine.hyperparameters import Hyperparameters
from service.api.schemas import (
    EXAMPLE_OPTIONS,
    STOP_REASON_DESCRIPTION,
    HistoryPointPublic,
    JobErrorPublic,
    JobStatusName,
    Page,
    Request,
    StopReason,
    TaskMetrics,
    name_field,
)

SweepStatusName = JobStatusName
ConfigurationStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


SWEEP_EXAMPLE: JsonDict = {
    "dataset_id": "ds_5f0c2a9e81d34b7a",
    "name": "hidden layer size",
    "base": EXAMPLE_OPTIONS,
    "grid": {"hidden_layers": [[1], [2], [3], [4], [5], [20], [50]]},
    "baseline": True,
}


class SweepCreate(Request):
    """Train every combination of the grid's values on one dataset, together."""

    model_config = ConfigDict(json_schema_extra={"examples": [SWEEP_EXAMPLE]})

    dataset_id: str = Field(
        description="The dataset every configuration trains on (422 if it does not exist).",
        examples=["ds_5f0c2a9e81d34b7a"],
    )
    name: str | None = name_field("the dataset's name")
    base: Hyperparameters = Field(
        default_factory=Hyperparameters,
        description="Options shared by every configuration (all optional); a grid key "
        "overrides its field.",
    )
    grid: dict[str, list[JsonValue]] = Field(
        min_length=1,
        description="Hyperparameter name -> the values to try (a non-empty list, no repeats). "
        "The configurations are the cartesian product, keys in the order given, the last key "
        "varying fastest; at most max_sweep_configurations of them.",
        examples=[{"hidden_layers": [[1], [2], [3]], "learning_rate": [0.5, 2.0]}],
    )
    baseline: bool = Field(
        default=False,
        description="Also train softmax (logistic) regression: the base options with "
        "hidden_layers [], on the same split, reported as `baseline`.",
    )


class ConfigurationPublic(TaskMetrics):
    """One configuration of a sweep (or its baseline) and how it did."""

    index: int | None = Field(
        description="Position in the grid's product (null for the baseline).", examples=[2]
    )
    hyperparameters: Hyperparameters = Field(description="Every option, defaults included.")
    varied: dict[str, JsonValue] = Field(
        description="The grid keys and this configuration's values ({} for the baseline).",
        examples=[{"hidden_layers": [3]}],
    )
    status: ConfigurationStatusName = Field(
        description="queued -> running -> succeeded | failed | cancelled."
    )
    model_id: str | None = Field(description="The model it registered, once succeeded.")
    train_loss: float | None = Field(
        description="Final (latest while running) training loss.", examples=[0.071]
    )
    test_loss: float | None = Field(description="null without a test split.", examples=[0.09])
    epochs_run: int = Field(description="Epochs trained (the latest recorded while running).")
    seconds: float | None = Field(
        description="Seconds from the start of its worker's share to its end (configurations "
        "trained together share a clock)."
    )
    stop_reason: StopReason | None = Field(description=STOP_REASON_DESCRIPTION)
    error: JobErrorPublic | None = Field(description="Set when it failed.")
    best: bool = Field(
        description="The succeeded configuration with the lowest test loss (training loss "
        "without a test split)."
    )


class SweepProgress(BaseModel):
    """How far the grid's configurations are (the baseline not counted)."""

    completed: int = Field(description="Configurations that ended, however they ended.")
    total: int = Field(description="Configurations in the grid.")
    succeeded: int = Field(description="Configurations that succeeded.")
    failed: int = Field(description="Configurations that failed.")
    cancelled: int = Field(description="Configurations cancelled before they ended.")
    running: int = Field(description="Configurations training now.")
    epochs_completed: int = Field(description="Epochs trained, summed over configurations.")
    epochs_total: int = Field(description="Epochs asked for, summed over configurations.")
    fraction: float = Field(description="epochs_completed / epochs_total.", examples=[0.42])


class SweepPublic(BaseModel):
    """A sweep. `succeeded`, `failed` and `cancelled` are final: it succeeds when it ends with
    at least one configuration succeeded, fails when none did, and is cancelled on request."""

    id: str = Field(description="Opaque id.", examples=["swp_0c8e1f5a9b2d4e67"])
    name: str = Field(description="A label for people.", examples=["hidden layer size"])
    status: SweepStatusName = Field(
        description="queued -> running -> succeeded | failed | cancelled."
    )
    dataset_id: str = Field(description="The dataset every configuration trains on.")
    base: Hyperparameters = Field(description="The shared options, defaults included.")
    grid: dict[str, list[JsonValue]] = Field(description="The grid, values as validated.")
    created_at: datetime = Field(description="When it was queued, UTC.")
    started_at: datetime | None = Field(description="When a worker picked it up.")
    finished_at: datetime | None = Field(description="When it reached a final state.")
    elapsed_seconds: float | None = Field(
        description="Seconds since started (until finished); null while queued."
    )
    progress: SweepProgress
    results: list[ConfigurationPublic] = Field(description="One row per configuration, in order.")
    best_index: int | None = Field(description="Index of the best row (see `best`).")
    baseline: ConfigurationPublic | None = Field(
        description="The logistic-regression baseline, when asked for."
    )
    cancel_requested: bool = Field(description="A cancel was asked for.")
    attempt: int = Field(
        description="Runs started: 2 after the service restarted while it ran (it ran again "
        "from its start; with a data directory only).",
        examples=[1],
    )


class SweepsPublic(Page):
    """A page of sweeps, oldest first."""

    items: list[SweepPublic] = Field(description="This page's sweeps.")
    total: int = Field(description="Sweeps in all pages (after the status filter).")


class SweepPointEvent(HistoryPointPublic):
    """`data` of an SSE `progress` event: one configuration recorded a history point."""

    sweep_id: str = Field(description="The sweep.")
    index: int | None = Field(description="The configuration (null: the baseline).")


class SweepResultEvent(ConfigurationPublic):
    """`data` of an SSE `result` event: one configuration ended."""

    sweep_id: str = Field(description="The sweep.")
