"""Input feature maps: fixed functions of the input applied inside a model before its first layer.

`input_features` (a hyperparameter) lists maps; the network's input is their outputs side by
side, in the order listed. For d input features x_1..x_d:

    identity   x_1 .. x_d                              d columns
    square     x_1^2 .. x_d^2                          d columns
    sin, cos   sin(x_1) .. sin(x_d), cos likewise      d columns each
    products   x_i * x_j for i < j, (1,2) (1,3) .. (1,d) (2,3) .. (d-1,d)   d(d-1)/2 columns

Order with standardization: the scaler standardizes the RAW inputs first, then the map applies
to the standardized values; the mapped columns are not standardized again. So the map sees
values of order 1 whatever the data's units: squares and products stay of order 1 instead of
the square of the units (a feature in thousands would give squares in millions and a step size
that fits no column), sin and cos see about one period over the data instead of aliasing over
thousands of them, and one scaler per dataset serves every map (a sweep's configurations with
different maps share their dataset's standardization). Models, pictures, inference and `.npz`
files all take raw points: the map is part of the model, like its scaler.

The map is fixed (nothing in it is learned), so gradients stop at its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from engine.errors import InvalidInput

FeatureMap = Literal["identity", "square", "sin", "cos", "products"]
FEATURE_MAPS: tuple[FeatureMap, ...] = ("identity", "square", "sin", "cos", "products")
IDENTITY: tuple[FeatureMap, ...] = ("identity",)

# The widest network input a map may produce: the dataset limit on features
# (engine.datasets.MAX_FEATURES) holds for the mapped input too, so a model's first layer is
# never wider than one trained on raw data could be.
MAX_INPUT_WIDTH = 10_000
# Mapped values of one split (rows x width) at most: 2^25 float64 values are 256 MiB, the order
# of the largest dataset the service holds (a 64 MiB JSON body carries ~6M numbers) times four
# maps; a worker holds the mapped split in the training dtype beside the raw one.
MAX_MAPPED_VALUES = 2**25


def columns_of(feature_map: FeatureMap, n_features: int) -> int:
    """Columns one map gives for n_features inputs."""
    return n_features * (n_features - 1) // 2 if feature_map == "products" else n_features


def input_width(features: Sequence[FeatureMap], n_features: int) -> int:
    """The network's input width: columns of every map for n_features raw inputs."""
    return sum(columns_of(feature_map, n_features) for feature_map in features)


def n_features_for(features: Sequence[FeatureMap], width: int) -> int | None:
    """The raw feature count whose mapped width is `width` (None when none is): the width
    grows strictly with the count, so at most one fits."""
    low, high = 1, width + 1  # products alone: n(n-1)/2 >= n - 1 columns
    while low <= high:  # input_width is increasing in n_features: bisect
        middle = (low + high) // 2
        mapped = input_width(features, middle)
        if mapped == width:
            return middle
        if mapped < width:
            low = middle + 1
        else:
            high = middle - 1
    return None


def check_width(features: Sequence[FeatureMap], n_features: int, n_rows: int = 0) -> int:
    """The mapped width for n_features inputs (and n_rows rows), within this module's limits;
    InvalidInput saying which limit and what to do otherwise."""
    width = input_width(features, n_features)
    listed = ", ".join(features)
    if width < 1:
        raise InvalidInput(
            f"input_features [{listed}] give no column for {n_features} feature: products "
            "needs at least 2 features; add identity or another map"
        )
    if width > MAX_INPUT_WIDTH:
        raise InvalidInput(
            f"input_features [{listed}] map {n_features} features to {width} columns, over "
            f"the {MAX_INPUT_WIDTH} a network input may have; drop products or use fewer "
            "features"
        )
    if tuple(features) != IDENTITY and n_rows * width > MAX_MAPPED_VALUES:  # a mapped copy
        raise InvalidInput(
            f"input_features [{listed}] map {n_rows} points of {n_features} features to "
            f"{n_rows * width} values, over the {MAX_MAPPED_VALUES} a mapped split may hold; "
            "use fewer maps, fewer features or fewer points"
        )
    return width


def map_features(X: np.ndarray, features: Sequence[FeatureMap]) -> np.ndarray:
    """The maps' columns side by side: (n, d) -> (n, input_width(features, d)) float64. The
    identity map alone returns X itself (as float64)."""
    X = np.asarray(X, dtype=np.float64)  # (n, d)
    if tuple(features) == IDENTITY:
        return X
    n, d = X.shape
    mapped = np.empty((n, input_width(features, d)), dtype=np.float64)  # (n, width)
    start = 0
    for feature_map in features:
        stop = start + columns_of(feature_map, d)
        out = mapped[:, start:stop]
        if feature_map == "identity":
            out[...] = X
        elif feature_map == "square":
            np.square(X, out=out)
        elif feature_map == "sin":
            np.sin(X, out=out)
        elif feature_map == "cos":
            np.cos(X, out=out)
        elif feature_map == "products":
            rows, columns = np.triu_indices(d, k=1)  # (i, j) pairs, i < j, row-major
            np.multiply(X[:, rows], X[:, columns], out=out)
        else:
            raise InvalidInput(f"unknown input feature map {feature_map!r}")
        start = stop
    return mapped
