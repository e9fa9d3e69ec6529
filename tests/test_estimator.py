"""scratchnet.MLPClassifier: scikit-learn's own estimator checks, its parameters derived from
Hyperparameters, Pipeline / GridSearchCV / cross_val_score / clone, the tutorial's result, and
the same model trained in-process and on a real service."""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris, make_moons
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import scratchnet
from engine.hyperparameters import Hyperparameters
from engine.training import Objective, train
from scratchnet.estimator import MLPClassifier, MLPRegressor
from tests.api_support import LiveServer

TUTORIAL: dict[str, Any] = {
    "hidden_layers": (3,),
    "activation": "tanh",
    "optimizer": "sgd",
    "learning_rate": 2.0,
    "l2": 0.01,
    "epochs": 20000,
}


@pytest.fixture(scope="module")
def moons() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_moons(200, noise=0.2, random_state=0)
    return X, y


# Few epochs at a higher rate: every check trains several times, and check_classifiers_train
# wants > 83% accuracy on its blobs.
@parametrize_with_checks([MLPClassifier(epochs=200, learning_rate=0.05)])
def test_scikit_learn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


def test_parameters_are_the_hyperparameters_fields_plus_the_connection() -> None:
    parameters = inspect.signature(MLPClassifier).parameters
    assert list(parameters) == [*Hyperparameters.model_fields, "server", "api_key"]
    defaults = MLPClassifier().get_params()
    for name, field in Hyperparameters.model_fields.items():
        default = field.get_default(call_default_factory=True)
        assert defaults[name] == (tuple(default) if isinstance(default, list) else default)
    assert defaults["server"] is None and defaults["api_key"] is None
    with pytest.raises(TypeError, match="unexpected keyword argument 'alpha'"):
        MLPClassifier(alpha=0.1)


def test_the_constructor_stores_and_fit_validates_options() -> None:
    estimator = MLPClassifier(learning_rate=-1.0, activation="softplus")
    assert estimator.learning_rate == -1.0  # stored, not checked
    with pytest.raises(ValueError, match="learning_rate"):
        estimator.fit([[0.0], [1.0]], [0, 1])


def test_the_tutorial_through_the_estimator(moons: tuple[np.ndarray, np.ndarray]) -> None:
    """The tutorial's network (see README: learning_rate 2.0 is its step 0.01 on 200 points)
    trains the engine's exact weights and reaches its loss and accuracy."""
    X, y = moons
    estimator = MLPClassifier(**TUTORIAL).fit(X, y)
    reference = train(Hyperparameters(**{**TUTORIAL, "hidden_layers": [3]}), X, y, 2)
    for mine, theirs in zip(estimator.model_.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert estimator.loss_curve_[-1] <= 0.08 and estimator.n_iter_ == 20000
    assert len(estimator.loss_curve_) == 20000 // 10
    assert estimator.score(X, y) >= 0.96


def test_labels_of_any_kind_and_dataframe_feature_names(
    moons: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = moons
    frame = pd.DataFrame(X, columns=["width", "height"])
    labels = np.where(y == 1, "upper", "lower")
    estimator = MLPClassifier(hidden_layers=(8,), epochs=300).fit(frame, labels)
    assert list(estimator.classes_) == ["lower", "upper"]
    assert list(estimator.feature_names_in_) == ["width", "height"]
    assert set(estimator.predict(frame)) <= {"lower", "upper"}
    assert estimator.predict_proba(frame).shape == (200, 2)
    restored = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(restored.predict_proba(frame), estimator.predict_proba(frame))


def test_pipeline_grid_search_cross_validation_and_clone() -> None:
    X, y = load_iris(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(hidden_layers=(8,), epochs=200))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    search = GridSearchCV(
        pipeline,
        {"mlpclassifier__hidden_layers": [(2,), (8,)], "mlpclassifier__learning_rate": [0.05]},
        cv=3,
    ).fit(X, y)
    assert search.best_params_["mlpclassifier__hidden_layers"] in [(2,), (8,)]
    assert search.best_estimator_.score(X, y) > 0.8
    copy = clone(search.best_estimator_)
    assert copy.get_params()["mlpclassifier__learning_rate"] == 0.05
    assert not hasattr(copy[-1], "classes_")


@pytest.mark.e2e
def test_in_process_and_on_a_server_train_the_same_model(
    live_server: LiveServer, moons: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = moons
    labels = np.where(y == 1, "b", "a")
    options = {**TUTORIAL, "epochs": 500, "seed": 7}
    here = MLPClassifier(**options).fit(X, labels)
    there = MLPClassifier(**options, server=live_server.url).fit(X, labels)
    for mine, theirs in zip(
        [*here.model_.weights, *here.model_.biases],
        [*there.model_.weights, *there.model_.biases],
        strict=True,
    ):
        np.testing.assert_array_equal(mine, theirs)
    assert here.loss_curve_ == there.loss_curve_ and here.n_iter_ == there.n_iter_ == 500
    np.testing.assert_array_equal(here.predict_proba(X), there.predict_proba(X))
    assert list(there.classes_) == ["a", "b"] and here.model_id_ is None
    with scratchnet.Client(live_server.url) as client:
        model = client.get_model(there.model_id_)
        assert model.architecture == [2, 3, 2] and model.hyperparameters.seed == 7
        served = client.predict(model, X[:5]).classes  # class indices: the labels stay here
        assert [there.classes_[i] for i in served] == list(there.predict(X[:5]))
    for server in (None, live_server.url):  # a ValueError either way, as scikit-learn wants
        with pytest.raises(ValueError, match="early_stopping"):
            MLPClassifier(epochs=10, server=server, early_stopping=True).fit(X, y)


@parametrize_with_checks([MLPRegressor(epochs=200, learning_rate=0.05)])
def test_scikit_learn_regressor_checks(estimator: Any, check: Any) -> None:
    check(estimator)


def test_the_regressor_takes_the_same_steps_as_the_engine_and_predicts_in_ys_shape() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0  # (60,)
    options = {"hidden_layers": (), "optimizer": "sgd", "learning_rate": 0.3, "epochs": 300}
    estimator = MLPRegressor(**options).fit(X, y)
    reference = train(
        Hyperparameters(**{**options, "hidden_layers": []}), X, y, 1,
        objective=Objective("regression"),
    )  # fmt: skip
    np.testing.assert_array_equal(estimator.model_.weights[0], reference.weights[0])
    assert estimator.predict(X).shape == (60,)
    assert estimator.score(X, y) > 0.999  # linear data, linear model
    two = MLPRegressor(**options).fit(X, np.column_stack([y, -y]))
    assert two.predict(X).shape == (60, 2) and two.n_outputs_ == 2


def test_the_regressor_on_a_server_trains_what_it_trains_here(live_server: LiveServer) -> None:
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (50, 2))
    y = np.sin(3 * X[:, 0]) + X[:, 1]
    options = {"hidden_layers": (8,), "epochs": 100}
    here = MLPRegressor(**options).fit(X, y)
    there = MLPRegressor(**options, server=live_server.url).fit(X, y)
    np.testing.assert_array_equal(there.predict(X), here.predict(X))
    assert there.model_id_ is not None and there.loss_curve_ == here.loss_curve_
