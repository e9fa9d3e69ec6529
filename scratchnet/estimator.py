"""`MLPClassifier` and `MLPRegressor`: scratchnet's network as scikit-learn estimators, trained
in this process by the engine (`server=None`) or on a scratchnet service (`server="http://…"`).

Its parameters are the fields of `engine.hyperparameters.Hyperparameters` — the one definition
of every training option — with the same names and defaults (a list default becomes a tuple, as
scikit-learn wants immutable defaults), plus `server` and `api_key`. `__init__` is built from
those fields with an explicit `__signature__`, so `get_params`, `set_params`, `clone`,
`Pipeline` and `GridSearchCV` see each parameter as if it were written out.

Conventions: the constructor stores its arguments and nothing else; `fit` validates X and y
with scikit-learn's own helpers (so its error messages are scikit-learn's), checks the options
by building a `Hyperparameters` (a ValueError naming the field), and trains on all of X — no
test split, no standardization (put a StandardScaler before it in a Pipeline). Labels may be
any sortable values (`classes_` holds them, sorted). On a server, `fit` uploads X and y as a
custom dataset (standardize off, no test split), trains a job, downloads the model's .npz and
deletes the dataset; prediction then runs in this process. Both paths train the same weights
bit for bit for the same options, because the service runs the same engine on the same rows.

`MLPRegressor` fits real-valued targets (a vector, or a matrix for several outputs) with the
identity output and half the squared error (scikit-learn's MLPRegressor loss, `l2` its `alpha`);
its targets are used as given (no standardization), `predict` answers in their shape, and on a
server `fit` uploads them as a regression dataset.

Fitted attributes: `classes_` (classifier), `n_outputs_` (regressor), `n_features_in_`,
`feature_names_in_` (when X has string column names), `loss_curve_` (the training loss at each
recorded epoch: every `record_every` epochs and the last), `n_iter_` (epochs run), `model_` (the
engine's Model), and `model_id_` (the model on the server; None in-process).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from pydantic.fields import FieldInfo
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from engine import serialize
from engine.hyperparameters import Hyperparameters, Task
from engine.model import Model
from engine.training import CLASSIFICATION, Objective, train


def _estimator_default(field: FieldInfo) -> Any:
    """The field's default as an estimator parameter: lists become tuples."""
    default = field.get_default(call_default_factory=True)
    return tuple(default) if isinstance(default, list) else default


HYPERPARAMETER_DEFAULTS: dict[str, Any] = {
    name: _estimator_default(field) for name, field in Hyperparameters.model_fields.items()
}
CONNECTION_DEFAULTS: dict[str, Any] = {"server": None, "api_key": None}
PARAMETER_DEFAULTS = {**HYPERPARAMETER_DEFAULTS, **CONNECTION_DEFAULTS}


def _plain(value: Any) -> Any:
    """A parameter as Hyperparameters takes it strictly: NumPy scalars (from a param grid of
    np.linspace, say) as Python numbers, tuples and arrays as lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | np.ndarray):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    return value


def _init(self: Any, **params: Any) -> None:
    unknown = sorted(set(params) - set(PARAMETER_DEFAULTS))
    if unknown:
        raise TypeError(f"{type(self).__name__} got an unexpected keyword argument {unknown[0]!r}")
    for name, default in PARAMETER_DEFAULTS.items():
        setattr(self, name, params.get(name, default))


_init.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
        for name, default in PARAMETER_DEFAULTS.items()
    ]
)
_init.__doc__ = "Store the parameters (see the class docstring); nothing is checked until fit."


class _Network(BaseEstimator):
    """What both estimators share: the parameters, and training here or on a server."""

    __init__ = _init

    def _hyperparameters(self) -> Hyperparameters:
        """The options as the engine takes them; a ValueError naming the bad field."""
        values = {name: _plain(getattr(self, name)) for name in HYPERPARAMETER_DEFAULTS}
        return Hyperparameters(**values)

    def _train(self, X: np.ndarray, y: np.ndarray, n_outputs: int, task: Task) -> None:
        """Train on (X, y) and set the fitted attributes they share."""
        hp = self._hyperparameters()
        if self.server is None:
            model, losses, epochs_run, model_id = self._fit_here(hp, X, y, n_outputs, task)
        else:
            model, losses, epochs_run, model_id = self._fit_on_server(hp, X, y, task)
        self.model_ = model
        self.loss_curve_ = losses
        self.n_iter_ = epochs_run
        self.model_id_ = model_id

    @staticmethod
    def _fit_here(
        hp: Hyperparameters, X: np.ndarray, y: np.ndarray, n_outputs: int, task: Task
    ) -> tuple[Model, list[float], int, None]:
        regression = task == "regression"
        objective = Objective(task) if regression else CLASSIFICATION
        result = train(hp, X, y, n_outputs, objective=objective)
        model = Model(
            weights=result.weights,
            biases=result.biases,
            activation=hp.activation,
            classes=() if regression else tuple(range(n_outputs)),
            hyperparameters=hp,
            task=task,
            target_names=tuple(f"y{i + 1}" for i in range(n_outputs)) if regression else (),
        )
        return model, [point.train_loss for point in result.history], result.epochs_run, None

    def _fit_on_server(
        self, hp: Hyperparameters, X: np.ndarray, y: np.ndarray, task: Task
    ) -> tuple[Model, list[float], int, str]:
        from scratchnet.client import Client

        name = f"{type(self).__name__}.fit"
        with Client(self.server, self.api_key) as client:
            dataset = client.dataset_from_points(
                X, y.tolist(), name=name, test_fraction=0, standardize=False, task=task
            )
            try:
                job = client.train(dataset, hp.model_dump(mode="json"), progress=False)
            finally:
                client.delete_dataset(dataset)
            assert job.model_id is not None  # a succeeded job has registered its model
            model = serialize.model_from_npz(client.export_model(job.model_id))
            history = client.job_history(job).history
        return model, [point.train_loss for point in history], job.epoch, job.model_id


class MLPClassifier(ClassifierMixin, _Network):
    """A feed-forward network classifier trained by scratchnet (see the module docstring).

    Parameters are those of `scratchnet.Hyperparameters` (hidden_layers, activation,
    optimizer, learning_rate, l2, epochs, seed, ...), plus `server` (None: train here; a URL:
    train on that service) and `api_key` (for the service).
    """

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train on every row of X; y holds a label per row (two classes at least)."""
        X, y = validate_data(self, X, y, dtype=np.float64)  # (n, n_features), (n,)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(
                f"MLPClassifier needs samples of at least 2 classes, got 1 class ({classes[0]!r})"
            )
        self._train(X, y_index, classes.size, "classification")
        self.classes_ = classes
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability of each class, (n_samples, n_classes), columns in `classes_` order."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        probabilities: np.ndarray = self.model_.predict_proba(X)
        return probabilities

    def predict(self, X: Any) -> np.ndarray:
        """The most probable label of each row."""
        probabilities = self.predict_proba(X)
        labels: np.ndarray = self.classes_[probabilities.argmax(axis=1)]
        return labels


class MLPRegressor(RegressorMixin, _Network):
    """A feed-forward network regressor trained by scratchnet (see the module docstring):
    identity output, half the squared error. Parameters as MLPClassifier's."""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # several target columns train several outputs
        return tags

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train on every row of X; y holds a target per row (n,) or a row of targets (n, K)."""
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        targets = y.reshape(len(y), -1)  # (n, K)
        self._train(X, targets, targets.shape[1], "regression")
        self.n_outputs_ = targets.shape[1]
        self._one_output = y.ndim == 1
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, (n_samples,) when fitted on a vector, else (n_samples, K)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        values: np.ndarray = self.model_.predict_values(X)  # (n, K)
        return values[:, 0] if self._one_output else values
