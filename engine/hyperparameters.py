"""Training hyperparameters: the one definition of every option, its default and its bounds.

The engine trains from a `Hyperparameters` instance; the service exposes the same model in its
OpenAPI schema, adding only deployment limits (layer count, units, epochs) on top.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.features import FEATURE_MAPS, FeatureMap

Activation = Literal["tanh", "relu", "leaky_relu", "sigmoid", "identity"]
OptimizerName = Literal["sgd", "momentum", "nesterov", "adam", "lbfgs"]
Schedule = Literal["constant", "step", "exponential", "inverse_time", "plateau"]
Init = Literal["lecun", "xavier", "he"]
DType = Literal["float64", "float32"]
# What a dataset asks of a network: class labels (softmax output, cross-entropy) or real-valued
# targets (identity output, half the squared error). Decided by the data, not a hyperparameter.
Task = Literal["classification", "regression"]

# Counts (units, epochs, batch size, patience, ...) fit a signed 32-bit integer: larger ones are
# absurd, and the service's own limits are far smaller.
MAX_COUNT = 2**31 - 1
PositiveInt = Annotated[int, Field(ge=1, le=MAX_COUNT)]
# L-BFGS curvature pairs: past ~100 (PyTorch's default) more pairs no longer pay for the
# 2 x m parameter-sized vectors each iteration reads twice.
MAX_LBFGS_MEMORY = 100


class Hyperparameters(BaseModel):
    """Everything that decides how a network is built and trained."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        strict=True,  # "5" or true for a number, 1 for a boolean: refused, not converted
        json_schema_extra={
            "examples": [
                {
                    "hidden_layers": [3],
                    "activation": "tanh",
                    "optimizer": "sgd",
                    "learning_rate": 2.0,
                    "l2": 0.01,
                    "epochs": 20000,
                    "init": "lecun",
                    "seed": 0,
                }
            ]
        },
    )

    hidden_layers: list[PositiveInt] = Field(
        default=[16],
        description="Units in each hidden layer, input side first. [] trains softmax "
        "(multinomial logistic) regression.",
        examples=[[3], [64, 64], []],
    )
    input_features: list[FeatureMap] = Field(
        default=["identity"],
        min_length=1,
        max_length=len(FEATURE_MAPS),
        json_schema_extra={"uniqueItems": True},
        description="Fixed maps of the (standardized) input, their columns side by side before "
        "the first layer: identity x, square x^2, sin x, cos x, products x_i*x_j (i < j). Part "
        "of the model: predictions, pictures and exports take raw points.",
        examples=[["identity"], ["identity", "square"], ["identity", "products"]],
    )
    activation: Activation = Field(
        default="tanh",
        description="Activation of every hidden layer. leaky_relu has slope 0.01 below zero.",
    )
    optimizer: OptimizerName = Field(
        default="adam",
        description="sgd: plain gradient descent (full batch when batch_size is null); "
        "momentum / nesterov: heavy-ball and Nesterov momentum; adam: Adam with bias correction; "
        "lbfgs: limited-memory BFGS with a strong Wolfe line search, full batch (an epoch is "
        "one iteration; see tolerance and lbfgs_memory); with lbfgs, batch_size must be null, "
        "lr_schedule constant and l1 0 (a 422 otherwise).",
    )
    learning_rate: float = Field(
        default=0.01,
        gt=0,
        le=1e3,
        description="Step size applied to the gradient of the MEAN loss over a batch. "
        "Gradient descent on the summed loss with step eps equals learning_rate = eps * n. "
        "lbfgs: the first trial step of the line search along -gradient (the gradient-descent "
        "step of this rate); later iterations try the quasi-Newton step 1.",
    )
    lr_schedule: Schedule = Field(
        default="constant",
        description="How the learning rate changes with epochs. step, exponential and "
        "inverse_time each reach learning_rate * lr_decay after lr_decay_epochs epochs "
        "(step in one jump, exponential smoothly, inverse_time as lr / (1 + k*epoch)); "
        "plateau multiplies by lr_decay whenever the monitored loss has not improved for "
        "lr_decay_epochs epochs.",
    )
    lr_decay: float = Field(
        default=0.5, gt=0, le=1, description="Factor of the learning-rate schedule."
    )
    lr_decay_epochs: PositiveInt = Field(
        default=1000, description="Epochs over which the schedule applies lr_decay once."
    )
    momentum: float = Field(
        default=0.9, ge=0, lt=1, description="Velocity decay for momentum and nesterov."
    )
    beta_1: float = Field(default=0.9, ge=0, lt=1, description="Adam's first-moment decay.")
    beta_2: float = Field(default=0.999, ge=0, lt=1, description="Adam's second-moment decay.")
    epsilon: float = Field(default=1e-8, gt=0, le=1, description="Adam's denominator guard.")
    batch_size: PositiveInt | None = Field(
        default=None,
        description="Examples per minibatch, reshuffled every epoch; null = full batch.",
    )
    epochs: PositiveInt = Field(default=1000, description="Passes over the training data.")
    l1: float = Field(
        default=0.0, ge=0, le=1e3, description="Adds l1/n * sum|W| over weights (not biases)."
    )
    l2: float = Field(
        default=0.0,
        ge=0,
        le=1e3,
        description="Adds l2/(2n) * sum W^2 over weights (not biases); the tutorial's "
        "reg_lambda and scikit-learn's alpha.",
    )
    init: Init = Field(
        default="lecun",
        description="Weight initialisation: lecun = normal/sqrt(fan_in) (the tutorial's), "
        "xavier = Glorot uniform, he = normal*sqrt(2/fan_in). Biases start at zero.",
    )
    dtype: DType = Field(default="float64", description="Floating-point precision.")
    seed: int = Field(
        default=0, ge=0, le=2**32 - 1, description="Seeds initialisation and shuffling."
    )
    early_stopping: bool = Field(
        default=False,
        description="Stop when the test loss has not improved for `patience` epochs and "
        "restore the best weights. Needs a test split.",
    )
    patience: PositiveInt = Field(
        default=100, description="Epochs without test-loss improvement before stopping."
    )
    record_every: PositiveInt = Field(
        default=10, description="Record a history point every this many epochs."
    )
    snapshot_every: PositiveInt | None = Field(
        default=100,
        description="Keep a snapshot of a job's parameters with the first history point at or "
        "after every this many epochs, and with the last point, for pictures of the network "
        "while it learns (decision boundary by epoch, evolution animation); null: none. A job "
        "keeps at most 100 snapshots, thinned evenly (the first and the latest kept). Sweeps "
        "keep none.",
    )
    max_seconds: float | None = Field(
        default=None, gt=0, description="Wall-clock budget; training stops when it is spent."
    )
    tolerance: float = Field(
        default=1e-5,
        ge=0,
        le=1e3,
        description="lbfgs: stop (stop_reason converged) once the largest absolute entry of "
        "the loss gradient is at most this (SciPy's gtol default); 0 runs every epoch. Other "
        "optimizers ignore it.",
    )
    lbfgs_memory: int = Field(
        default=10,
        ge=1,
        le=MAX_LBFGS_MEMORY,
        description="lbfgs: curvature pairs kept (m), SciPy's default; each costs two "
        "parameter-sized vectors. Other optimizers ignore it.",
    )

    @field_validator("input_features")
    @classmethod
    def _distinct(cls, value: list[FeatureMap]) -> list[FeatureMap]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(
                f"each map may be listed once, but {', '.join(repeated)} is listed more than once"
            )
        return value

    @field_validator("learning_rate", "l1", "l2", "max_seconds", "tolerance")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value

    @model_validator(mode="after")
    def _lbfgs_options(self) -> Hyperparameters:
        """lbfgs trains full batch on a smooth loss with its own step lengths."""
        if self.optimizer != "lbfgs":
            return self
        if self.batch_size is not None:
            raise ValueError(
                f"optimizer lbfgs trains full batch: batch_size must be null, got "
                f"{self.batch_size}; use sgd, momentum, nesterov or adam for minibatches"
            )
        if self.lr_schedule != "constant":
            raise ValueError(
                f"optimizer lbfgs chooses each step by its line search: lr_schedule must be "
                f"constant, got {self.lr_schedule}"
            )
        if self.l1 != 0:
            raise ValueError(
                f"optimizer lbfgs needs a differentiable loss: l1 must be 0, got {self.l1}; "
                "use l2, or another optimizer for l1"
            )
        return self
