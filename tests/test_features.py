"""Input feature maps: each map's columns by hand, widths and their limits, the map inside the
model (raw points in, through the scaler first), `.npz` round trips, and a logistic regression
that separates circles once it is given squares."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from engine.datasets import generate, split
from engine.errors import InvalidInput, ModelFormatError
from engine.features import (
    MAX_INPUT_WIDTH,
    MAX_MAPPED_VALUES,
    check_width,
    input_width,
    map_features,
    n_features_for,
)
from engine.hyperparameters import Hyperparameters
from engine.model import Model
from engine.network import predict_proba
from engine.serialize import model_from_npz, model_to_npz
from engine.training import train


def test_each_map_by_hand() -> None:
    X = np.array([[1.0, 2.0, -3.0], [0.5, 0.0, 4.0]])  # (2, 3)
    assert map_features(X, ["identity"]).tolist() == X.tolist()
    assert map_features(X, ["square"]).tolist() == [[1.0, 4.0, 9.0], [0.25, 0.0, 16.0]]
    # pairs (0, 1), (0, 2), (1, 2)
    assert map_features(X, ["products"]).tolist() == [[2.0, -3.0, -6.0], [0.0, 2.0, 0.0]]
    sines = map_features(X, ["sin"])
    assert sines[0].tolist() == [math.sin(1.0), math.sin(2.0), math.sin(-3.0)]
    assert sines[1].tolist() == [math.sin(0.5), 0.0, math.sin(4.0)]
    cosines = map_features(X, ["cos"])
    assert cosines[1].tolist() == [math.cos(0.5), 1.0, math.cos(4.0)]


def test_maps_side_by_side_in_the_order_listed() -> None:
    X = np.array([[2.0, 3.0]])
    assert map_features(X, ["identity", "square", "products"]).tolist() == [
        [2.0, 3.0, 4.0, 9.0, 6.0]
    ]
    assert map_features(X, ["products", "identity"]).tolist() == [[6.0, 2.0, 3.0]]
    assert map_features(X, ["cos", "sin"]).tolist() == [
        [math.cos(2.0), math.cos(3.0), math.sin(2.0), math.sin(3.0)]
    ]


@pytest.mark.parametrize(
    ("features", "n_features", "width"),
    [
        (["identity"], 7, 7),
        (["identity", "square"], 2, 4),
        (["products"], 2, 1),
        (["products"], 5, 10),
        (["identity", "square", "sin", "cos", "products"], 4, 22),
    ],
)
def test_widths_and_back(features: Any, n_features: int, width: int) -> None:
    assert input_width(features, n_features) == width
    assert map_features(np.ones((3, n_features)), features).shape == (3, width)
    assert n_features_for(features, width) == n_features


def test_a_width_no_count_gives_is_none() -> None:
    assert n_features_for(["identity", "square"], 5) is None  # widths are even
    assert n_features_for(["products"], 2) is None  # 1, 3, 6, ...


def test_width_limits_name_the_map_and_what_to_do() -> None:
    with pytest.raises(InvalidInput, match="products needs at least 2 features"):
        check_width(["products"], 1)
    # 141 features: 141 + 141*140/2 = 10,011 columns
    with pytest.raises(InvalidInput, match=f"10011 columns, over the {MAX_INPUT_WIDTH}"):
        check_width(["identity", "products"], 141)
    assert check_width(["identity", "products"], 140) == 140 + 140 * 139 // 2
    rows = MAX_MAPPED_VALUES // 40 + 1
    with pytest.raises(InvalidInput, match="over the 33554432 a mapped split may hold"):
        check_width(["identity", "square", "sin", "cos"], 10, rows)


def test_hyperparameter_validation() -> None:
    assert Hyperparameters().input_features == ["identity"]
    for bad, message in [
        ([], "at least 1 item"),
        (["square", "identity", "square"], "square is listed more than once"),
        (["x2"], "'identity', 'square', 'sin', 'cos' or 'products'"),
        ("identity", "valid list"),
    ]:
        with pytest.raises(ValidationError, match=message):
            Hyperparameters(input_features=bad)


# -- inside the model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def circles() -> Any:
    dataset = generate("circles", n_samples=400, noise=0.1, seed=0)
    return dataset, split(dataset, test_fraction=0.25, standardize=True, seed=0)


def _logistic(features: list[str]) -> Hyperparameters:
    return Hyperparameters(
        hidden_layers=[], input_features=features, learning_rate=0.1, epochs=300, seed=0
    )


def test_logistic_regression_separates_circles_given_squares(circles: Any) -> None:
    """The tutorial's remark that linear models need hand-made features: with x^2 and y^2 a
    linear boundary in the mapped space is a circle in the plane."""
    _dataset, parts = circles
    plain = train(
        _logistic(["identity"]), parts.X_train, parts.y_train, 2, parts.X_test, parts.y_test
    )
    squared = train(
        _logistic(["identity", "square"]),
        parts.X_train,
        parts.y_train,
        2,
        parts.X_test,
        parts.y_test,
    )
    assert plain.metrics["test_accuracy"] is not None and plain.metrics["test_accuracy"] < 0.7
    assert squared.metrics["test_accuracy"] is not None
    assert squared.metrics["test_accuracy"] >= 0.95
    assert squared.weights[0].shape == (4, 2)  # x, y, x^2, y^2 -> 2 classes


def test_the_model_takes_raw_points_scaler_first_then_the_map(circles: Any) -> None:
    dataset, parts = circles
    hp = _logistic(["identity", "square"])
    result = train(hp, parts.X_train, parts.y_train, 2)
    model = Model(result.weights, result.biases, hp.activation, dataset.classes, hp, parts.scaler)
    assert model.n_features == 2 and model.n_inputs == 4 and model.architecture == [4, 2]
    raw = dataset.X[parts.test_index[:5]]  # (5, 2), the dataset's units
    standardized = (raw - parts.scaler.mean) / parts.scaler.scale
    by_hand = np.column_stack([standardized, standardized**2])  # (5, 4)
    expected = predict_proba(result.weights, result.biases, hp.activation, by_hand)
    np.testing.assert_allclose(model.predict_proba(raw), expected, rtol=1e-15)
    with pytest.raises(InvalidInput, match=r"shape \(n, 2\)"):
        model.predict_proba(by_hand)  # mapped points are not what the model takes
    with pytest.raises(InvalidInput, match="overflows float64"):
        model.predict_proba([[1e300, 0.0]])


def test_npz_records_the_map_and_old_files_load_as_identity(circles: Any) -> None:
    dataset, parts = circles
    hp = _logistic(["identity", "square", "products"])
    result = train(hp, parts.X_train, parts.y_train, 2)
    model = Model(result.weights, result.biases, hp.activation, dataset.classes, hp, parts.scaler)
    loaded = model_from_npz(model_to_npz(model))
    assert loaded.hyperparameters.input_features == ["identity", "square", "products"]
    assert loaded.n_features == 2 and loaded.architecture == [5, 2]
    points = dataset.X[:7]
    np.testing.assert_array_equal(loaded.predict_proba(points), model.predict_proba(points))

    # A file from before maps: its hyperparameters have no input_features.
    plain_hp = _logistic(["identity"])
    plain = train(plain_hp, parts.X_train, parts.y_train, 2)
    old = _without_input_features(
        model_to_npz(Model(plain.weights, plain.biases, "tanh", dataset.classes, plain_hp))
    )
    assert old.hyperparameters.input_features == ["identity"] and old.n_features == 2

    # A map that cannot give the first layer's width is refused.
    with pytest.raises(ModelFormatError, match="cannot give the first layer's 2 inputs"):
        _with_hyperparameters(
            model_to_npz(Model(plain.weights, plain.biases, "tanh", dataset.classes, plain_hp)),
            {"input_features": ["identity", "products"]},
        )


def _rewritten(data: bytes, change: Any) -> bytes:
    archive = dict(np.load(io.BytesIO(data), allow_pickle=False))
    metadata = json.loads(str(archive["metadata"][()]))
    change(metadata)
    archive["metadata"] = np.array(json.dumps(metadata))
    buffer = io.BytesIO()
    np.savez(buffer, **archive)
    return buffer.getvalue()


def _without_input_features(data: bytes) -> Model:
    rewritten = _rewritten(data, lambda metadata: metadata["hyperparameters"].pop("input_features"))
    return model_from_npz(rewritten)


def _with_hyperparameters(data: bytes, update: dict[str, Any]) -> Model:
    return model_from_npz(
        _rewritten(data, lambda metadata: metadata["hyperparameters"].update(update))
    )


def test_float32_overflow_after_the_map_is_refused() -> None:
    X = np.array([[1e20, 0.0], [0.0, 1.0]])
    hp = Hyperparameters(hidden_layers=[], dtype="float32", input_features=["identity", "square"])
    with pytest.raises(InvalidInput, match=r"after input_features .* beyond the float32 range"):
        train(hp, X, np.array([0, 1]), 2)
    with pytest.raises(InvalidInput, match="products needs at least 2 features"):
        train(Hyperparameters(input_features=["products"]), X[:, :1], np.array([0, 1]), 2)
