"""A trained model: weights plus everything needed to predict from raw feature values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.activations import ACTIVATIONS
from engine.errors import InvalidInput
from engine.features import map_features, n_features_for
from engine.hyperparameters import Activation, Hyperparameters, Task
from engine.network import predict_proba, predict_values
from engine.optimizers import OptimizerState

Label = int | str


@dataclass(frozen=True)
class Scaler:
    """Standardization fitted on training features: x' = (x - mean) / scale."""

    mean: np.ndarray  # (n_features,)
    scale: np.ndarray  # (n_features,), never 0

    @classmethod
    def fit(cls, X: np.ndarray) -> Scaler:
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0  # a constant feature stays centred, not divided by zero
        return cls(mean=mean, scale=scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale


@dataclass
class Model:
    """Weights (fan_in, fan_out) and biases (fan_out,) per layer, input side first.

    `classes[i]` is the user's label for output column i. Raw inputs go through `scaler` (when
    set), then the input map `hyperparameters.input_features` (engine.features), then the
    first layer: `weights[0]` has one row per mapped column. A regression model (`task`) has no
    classes: output column i predicts target `target_names[i]`, in the targets' original units
    (`target_scaler`, when set, maps the network's standardized outputs back).
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activation: Activation
    classes: tuple[Label, ...]
    hyperparameters: Hyperparameters
    scaler: Scaler | None = None
    feature_names: tuple[str, ...] = field(default=())
    task: Task = "classification"
    target_names: tuple[str, ...] = field(default=())
    target_scaler: Scaler | None = None
    # The optimizer's state after its last update, for training to go on from (None: not kept)
    optimizer_state: OptimizerState | None = None
    continued_from: str | None = None  # the id of the model whose training this one continued

    @property
    def n_inputs(self) -> int:
        """The first layer's input width: the mapped columns."""
        return int(self.weights[0].shape[0])

    @property
    def n_features(self) -> int:
        """Raw values per input point, before the input map."""
        n_features = n_features_for(self.hyperparameters.input_features, self.n_inputs)
        if n_features is None:
            raise InvalidInput(
                f"input_features {self.hyperparameters.input_features} cannot give the first "
                f"layer's {self.n_inputs} inputs"
            )
        return n_features

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def n_outputs(self) -> int:
        return int(self.biases[-1].shape[0])

    @property
    def n_parameters(self) -> int:
        return int(sum(W.size + b.size for W, b in zip(self.weights, self.biases, strict=True)))

    @property
    def architecture(self) -> list[int]:
        """Layer widths from the (mapped) input to the output, e.g. [2, 3, 2]."""
        return [self.n_inputs] + [int(b.shape[0]) for b in self.biases]

    def _check_points(self, X: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        points = np.asarray(X, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != self.n_features:
            raise InvalidInput(f"points must have shape (n, {self.n_features}), got {points.shape}")
        if not np.isfinite(points).all():
            raise InvalidInput("points must be finite numbers (no NaN or Infinity)")
        return points

    def _inputs(self, X: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """The network's input for raw points: scaled, then through the input map."""
        points = self._check_points(X)
        if self.scaler is not None:
            points = self.scaler.transform(points)
        with np.errstate(over="ignore"):
            points = map_features(points, self.hyperparameters.input_features)  # (n, n_inputs)
        if not np.isfinite(points).all():
            raise InvalidInput(
                f"points too large for input_features {self.hyperparameters.input_features}: "
                "a mapped value overflows float64"
            )
        return points

    def predict_proba(self, X: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Class probabilities for raw inputs, (n_points, n_classes), rows summing to 1: the
        training forward pass (engine.network.predict_proba) after the scaler and the map."""
        if self.regression:
            raise InvalidInput("a regression model predicts values, not class probabilities")
        return predict_proba(self.weights, self.biases, self.activation, self._inputs(X))

    def predict_values(self, X: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """A regression model's predictions for raw inputs, (n_points, n_targets), float64, in
        the targets' original units."""
        if not self.regression:
            raise InvalidInput("a classifier predicts classes, not values")
        values = predict_values(self.weights, self.biases, self.activation, self._inputs(X))
        if self.target_scaler is not None:
            values = values * self.target_scaler.scale + self.target_scaler.mean
        return values

    def hidden_activations(self, X: np.ndarray | Sequence[Sequence[float]]) -> list[np.ndarray]:
        """Each hidden layer's activations for raw inputs, input side first: (n_points, units)
        per layer, float64; [] without hidden layers. The output layer's logits are these last
        activations times its weights plus its bias (what `predict_proba` takes the softmax of)."""
        A = self._check_points(X)  # (n_points, n_features)
        if self.scaler is not None:
            A = self.scaler.transform(A)
        layers = []
        with np.errstate(all="ignore"):  # tanh and sigmoid saturate; nothing here overflows
            for W, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
                A = ACTIVATIONS[self.activation](A @ W.astype(np.float64) + b)  # (n, units)
                layers.append(A)
        return layers

    def predict(self, X: np.ndarray | Sequence[Sequence[float]]) -> list[Label]:
        """The most probable class label for each raw input point."""
        indices = self.predict_proba(X).argmax(axis=1)
        return [self.classes[i] for i in indices]
