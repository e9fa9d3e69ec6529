"""Datasets: generators, bundled sets, user points, CSV, stratified splits."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from typing import Any, get_args

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_circles, make_moons

from engine import datasets
from engine.datasets import Dataset, from_csv, from_points, generate, load_builtin, split
from engine.errors import InvalidInput

# --- kinds and parameters ----------------------------------------------------------------------


def test_kind_tuples_match_the_literal_types() -> None:
    assert get_args(datasets.GeneratedKind) == datasets.GENERATED_KINDS
    assert get_args(datasets.BuiltinKind) == datasets.BUILTIN_KINDS
    assert set(get_args(datasets.Kind)) == {
        *datasets.GENERATED_KINDS,
        *datasets.BUILTIN_KINDS,
        "custom",
    }
    assert set(datasets.PARAMETERS) == set(get_args(datasets.Kind))
    assert set(datasets.DESCRIPTIONS) == set(get_args(datasets.Kind))


def test_parameters_say_which_apply() -> None:
    for kind in datasets.GENERATED_KINDS:
        applicable = set(datasets.PARAMETERS[kind])
        assert {"n_samples", "noise", "seed"} <= applicable
        classified = kind not in datasets.REGRESSION_KINDS
        assert ("n_classes" in applicable) == (classified and kind not in datasets.FIXED_N_CLASSES)
        assert ("n_features" in applicable) == (kind == "friedman1")
    for builtin in datasets.BUILTIN_KINDS:
        assert datasets.PARAMETERS[builtin] == {}
    assert datasets.PARAMETERS["custom"] == {}


def test_importing_datasets_does_not_import_sklearn() -> None:
    code = "import sys, engine.datasets; print('sklearn' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# --- generators --------------------------------------------------------------------------------


def test_moons_are_sklearns_make_moons_exactly() -> None:
    X, y = make_moons(200, noise=0.2, random_state=0)
    moons = generate("moons", n_samples=200, noise=0.2, seed=0)
    assert np.array_equal(moons.X, X)
    assert np.array_equal(moons.y, y)
    assert moons.classes == (0, 1)
    assert moons.feature_names == ("x1", "x2")


def test_circles_and_blobs_are_sklearns() -> None:
    X, y = make_circles(150, noise=0.05, factor=0.5, random_state=4)
    circles = generate("circles", n_samples=150, noise=0.05, seed=4)
    assert np.array_equal(circles.X, X) and np.array_equal(circles.y, y)
    X, y = make_blobs([34, 33, 33], n_features=2, cluster_std=0.7, random_state=2)
    blobs = generate("blobs", n_samples=100, noise=0.7, n_classes=3, seed=2)
    assert np.array_equal(blobs.X, X) and np.array_equal(blobs.y, y)


@pytest.mark.parametrize("kind", datasets.GENERATED_KINDS)
def test_same_seed_same_bits_other_seed_other_data(kind: str) -> None:
    a = generate(kind, seed=7)
    b = generate(kind, seed=7)
    c = generate(kind, seed=8)
    assert a.X.tobytes() == b.X.tobytes() and a.y.tobytes() == b.y.tobytes()
    assert not np.array_equal(a.X, c.X)


CLASSIFICATION_KINDS = [k for k in datasets.GENERATED_KINDS if k not in datasets.REGRESSION_KINDS]


@pytest.mark.parametrize("kind", CLASSIFICATION_KINDS)
def test_generated_data_is_well_formed_and_balanced(kind: str) -> None:
    n_classes = None if kind in datasets.FIXED_N_CLASSES else 3
    data = generate(kind, n_samples=301, n_classes=n_classes)
    assert data.X.shape == (301, 2) and data.X.dtype == np.float64
    assert data.y.dtype == np.int64
    assert np.isfinite(data.X).all()
    counts = np.bincount(data.y)
    assert counts.sum() == 301 and counts.max() - counts.min() <= 1
    assert data.classes == tuple(range(len(counts)))
    assert not data.X.flags.writeable and not data.y.flags.writeable


@pytest.mark.parametrize("kind", ["blobs", "spiral", "gaussian"])
@pytest.mark.parametrize("n_classes", [2, 5, 10])
def test_n_classes_is_respected(kind: str, n_classes: int) -> None:
    data = generate(kind, n_samples=20 * n_classes, n_classes=n_classes)
    assert data.n_classes == n_classes
    assert list(np.bincount(data.y)) == [20] * n_classes


def test_xor_labels_follow_the_quadrant_signs_without_noise() -> None:
    data = generate("xor", n_samples=400, noise=0.0, seed=3)
    x, y = data.X[:, 0], data.X[:, 1]
    assert np.array_equal(data.y, (x * y < 0).astype(np.int64))
    assert np.abs(data.X).max() <= 1.0
    # all four quadrants are used
    quadrants = {(bool(a > 0), bool(b > 0)) for a, b in data.X}
    assert len(quadrants) == 4


def test_spiral_radius_grows_along_each_arm_without_noise() -> None:
    data = generate("spiral", n_samples=90, noise=0.0, n_classes=3, seed=0)
    for label in range(3):
        radius = np.sort(np.hypot(*data.X[data.y == label].T))
        np.testing.assert_allclose(radius, np.linspace(0.0, 1.0, 30), atol=1e-12)


def test_spiral_arms_are_rotated_copies() -> None:
    data = generate("spiral", n_samples=60, noise=0.0, n_classes=2, seed=0)
    arm0 = data.X[data.y == 0]
    arm1 = data.X[data.y == 1]
    arm0 = arm0[np.argsort(np.hypot(*arm0.T))]  # along the arm, centre outwards
    arm1 = arm1[np.argsort(np.hypot(*arm1.T))]
    # with 2 arms the second is the first turned by pi
    np.testing.assert_allclose(arm1, -arm0, atol=1e-12)


def test_gaussian_means_lie_on_the_unit_circle_and_noise_is_the_spread() -> None:
    exact = generate("gaussian", n_samples=40, noise=0.0, n_classes=4, seed=1)
    for label in range(4):
        points = exact.X[exact.y == label]
        assert np.allclose(points, points[0])  # noise 0: every point on its mean
        np.testing.assert_allclose(np.hypot(*points[0]), 1.0)
    wide = generate("gaussian", n_samples=4000, noise=0.3, n_classes=2, seed=1)
    for label in range(2):
        std = wide.X[wide.y == label].std(axis=0)
        np.testing.assert_allclose(std, [0.3, 0.3], rtol=0.1)


def test_circles_radii_are_one_and_a_half_without_noise() -> None:
    data = generate("circles", n_samples=100, noise=0.0)
    radius = np.hypot(*data.X.T)
    np.testing.assert_allclose(radius[data.y == 0], 1.0)
    np.testing.assert_allclose(radius[data.y == 1], 0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "moons", "n_classes": 3}, "n_classes does not apply to moons"),
        ({"kind": "xor", "n_classes": 2}, "n_classes does not apply to xor"),
        ({"kind": "moons", "n_samples": 3}, "n_samples must be between 4 and"),
        ({"kind": "spiral", "n_classes": 5, "n_samples": 9}, "between 10 and"),
        ({"kind": "moons", "n_samples": 2_000_000}, "got 2000000"),
        ({"kind": "moons", "n_samples": 2.5}, "n_samples must be an integer, got 2.5"),
        ({"kind": "moons", "n_samples": True}, "n_samples must be an integer"),
        ({"kind": "moons", "noise": -0.1}, "noise must be a finite number >= 0, got -0.1"),
        ({"kind": "moons", "noise": float("nan")}, "got nan"),
        ({"kind": "moons", "noise": float("inf")}, "got inf"),
        ({"kind": "moons", "noise": "0.1"}, "noise must be a number"),
        ({"kind": "spiral", "n_classes": 1}, "n_classes must be between 2 and 10, got 1"),
        ({"kind": "blobs", "n_classes": 11}, "got 11"),
        ({"kind": "moons", "seed": -1}, "seed must be between 0 and 4294967295, got -1"),
        ({"kind": "moons", "seed": 2**32}, "seed must be between"),
        ({"kind": "squares"}, "unknown generator 'squares'"),
        ({"kind": "iris"}, "'iris' is a built-in dataset"),
        ({"kind": "iris", "n_samples": 10}, "built-in"),
    ],
)
def test_generate_rejects_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        generate(**kwargs)  # type: ignore[arg-type]


def test_generate_cap_is_adjustable() -> None:
    with pytest.raises(InvalidInput, match="between 4 and 100, got 101"):
        generate("moons", n_samples=101, max_samples=100)
    assert generate("moons", n_samples=100, max_samples=100).n_samples == 100


# --- built-in datasets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "shape", "classes"),
    [
        ("iris", (150, 4), ("setosa", "versicolor", "virginica")),
        ("wine", (178, 13), ("class_0", "class_1", "class_2")),
        ("breast_cancer", (569, 30), ("benign", "malignant")),
        ("digits", (1797, 64), tuple(range(10))),
    ],
)
def test_builtin_datasets(kind: str, shape: tuple[int, int], classes: tuple[object, ...]) -> None:
    data = load_builtin(kind)
    assert data.X.shape == shape and data.X.dtype == np.float64
    assert data.classes == classes
    assert all(type(c) is type(classes[0]) for c in data.classes)
    assert len(data.feature_names) == shape[1]
    assert load_builtin(kind) is data  # loaded once


def test_builtin_labels_keep_their_meaning_after_sorting() -> None:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    data = load_builtin("breast_cancer")
    assert data.class_counts == {"benign": 357, "malignant": 212}
    names = [data.classes[i] for i in data.y]
    assert names == [str(bunch.target_names[t]) for t in bunch.target]
    assert np.array_equal(data.X, bunch.data)
    assert load_builtin("iris").feature_names[0] == "sepal length (cm)"


def test_builtin_rejects_unknown_name() -> None:
    with pytest.raises(InvalidInput, match=r"unknown built-in dataset 'moons'; choose one of"):
        load_builtin("moons")


def test_builtin_arrays_cannot_be_modified() -> None:
    with pytest.raises(ValueError, match="read-only"):
        load_builtin("iris").X[0, 0] = 1.0


# --- user points -------------------------------------------------------------------------------


def test_from_points_sorts_string_labels_into_classes() -> None:
    data = from_points([[0, 1], [2, 3], [4, 5], [6, 7]], ["dog", "cat", "dog", "bird"])
    assert data.classes == ("bird", "cat", "dog")
    assert data.y.tolist() == [2, 1, 2, 0]
    assert data.X.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert data.feature_names == ("x1", "x2")


def test_from_points_int_labels_any_number_of_features() -> None:
    points = np.arange(15, dtype=np.int32).reshape(5, 3)
    data = from_points(points, np.array([5, -1, 5, 3, -1]), feature_names=["a", "b", "c"])
    assert data.classes == (-1, 3, 5)
    assert all(type(c) is int for c in data.classes)
    assert data.y.tolist() == [2, 0, 2, 1, 0]
    assert data.X.dtype == np.float64 and data.n_features == 3
    assert data.feature_names == ("a", "b", "c")
    assert data.class_counts == {-1: 2, 3: 1, 5: 2}


def test_from_points_copies_its_input() -> None:
    points = np.zeros((2, 2))
    data = from_points(points, [0, 1])
    points[0, 0] = 9.0
    assert data.X[0, 0] == 0.0


@pytest.mark.parametrize(
    ("points", "labels", "message"),
    [
        ([[0, 1], [2]], [0, 1], "point 1 has 1 values but point 0 has 2"),
        ([[0, 1], [2, 3]], [0], "got 1 labels for 2 points"),
        ([[0, 1], [2, 3]], [0, 1, 1], "got 3 labels for 2 points"),
        ([[0, 1], [2, float("nan")]], [0, 1], "point 1 is [2, nan]: values must be finite"),
        ([[0, 1], [float("inf"), 3]], [0, 1], "point 1 is"),
        ([[0, 1], [2, 3]], [1, 1], "every example has the label 1"),
        ([[0, 1], [2, 3]], [1, "a"], "labels mix integers and strings"),
        ([[0, 1], [2, 3]], [True, False], "label True at index 0 is neither"),
        ([[0, 1], [2, 3]], [0, 1.5], "label 1.5 at index 1"),
        ([], [], "non-empty list of rows"),
        ([[], []], [0, 1], "at least one feature"),
        ([[0, "a"], [2, 3]], [0, 1], "only numbers"),
        ([1, 2], [0, 1], "point 0 must be a list of numbers"),
        ("abc", [0, 1], "non-empty list of rows"),
    ],
)
def test_from_points_rejects_bad_input(points: object, labels: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        from_points(points, labels)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a"], "got 1 feature names for 2 features"),
        (["a", "a"], "feature name 'a' appears more than once"),
        (["a", " "], "non-empty strings"),
    ],
)
def test_from_points_rejects_bad_feature_names(names: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        from_points([[0, 1], [2, 3]], [0, 1], feature_names=names)


def test_from_points_cap() -> None:
    with pytest.raises(InvalidInput, match="at most 3 points are allowed, got 4"):
        from_points([[0]] * 4, [0, 1, 0, 1], max_samples=3)


def test_dataset_checks_its_invariants() -> None:
    X = np.zeros((3, 2))
    with pytest.raises(InvalidInput, match="at least 2 classes"):
        Dataset(X=X, y=np.zeros(3, dtype=np.int64), classes=(0,), feature_names=("a", "b"))
    with pytest.raises(InvalidInput, match="class 'c' has no examples"):
        Dataset(X=X, y=np.array([0, 1, 1]), classes=("a", "b", "c"), feature_names=("a", "b"))
    with pytest.raises(InvalidInput, match="sorted and distinct"):
        Dataset(X=X, y=np.array([0, 1, 1]), classes=("b", "a"), feature_names=("a", "b"))
    with pytest.raises(InvalidInput, match=r"class indices 0\.\.1"):
        Dataset(X=X, y=np.array([0, 1, 2]), classes=(0, 1), feature_names=("a", "b"))
    with pytest.raises(InvalidInput, match=r"y must have shape \(3,\)"):
        Dataset(X=X, y=np.array([0, 1]), classes=(0, 1), feature_names=("a", "b"))
    with pytest.raises(InvalidInput, match="1 feature names for 2 features"):
        Dataset(X=X, y=np.array([0, 1, 1]), classes=(0, 1), feature_names=("a",))


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_last_column_is_the_label_by_default() -> None:
    data = from_csv("width,height,kind\n1,2,b\n3.5,-4e2,a\n 5 , 6 , b \n")
    assert data.feature_names == ("width", "height")
    assert data.X.tolist() == [[1, 2], [3.5, -400], [5, 6]]
    assert data.classes == ("a", "b")
    assert data.y.tolist() == [1, 0, 1]


def test_csv_label_column_by_name_and_int_labels() -> None:
    data = from_csv("a,label,b\n1,10,2\n3,2,4\n5,-1,6\n", label_column="label")
    assert data.feature_names == ("a", "b")
    assert data.classes == (-1, 2, 10)
    assert all(type(c) is int for c in data.classes)
    assert data.X.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_csv_labels_that_are_not_all_ints_stay_strings() -> None:
    data = from_csv("x,y\n1,1\n2,2.5\n3,a\n")
    assert data.classes == ("1", "2.5", "a")


def test_csv_accepts_quotes_crlf_bom_and_blank_lines() -> None:
    text = '\ufeff"x, cm",y,"class"\r\n1,2,"big, red"\r\n\r\n3,4,small\r\n'
    data = from_csv(text)
    assert data.feature_names == ("x, cm", "y")
    assert data.classes == ("big, red", "small")
    assert data.n_samples == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the CSV is empty"),
        ("\n\n", "the CSV is empty"),
        ("a,b,c\n", "header but no data rows"),
        ("a,b,c\n1,2,x\n3,4\n", "line 3 has 2 fields but the header has 3"),
        ("a,b,c\n1,2,x\n\n3,4,y,5\n", "line 4 has 4 fields"),
        ("a,b,c\n1,2,x\n3,abc,y\n", "line 3, column 'b': 'abc' is not a number"),
        ("a,b,c\n1,2,x\n3,,y\n", "line 3, column 'b': '' is not a number"),
        ("a,b,c\n1,nan,x\n3,4,y\n", "line 2, column 'b': 'nan' is not a finite number"),
        ("a,b,c\n1,2,x\ninf,4,y\n", "line 3, column 'a': 'inf' is not a finite"),
        ("a,b,c\n1,2,x\n-Infinity,4,y\n", "line 3, column 'a'"),
        ("a,b,c\n1,1e309,x\n3,4,y\n", "line 2, column 'b': '1e309' is not a finite"),
        ("a,b,c\n1,2,x\n3,4,x\n", "every example has the label 'x'"),
        ("1,2,3\n4,5,6\n", "line 1 looks like data"),
        ("a\n1\n2\n", "at least one feature column and a label column"),
        ("a,a,c\n1,2,x\n", "column 'a' appears twice"),
        ("a,,c\n1,2,x\n", "every column in the header needs a name"),
        ("a,b,c\n1,2,\n3,4,y\n", "line 2: the label column 'c' is empty"),
        ('a,b,c\n1,2,"x\n', "line 2"),
    ],
)
def test_csv_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        from_csv(text)


def test_csv_unknown_label_column() -> None:
    with pytest.raises(InvalidInput, match=r"no column named 'kind'; the header has \['a', 'b'\]"):
        from_csv("a,b\n1,2\n", label_column="kind")


def test_csv_row_cap() -> None:
    with pytest.raises(InvalidInput, match="line 4: at most 2 data rows"):
        from_csv("a,b\n1,0\n2,1\n3,1\n", max_samples=2)


# --- split -------------------------------------------------------------------------------------


def _labels(n_per_class: dict[str, int]) -> Dataset:
    labels = [label for label, n in n_per_class.items() for _ in range(n)]
    points = [[float(i), float(i % 7)] for i in range(len(labels))]
    return from_points(points, labels)


def test_split_is_stratified_with_half_up_rounding() -> None:
    data = _labels({"a": 10, "b": 30, "c": 6})
    parts = split(data, test_fraction=0.25, standardize=False, seed=0)
    # 2.5 -> 3, 7.5 -> 8, 1.5 -> 2
    assert np.bincount(parts.y_test).tolist() == [3, 8, 2]
    assert np.bincount(parts.y_train).tolist() == [7, 22, 4]


def test_split_indices_partition_the_dataset() -> None:
    data = generate("spiral", n_samples=150)
    parts = split(data, test_fraction=0.3, standardize=False, seed=5)
    both = np.concatenate([parts.train_index, parts.test_index])
    assert sorted(both.tolist()) == list(range(150))
    assert np.all(np.diff(parts.train_index) > 0) and np.all(np.diff(parts.test_index) > 0)
    assert parts.train_index.dtype == np.int64 and parts.test_index.dtype == np.int64
    assert np.array_equal(parts.X_train, data.X[parts.train_index])
    assert np.array_equal(parts.y_test, data.y[parts.test_index])
    assert parts.scaler is None


def test_split_is_deterministic_per_seed() -> None:
    data = generate("moons")
    a = split(data, test_fraction=0.2, standardize=True, seed=1)
    b = split(data, test_fraction=0.2, standardize=True, seed=1)
    c = split(data, test_fraction=0.2, standardize=True, seed=2)
    assert np.array_equal(a.test_index, b.test_index)
    assert a.X_train.tobytes() == b.X_train.tobytes()
    assert not np.array_equal(a.test_index, c.test_index)


def test_split_scaler_is_fitted_on_training_rows_only() -> None:
    data = generate("blobs", n_samples=90)
    parts = split(data, test_fraction=0.3, standardize=True, seed=0)
    raw_train = data.X[parts.train_index]
    raw_test = data.X[parts.test_index]
    assert parts.scaler is not None
    np.testing.assert_allclose(parts.scaler.mean, raw_train.mean(axis=0))
    np.testing.assert_allclose(parts.scaler.scale, raw_train.std(axis=0))
    np.testing.assert_allclose(parts.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(parts.X_train.std(axis=0), 1.0)
    np.testing.assert_allclose(parts.X_test, (raw_test - raw_train.mean(0)) / raw_train.std(0))


def test_split_without_test_set_has_empty_arrays_of_the_right_shape() -> None:
    data = load_builtin("iris")
    parts = split(data, test_fraction=0.0, standardize=True, seed=0)
    assert parts.X_test.shape == (0, 4) and parts.X_test.dtype == np.float64
    assert parts.y_test.shape == (0,) and parts.y_test.dtype == np.int64
    assert parts.test_index.shape == (0,)
    assert parts.X_train.shape == (150, 4)
    assert parts.train_index.tolist() == list(range(150))


def test_split_keeps_one_training_example_per_class() -> None:
    data = _labels({"a": 5, "b": 40})
    parts = split(data, test_fraction=0.9, standardize=False, seed=0)
    assert np.bincount(parts.y_train).tolist() == [1, 4]
    assert np.bincount(parts.y_test).tolist() == [4, 36]


def test_split_names_the_class_without_test_examples() -> None:
    data = _labels({"common": 40, "rare": 3})
    with pytest.raises(InvalidInput, match=r"no example of class 'rare'.*it has 3 examples"):
        split(data, test_fraction=0.1, standardize=False, seed=0)
    single = _labels({"common": 40, "once": 1})
    with pytest.raises(InvalidInput, match=r"class 'once'.*it has 1 example;"):
        split(single, test_fraction=0.5, standardize=False, seed=0)
    assert split(single, test_fraction=0.0, standardize=False, seed=0).y_train.size == 41


@pytest.mark.parametrize("fraction", [1.0, 1.5, -0.1, float("nan"), float("inf")])
def test_split_rejects_fraction_outside_zero_one(fraction: float) -> None:
    with pytest.raises(InvalidInput, match="test_fraction must be >= 0 and < 1"):
        split(generate("moons"), test_fraction=fraction, standardize=False, seed=0)


def test_split_rejects_bad_seed() -> None:
    with pytest.raises(InvalidInput, match="seed must be between 0 and"):
        split(generate("moons"), test_fraction=0.2, standardize=False, seed=-3)


# --- regression ----------------------------------------------------------------------------------


def test_friedman1_is_sklearns_make_friedman1_with_any_number_of_features() -> None:
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(150, n_features=7, noise=0.5, random_state=3)
    data = generate("friedman1", n_samples=150, n_features=7, noise=0.5, seed=3)
    assert data.task == "regression" and data.classes == () and data.target_names == ("y",)
    assert np.array_equal(data.X, X)
    assert np.array_equal(data.y, y.reshape(-1, 1))
    assert data.feature_names == tuple(f"x{i}" for i in range(1, 8))
    with pytest.raises(InvalidInput, match="n_features must be between 5 and 100"):
        generate("friedman1", n_features=4)
    with pytest.raises(InvalidInput, match="n_features does not apply to reg_plane"):
        generate("reg_plane", n_features=5)
    with pytest.raises(InvalidInput, match="n_classes does not apply to friedman1"):
        generate("friedman1", n_classes=3)


def test_reg_plane_and_reg_gauss_are_the_playgrounds() -> None:
    plane = generate("reg_plane", n_samples=500, noise=0.0, seed=1)
    assert plane.X.min() >= -6 and plane.X.max() <= 6
    np.testing.assert_allclose(plane.y[:, 0], plane.X.sum(axis=1) / 10, rtol=1e-15)
    gauss = generate("reg_gauss", n_samples=500, noise=0.0, seed=1)
    # by hand at a few points: the bump of largest magnitude, sign * max(0, 1 - distance/2)
    for (x, y), target in zip(gauss.X[:20], gauss.y[:20, 0], strict=True):
        heights = [
            sign * max(0.0, 1 - math.hypot(x - cx, y - cy) / 2)
            for cx, cy, sign in datasets.PLAYGROUND_BUMPS
        ]
        assert target == pytest.approx(max(heights, key=abs), abs=1e-15)
    noisy = generate("reg_plane", n_samples=500, noise=0.5, seed=1)
    assert np.array_equal(noisy.X, plane.X)  # the same points, targets read elsewhere
    assert 0 < np.abs(noisy.y - plane.y).max() <= 0.6 + 1e-12  # |noise| <= 0.5 * 6 each, /10


def test_diabetes_is_bundled() -> None:
    from sklearn.datasets import load_diabetes

    data = datasets.load_builtin("diabetes")
    bunch = load_diabetes()
    assert data.task == "regression" and data.n_samples == 442 and data.n_targets == 1
    assert np.array_equal(data.y[:, 0], bunch.target)
    assert data.feature_names == tuple(bunch.feature_names)


def test_custom_targets_one_or_several_columns() -> None:
    one = datasets.from_points([[0.0], [1.0], [2.0]], None, targets=[1.5, -2.0, 3.25])
    assert one.y.tolist() == [[1.5], [-2.0], [3.25]] and one.target_names == ("y",)
    two = datasets.from_points(
        [[0.0], [1.0]], None, targets=[[1.0, 2.0], [3.0, 4.0]], target_names=["a", "b"]
    )
    assert two.n_targets == 2 and two.target_names == ("a", "b") and two.n_outputs == 2


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([1.0, float("nan")], "the target of point 1 is"),
        ([1.0, float("inf")], "targets must be finite"),
        ([1.0], "got 1 targets for 2 points"),
        ([[1.0, 2.0], [3.0]], "rows of numbers of one length"),
        (["a", "b"], "target 0 is 'a'; targets must be numbers"),
        ([True, False], "targets must be numbers"),
        ([1e200, 0.0], "target values must lie within"),
    ],
)
def test_bad_targets_are_refused(targets: list[Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        datasets.from_points([[0.0], [1.0]], None, targets=targets)


def test_labels_and_targets_exclude_each_other() -> None:
    with pytest.raises(InvalidInput, match=r"labels .* or targets .*, not both"):
        datasets.from_points([[0.0], [1.0]], [0, 1], targets=[1.0, 2.0])


def test_csv_with_a_regression_target() -> None:
    text = "size,rooms,price\n50,2,100.5\n70,3,150\n30,1,80\n"
    data = datasets.from_csv(text, task="regression")
    assert data.target_names == ("price",) and data.feature_names == ("size", "rooms")
    assert data.y[:, 0].tolist() == [100.5, 150.0, 80.0]
    named = datasets.from_csv(text, "size", task="regression")
    assert named.target_names == ("size",) and named.y[:, 0].tolist() == [50.0, 70.0, 30.0]
    with pytest.raises(InvalidInput, match="line 3, target column 'price': 'cheap' is not a"):
        datasets.from_csv("a,price\n1,2\n3,cheap\n", task="regression")
    with pytest.raises(InvalidInput, match="'nan' is not a finite number"):
        datasets.from_csv("a,price\n1,2\n3,nan\n", task="regression")


def test_a_regression_split_is_random_and_standardizes_the_targets_on_the_training_part() -> None:
    data = generate("friedman1", n_samples=100, seed=2)
    parts = split(data, test_fraction=0.25, standardize=True, seed=4)
    assert parts.y_train.shape == (75, 1) and parts.y_test.shape == (25, 1)
    assert parts.target_scaler is not None
    raw_train = data.y[parts.train_index]
    np.testing.assert_allclose(parts.target_scaler.mean, raw_train.mean(axis=0))
    np.testing.assert_allclose(parts.target_scaler.scale, raw_train.std(axis=0))
    np.testing.assert_allclose(parts.y_train.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(
        parts.y_test, (data.y[parts.test_index] - raw_train.mean()) / raw_train.std()
    )
    again = split(data, test_fraction=0.25, standardize=True, seed=4)
    assert np.array_equal(again.test_index, parts.test_index)
    plain = split(data, test_fraction=0.25, standardize=False, seed=4)
    assert plain.target_scaler is None and np.array_equal(plain.y_test, data.y[plain.test_index])
    with pytest.raises(InvalidInput, match="puts none of the 3 points on the test side"):
        split(datasets.from_points([[0.0], [1.0], [2.0]], None, targets=[1, 2, 3]),
              test_fraction=0.1, standardize=False, seed=0)  # fmt: skip
