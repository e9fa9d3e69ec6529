"""Datasets: 2-D generators, scikit-learn's bundled sets, user points and CSV, stratified splits.

Every source ends in the same `Dataset`: float64 features, int64 class indices 0..k-1 and the
user-facing label of each index, sorted; or, for regression (`task`), float64 targets (n, K) and
the name of each target column. scikit-learn is imported inside the functions that use it, so
importing this module stays cheap for a training worker.
"""

from __future__ import annotations

import csv
import math
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from engine.errors import InvalidInput
from engine.hyperparameters import Task
from engine.model import Label, Scaler

GeneratedKind = Literal[
    "moons", "circles", "blobs", "xor", "spiral", "gaussian", "reg_plane", "reg_gauss", "friedman1"
]
BuiltinKind = Literal["iris", "wine", "breast_cancer", "digits", "diabetes"]
Kind = Literal[GeneratedKind, BuiltinKind, "custom"]
Parameter = Literal["n_samples", "noise", "n_classes", "n_features", "seed"]

GENERATED_KINDS: tuple[GeneratedKind, ...] = (
    "moons",
    "circles",
    "blobs",
    "xor",
    "spiral",
    "gaussian",
    "reg_plane",
    "reg_gauss",
    "friedman1",
)
BUILTIN_KINDS: tuple[BuiltinKind, ...] = ("iris", "wine", "breast_cancer", "digits", "diabetes")
# The kinds whose targets are real numbers (custom and CSV data say their task themselves).
REGRESSION_KINDS: frozenset[Kind] = frozenset({"reg_plane", "reg_gauss", "friedman1", "diabetes"})

# The parameters each kind takes, with their defaults. A parameter missing here does not apply.
PARAMETERS: Mapping[Kind, Mapping[Parameter, int | float]] = {
    "moons": {"n_samples": 200, "noise": 0.2, "seed": 0},
    "circles": {"n_samples": 200, "noise": 0.1, "seed": 0},
    "blobs": {"n_samples": 200, "noise": 1.0, "n_classes": 3, "seed": 0},
    "xor": {"n_samples": 200, "noise": 0.1, "seed": 0},
    "spiral": {"n_samples": 300, "noise": 0.2, "n_classes": 3, "seed": 0},
    "gaussian": {"n_samples": 200, "noise": 0.5, "n_classes": 2, "seed": 0},
    "reg_plane": {"n_samples": 200, "noise": 0.1, "seed": 0},
    "reg_gauss": {"n_samples": 200, "noise": 0.1, "seed": 0},
    "friedman1": {"n_samples": 200, "noise": 1.0, "n_features": 10, "seed": 0},
    "iris": {},
    "wine": {},
    "breast_cancer": {},
    "digits": {},
    "diabetes": {},
    "custom": {},
}

# Class count of the generators whose shape fixes it.
FIXED_N_CLASSES: Mapping[GeneratedKind, int] = {"moons": 2, "circles": 2, "xor": 2}

DESCRIPTIONS: Mapping[Kind, str] = {
    "moons": "two interleaving half circles; noise is the std of gaussian jitter",
    "circles": "a small circle inside a large one (radius ratio 0.5); noise is the jitter std",
    "blobs": "n_classes gaussian blobs at random centres in [-10, 10]^2; noise is their std",
    "xor": "uniform points in [-1, 1]^2, class 1 where x*y < 0; noise is jitter added "
    "after labelling, so classes overlap near the axes",
    "spiral": "n_classes interleaved spiral arms; noise is the std of the angle jitter",
    "gaussian": "n_classes gaussian clusters with means evenly spaced on the unit circle; "
    "noise is their std and controls how much they overlap",
    "iris": "150 iris flowers, 4 measurements, 3 species",
    "wine": "178 wines, 13 chemical measurements, 3 cultivars",
    "breast_cancer": "569 tumours, 30 cell-nucleus features, benign or malignant",
    "digits": "1797 8x8 images of handwritten digits, 64 pixel intensities, 10 digits",
    "reg_plane": "regression: uniform points in [-6, 6]^2, target (x1 + x2)/10 taken at the "
    "point moved by uniform noise of up to noise*6 per coordinate (the Playground's plane)",
    "reg_gauss": "regression: uniform points in [-6, 6]^2 among six signed bumps, target the "
    "largest in magnitude of sign * max(0, 1 - distance/2), at the point moved like reg_plane's "
    "(the Playground's multi-gaussian)",
    "friedman1": "regression: n_features >= 5 uniform features in [0, 1]; target 10 sin(pi x1 "
    "x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 plus gaussian noise of std noise (scikit-learn's "
    "make_friedman1); the other features are irrelevant",
    "diabetes": "regression: 442 patients, 10 baseline measurements (scaled), disease "
    "progression a year later",
    "custom": "points and labels (or regression targets) supplied by the user",
}

# Hard sanity limits; the service enforces its own, smaller ones.
MAX_SAMPLES = 1_000_000
MAX_FEATURES = 10_000
# Largest feature magnitude: beyond it, standardizing (squares) and drawing (ranges) overflow.
MAX_ABS_VALUE = 1e100
MAX_GENERATED_CLASSES = 10
MAX_SEED = 2**32 - 1
# The fewest points a regression generator makes: as few as a 2-class generator (2 a class).
MIN_REGRESSION_SAMPLES = 4
MIN_FRIEDMAN_FEATURES = 5  # make_friedman1's target reads the first five
MAX_GENERATED_FEATURES = 100  # friedman1's: the rest are noise, more says nothing new


def _check_magnitude(values: np.ndarray, what: str) -> None:
    """InvalidInput naming the first value beyond +-MAX_ABS_VALUE of values (n, columns)."""
    too_large = np.abs(values) > MAX_ABS_VALUE  # (n_samples, columns)
    if too_large.any():
        row, column = (int(i) for i in np.argwhere(too_large)[0])
        raise InvalidInput(
            f"point {row} has {values[row, column]:g} in {what} {column}; {what} values must "
            f"lie within +-{MAX_ABS_VALUE:g} (rescale the data)"
        )


@dataclass(frozen=True)
class Dataset:
    """Features, class indices and the label of each index; for regression, features and
    real-valued targets with a name per target column. Arrays are read-only copies."""

    X: np.ndarray  # (n_samples, n_features) float64, finite
    # classification: (n_samples,) int64 in 0..n_classes-1, every class present;
    # regression: (n_samples, n_targets) float64, finite
    y: np.ndarray
    classes: tuple[Label, ...]  # classes[i] is the user's label of index i, sorted; () regression
    feature_names: tuple[str, ...]
    task: Task = "classification"
    target_names: tuple[str, ...] = ()  # regression: one per column of y

    def __post_init__(self) -> None:
        X = np.array(self.X, dtype=np.float64)
        regression = self.task == "regression"
        y = np.array(self.y, dtype=np.float64 if regression else np.int64)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise InvalidInput(f"X must have shape (n_samples, n_features), got {X.shape}")
        if X.shape[1] > MAX_FEATURES:
            raise InvalidInput(f"at most {MAX_FEATURES} features are allowed, got {X.shape[1]}")
        if not np.isfinite(X).all():
            raise InvalidInput("X must be finite numbers (no NaN or Infinity)")
        _check_magnitude(X, "feature")
        if len(self.feature_names) != X.shape[1]:
            raise InvalidInput(f"{len(self.feature_names)} feature names for {X.shape[1]} features")
        if regression:
            self._check_targets(y, X.shape[0])
        else:
            self._check_classes(y, X.shape[0])
        X.flags.writeable = False
        y.flags.writeable = False
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "target_names", tuple(self.target_names))

    def _check_targets(self, y: np.ndarray, n: int) -> None:
        if y.ndim != 2 or y.shape[0] != n or y.shape[1] == 0:
            raise InvalidInput(f"targets must have shape ({n}, n_targets), got {y.shape}")
        if self.classes:
            raise InvalidInput("a regression dataset has no classes")
        if len(self.target_names) != y.shape[1]:
            raise InvalidInput(f"{len(self.target_names)} target names for {y.shape[1]} targets")
        if not np.isfinite(y).all():
            row = int(np.argwhere(~np.isfinite(y))[0][0])
            raise InvalidInput(
                f"the target of point {row} is {y[row].tolist()}: targets must be finite "
                "numbers (no NaN or Infinity)"
            )
        _check_magnitude(y, "target")

    def _check_classes(self, y: np.ndarray, n: int) -> None:
        if y.shape != (n,):
            raise InvalidInput(f"y must have shape ({n},), got {y.shape}")
        if self.target_names:
            raise InvalidInput("target names belong to regression datasets")
        if len(self.classes) < 2:
            raise InvalidInput(f"a dataset needs at least 2 classes, got {list(self.classes)}")
        if list(self.classes) != sorted(self.classes) or len(set(self.classes)) != len(
            self.classes
        ):
            raise InvalidInput(f"classes must be sorted and distinct, got {list(self.classes)}")
        if y.min() < 0 or y.max() >= len(self.classes):
            raise InvalidInput(f"y must hold class indices 0..{len(self.classes) - 1}")
        counts = np.bincount(y, minlength=len(self.classes))
        if (counts == 0).any():
            missing = self.classes[int(np.argmin(counts))]
            raise InvalidInput(f"class {missing!r} has no examples")

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def n_targets(self) -> int:
        """Target columns (regression); 0 for classification."""
        return int(self.y.shape[1]) if self.regression else 0

    @property
    def n_outputs(self) -> int:
        """The width of a network's output layer for this data: classes or targets."""
        return self.n_targets if self.regression else self.n_classes

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def class_counts(self) -> dict[Label, int]:
        """Examples per class label ({} for regression)."""
        if self.regression:
            return {}
        counts = np.bincount(self.y, minlength=self.n_classes)
        return {label: int(n) for label, n in zip(self.classes, counts, strict=True)}


def _default_feature_names(n_features: int) -> tuple[str, ...]:
    return tuple(f"x{i + 1}" for i in range(n_features))


# --- generators --------------------------------------------------------------------------------


def _counts_per_class(n_samples: int, n_classes: int) -> list[int]:
    """n_samples split as evenly as possible, the first classes taking the remainder."""
    base, extra = divmod(n_samples, n_classes)
    return [base + (1 if c < extra else 0) for c in range(n_classes)]


def _check_int(name: str, value: object, low: int, high: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInput(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, got {value}; {fix}")
    return int(value)


def _by_class(
    counts: list[int], rng: np.random.Generator, draw: Callable[[int, int], np.ndarray]
) -> tuple[Any, Any]:
    """`draw(label, n)` (n, 2) for each class in turn (the generator's draws in that order),
    shuffled together with their labels."""
    X = np.concatenate([draw(label, n) for label, n in enumerate(counts)])
    y = np.concatenate([np.full(n, label) for label, n in enumerate(counts)])
    order = rng.permutation(X.shape[0])
    return X[order], y[order]


def _xor(counts: list[int], noise: float, rng: np.random.Generator) -> tuple[Any, Any]:
    # class 0 in the (+,+) and (-,-) quadrants, class 1 in (+,-) and (-,+)
    def draw(label: int, n: int) -> np.ndarray:
        magnitude = rng.uniform(0.0, 1.0, size=(n, 2))  # (n, 2)
        sign_x = rng.choice([-1.0, 1.0], size=n)
        sign_y = sign_x if label == 0 else -sign_x
        points = magnitude * np.column_stack([sign_x, sign_y])
        return points + rng.normal(0.0, noise, size=(n, 2))

    return _by_class(counts, rng, draw)


def _spiral(counts: list[int], noise: float, rng: np.random.Generator) -> tuple[Any, Any]:
    # arm c: radius 0 -> 1 while the angle turns 4 radians from its own start, plus jitter
    n_classes = len(counts)

    def draw(label: int, n: int) -> np.ndarray:
        radius = np.linspace(0.0, 1.0, n)
        start = label * 2 * math.pi / n_classes
        angle = np.linspace(start, start + 4.0, n) + rng.normal(0.0, noise, size=n)
        return np.column_stack([radius * np.sin(angle), radius * np.cos(angle)])

    return _by_class(counts, rng, draw)


def _gaussian(counts: list[int], noise: float, rng: np.random.Generator) -> tuple[Any, Any]:
    n_classes = len(counts)

    def draw(label: int, n: int) -> np.ndarray:
        angle = math.pi / 2 + label * 2 * math.pi / n_classes
        mean = np.array([math.cos(angle), math.sin(angle)])
        return mean + rng.normal(0.0, noise, size=(n, 2))

    return _by_class(counts, rng, draw)


# The Playground's regression sets: points in [-RADIUS, RADIUS]^2, the target read at the point
# moved by uniform noise of up to noise * RADIUS per coordinate.
PLAYGROUND_RADIUS = 6.0
# reg_gauss's bumps: (centre x, centre y, sign); each a cone of radius 2 (the Playground's).
PLAYGROUND_BUMPS = (
    (-4.0, 2.5, 1.0),
    (0.0, 2.5, -1.0),
    (4.0, 2.5, 1.0),
    (-4.0, -2.5, -1.0),
    (0.0, -2.5, 1.0),
    (4.0, -2.5, -1.0),
)


def _playground_points(
    n: int, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 2), where their targets are read (n, 2)): the Playground's draws."""
    points = rng.uniform(-PLAYGROUND_RADIUS, PLAYGROUND_RADIUS, size=(n, 2))
    moved = points + rng.uniform(-PLAYGROUND_RADIUS, PLAYGROUND_RADIUS, size=(n, 2)) * noise
    return points, moved


def _reg_plane(n: int, noise: float, rng: np.random.Generator) -> tuple[Any, Any]:
    points, moved = _playground_points(n, noise, rng)
    return points, (moved.sum(axis=1) / 10.0).reshape(-1, 1)  # (n, 1) in [-1.2, 1.2]


def _reg_gauss(n: int, noise: float, rng: np.random.Generator) -> tuple[Any, Any]:
    points, moved = _playground_points(n, noise, rng)
    bumps = np.array([[cx, cy] for cx, cy, _ in PLAYGROUND_BUMPS])  # (6, 2)
    signs = np.array([sign for _, _, sign in PLAYGROUND_BUMPS])  # (6,)
    distance = np.linalg.norm(moved[:, None, :] - bumps[None, :, :], axis=2)  # (n, 6)
    heights = signs * np.clip(1.0 - distance / 2.0, 0.0, 1.0)  # (n, 6)
    strongest = np.abs(heights).argmax(axis=1)  # the first of equals, as the Playground
    return points, heights[np.arange(n), strongest].reshape(-1, 1)  # (n, 1) in [-1, 1]


def _check_noise(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise InvalidInput(f"noise must be a number, got {value!r}")
    noise = float(value)
    if not math.isfinite(noise) or noise < 0:
        raise InvalidInput(f"noise must be a finite number >= 0, got {noise}")
    return noise


def _generate_regression(
    kind: str, n_samples: int, noise: float, n_features: int | None, seed: int
) -> Dataset:
    rng = np.random.default_rng(seed)
    if kind == "reg_plane":
        X, y = _reg_plane(n_samples, noise, rng)
    elif kind == "reg_gauss":
        X, y = _reg_gauss(n_samples, noise, rng)
    else:
        from sklearn.datasets import make_friedman1

        assert n_features is not None
        X, target = make_friedman1(n_samples, n_features=n_features, noise=noise, random_state=seed)
        y = target.reshape(-1, 1)
    return Dataset(
        X=X,
        y=y,
        classes=(),
        feature_names=_default_feature_names(X.shape[1]),
        task="regression",
        target_names=("y",),
    )


def generate(
    kind: str,
    *,
    n_samples: int | None = None,
    noise: float | None = None,
    n_classes: int | None = None,
    n_features: int | None = None,
    seed: int | None = None,
    max_samples: int = MAX_SAMPLES,
) -> Dataset:
    """A synthetic dataset (2-D but friedman1's). A parameter left None takes the kind's default
    (`PARAMETERS`); one that does not apply to the kind (e.g. n_classes for moons) is an error.

    The same arguments give the same data bit for bit; moons is scikit-learn's make_moons with
    `random_state=seed`, friedman1 its make_friedman1.
    """
    if kind not in GENERATED_KINDS:
        if kind in BUILTIN_KINDS:
            raise InvalidInput(f"{kind!r} is a built-in dataset, not a generator; load it by name")
        raise InvalidInput(f"unknown generator {kind!r}; choose one of {list(GENERATED_KINDS)}")
    defaults = PARAMETERS[kind]
    given: dict[Parameter, int | float | None] = {
        "n_samples": n_samples,
        "noise": noise,
        "n_classes": n_classes,
        "n_features": n_features,
        "seed": seed,
    }
    for name, value in given.items():
        if value is not None and name not in defaults:
            raise InvalidInput(
                f"{name} does not apply to {kind}; it takes {sorted(defaults)}"
                + (
                    f" and always has {FIXED_N_CLASSES[kind]} classes"
                    if name == "n_classes" and kind in FIXED_N_CLASSES
                    else ""
                )
            )
    seed_value = _check_int(
        "seed", defaults["seed"] if seed is None else seed, 0, MAX_SEED, "seeds are 32-bit"
    )
    noise_value = _check_noise(defaults["noise"] if noise is None else noise)
    if kind in REGRESSION_KINDS:
        n = _check_int(
            "n_samples",
            defaults["n_samples"] if n_samples is None else n_samples,
            MIN_REGRESSION_SAMPLES,
            max_samples,
            f"generate at least {MIN_REGRESSION_SAMPLES} points",
        )
        features = None
        if kind == "friedman1":
            features = _check_int(
                "n_features",
                defaults["n_features"] if n_features is None else n_features,
                MIN_FRIEDMAN_FEATURES,
                MAX_GENERATED_FEATURES,
                "friedman1's target reads the first five features",
            )
        return _generate_regression(kind, n, noise_value, features, seed_value)
    k = FIXED_N_CLASSES.get(kind) or _check_int(
        "n_classes",
        defaults["n_classes"] if n_classes is None else n_classes,
        2,
        MAX_GENERATED_CLASSES,
        "choose at least 2 classes",
    )
    n = _check_int(
        "n_samples",
        defaults["n_samples"] if n_samples is None else n_samples,
        2 * k,
        max_samples,
        f"{kind} with {k} classes needs at least 2 samples per class",
    )
    counts = _counts_per_class(n, k)
    rng = np.random.default_rng(seed_value)
    if kind == "moons":
        from sklearn.datasets import make_moons

        X, y = make_moons(n, noise=noise_value, random_state=seed_value)
    elif kind == "circles":
        from sklearn.datasets import make_circles

        X, y = make_circles(n, noise=noise_value, factor=0.5, random_state=seed_value)
    elif kind == "blobs":
        from sklearn.datasets import make_blobs

        X, y = make_blobs(counts, n_features=2, cluster_std=noise_value, random_state=seed_value)
    elif kind == "xor":
        X, y = _xor(counts, noise_value, rng)
    elif kind == "spiral":
        X, y = _spiral(counts, noise_value, rng)
    else:
        X, y = _gaussian(counts, noise_value, rng)
    return Dataset(X=X, y=y, classes=tuple(range(k)), feature_names=_default_feature_names(2))


# --- scikit-learn's bundled datasets -------------------------------------------------------


@lru_cache(maxsize=len(BUILTIN_KINDS))
def load_builtin(kind: str) -> Dataset:
    """One of scikit-learn's bundled datasets (no download), class labels by name, sorted."""
    if kind not in BUILTIN_KINDS:
        raise InvalidInput(
            f"unknown built-in dataset {kind!r}; choose one of {list(BUILTIN_KINDS)}"
        )
    from sklearn import datasets as sk

    loaders = {
        "iris": sk.load_iris,
        "wine": sk.load_wine,
        "breast_cancer": sk.load_breast_cancer,
        "digits": sk.load_digits,
        "diabetes": sk.load_diabetes,
    }
    bunch = loaders[kind]()
    if kind in REGRESSION_KINDS:
        return Dataset(
            X=np.asarray(bunch.data, dtype=np.float64),
            y=np.asarray(bunch.target, dtype=np.float64).reshape(-1, 1),
            classes=(),
            feature_names=tuple(str(f) for f in bunch.feature_names),
            task="regression",
            target_names=("progression",),
        )
    names = [n.item() if isinstance(n, np.generic) else n for n in bunch.target_names]
    labels = [names[i] for i in bunch.target]
    return _from_labels(
        np.asarray(bunch.data, dtype=np.float64),
        labels,
        tuple(str(f) for f in bunch.feature_names),
    )


# --- user data -------------------------------------------------------------------------------


def _from_labels(X: np.ndarray, labels: Sequence[Label], feature_names: tuple[str, ...]) -> Dataset:
    """A dataset from validated features and labels of one type: indices follow sorted labels."""
    classes = sorted(set(labels))  # all int or all str
    if len(classes) < 2:
        raise InvalidInput(
            f"every example has the label {classes[0]!r}; a classifier needs at least 2 classes"
        )
    index = {label: i for i, label in enumerate(classes)}
    y = np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))
    return Dataset(X=X, y=y, classes=tuple(classes), feature_names=feature_names)


def _check_feature_names(names: Sequence[str] | None, n_features: int) -> tuple[str, ...]:
    if names is None:
        return _default_feature_names(n_features)
    result = tuple(names)
    if len(result) != n_features:
        raise InvalidInput(f"got {len(result)} feature names for {n_features} features")
    for name in result:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput(f"feature names must be non-empty strings, got {name!r}")
    if len(set(result)) != len(result):
        duplicate = next(n for n in result if result.count(n) > 1)
        raise InvalidInput(f"feature name {duplicate!r} appears more than once")
    return result


def _check_labels(labels: Sequence[object]) -> list[Label]:
    """Labels as Python ints or strs, all of one type."""
    checked: list[Label] = []
    for i, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, int | str | np.integer | np.str_):
            raise InvalidInput(
                f"label {label!r} at index {i} is neither an integer nor a string; "
                "labels must be integers or strings"
            )
        checked.append(int(label) if isinstance(label, int | np.integer) else str(label))
    kinds = {type(label) for label in checked}
    if len(kinds) > 1:
        first_int = next(label for label in checked if isinstance(label, int))
        first_str = next(label for label in checked if isinstance(label, str))
        raise InvalidInput(
            f"labels mix integers and strings (e.g. {first_int!r} and {first_str!r}); "
            "use one type for every label"
        )
    return checked


def _first_bad_row(X: np.ndarray) -> int:
    return int(np.argwhere(~np.isfinite(X))[0][0])


def from_points(
    points: np.ndarray | Sequence[Sequence[float]],
    labels: np.ndarray | Sequence[Label] | None,
    feature_names: Sequence[str] | None = None,
    *,
    targets: np.ndarray | Sequence[float] | Sequence[Sequence[float]] | None = None,
    target_names: Sequence[str] | None = None,
    max_samples: int = MAX_SAMPLES,
) -> Dataset:
    """A dataset from user points (rows of any fixed length) and one label per point, or (a
    regression dataset) one target per point: a number, or a row of numbers of a fixed length.

    Labels are all integers or all strings; class index i is the i-th smallest label.
    """
    rows = points.tolist() if isinstance(points, np.ndarray) else points
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence) or len(rows) == 0:
        raise InvalidInput("points must be a non-empty list of rows of numbers")
    if len(rows) > max_samples:
        raise InvalidInput(f"at most {max_samples} points are allowed, got {len(rows)}")
    width: int | None = None
    for i, row in enumerate(rows):
        if isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise InvalidInput(f"point {i} must be a list of numbers, got {row!r}")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise InvalidInput(
                f"point {i} has {len(row)} values but point 0 has {width}; "
                "every point needs the same number of features"
            )
    if not width:
        raise InvalidInput("points need at least one feature")
    if width > MAX_FEATURES:
        raise InvalidInput(f"at most {MAX_FEATURES} features are allowed, got {width}")
    try:
        X = np.array(rows, dtype=np.float64)  # (n_samples, n_features)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"points must contain only numbers: {exc}") from None
    if not np.isfinite(X).all():
        row = _first_bad_row(X)
        raise InvalidInput(f"point {row} is {rows[row]!r}: values must be finite numbers")
    names = _check_feature_names(feature_names, X.shape[1])
    if (labels is None) == (targets is None):
        raise InvalidInput("give labels (classification) or targets (regression), not both")
    if targets is not None:
        return _regression(X, _target_rows(targets, X.shape[0]), names, target_names)

    assert labels is not None
    label_list = labels.tolist() if isinstance(labels, np.ndarray) else labels
    if isinstance(label_list, str | bytes) or not isinstance(label_list, Sequence):
        raise InvalidInput("labels must be a list with one label per point")
    if len(label_list) != X.shape[0]:
        raise InvalidInput(f"got {len(label_list)} labels for {X.shape[0]} points; give one each")
    checked = _check_labels(label_list)
    return _from_labels(X, checked, names)


def _target_rows(
    targets: np.ndarray | Sequence[float] | Sequence[Sequence[float]], n: int
) -> np.ndarray:
    """Targets (n, K) float64 from one number a point or one row of K numbers a point."""
    rows = targets.tolist() if isinstance(targets, np.ndarray) else targets
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise InvalidInput("targets must be a list with one target per point")
    if len(rows) != n:
        raise InvalidInput(f"got {len(rows)} targets for {n} points; give one each")
    for i, row in enumerate(rows):
        if isinstance(row, bool | str | bytes):
            raise InvalidInput(f"target {i} is {row!r}; targets must be numbers")
    try:
        values = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"targets must be numbers, or rows of numbers of one length: {exc}"
        ) from None
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if values.ndim != 2 or values.shape[1] == 0:
        raise InvalidInput("targets must be numbers, or rows of numbers of one length")
    return values


def _regression(
    X: np.ndarray,
    targets: np.ndarray,
    feature_names: tuple[str, ...],
    target_names: Sequence[str] | None,
) -> Dataset:
    """A regression dataset; target names default to y (one target) or y1, y2, ..."""
    k = targets.shape[1]
    if target_names is None:
        names: tuple[str, ...] = ("y",) if k == 1 else tuple(f"y{i + 1}" for i in range(k))
    else:
        names = tuple(target_names)
        if len(names) != k or not all(isinstance(n, str) and n.strip() for n in names):
            raise InvalidInput(f"target_names needs {k} non-empty names, got {list(names)}")
    return Dataset(X, targets, (), feature_names, "regression", names)


def _parse_label(text: str) -> Label:
    try:
        return int(text)
    except ValueError:
        return text


def from_csv(
    text: str,
    label_column: str | None = None,
    *,
    max_samples: int = MAX_SAMPLES,
    task: Task = "classification",
) -> Dataset:
    """A dataset from CSV text with a header row; the label column is the last unless named.

    Every other column must be a finite number. Labels that all parse as integers become int
    classes, otherwise strings; for regression the label column is the target and must be a
    finite number too. Errors name the 1-based line.
    """
    # Lines are sliced off the text one at a time (io.StringIO would copy all of it, at four
    # bytes a character) and values go straight into a flat float64 buffer, 8 bytes each: a
    # parse holds about 3x the CSV text at its peak, where lists of floats held 15x.
    reader = csv.reader(_lines(text.removeprefix("\ufeff")), strict=True)
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            raise InvalidInput("the CSV is empty; it needs a header row and data rows")
        header_line = reader.line_num
        names = [name.strip() for name in header]
        if len(names) < 2:
            raise InvalidInput(
                f"line {header_line}: the header has {len(names)} column; "
                "a CSV needs at least one feature column and a label column"
            )
        if all(_is_number(name) for name in names):
            raise InvalidInput(
                f"line {header_line} looks like data ({header!r}); "
                "the first line must be a header naming the columns"
            )
        if any(not name for name in names):
            raise InvalidInput(f"line {header_line}: every column in the header needs a name")
        if len(set(names)) != len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            raise InvalidInput(f"line {header_line}: column {duplicate!r} appears twice")
        if label_column is None:
            label_at = len(names) - 1
        elif label_column.strip() in names:
            label_at = names.index(label_column.strip())
        else:
            raise InvalidInput(f"no column named {label_column!r}; the header has {names}")
        feature_at = [i for i in range(len(names)) if i != label_at]

        values = array("d")  # row after row, (n_rows * n_features,)
        raw_labels: list[str] = []
        for record in reader:
            if not record or all(not field.strip() for field in record):
                continue  # blank line
            line = reader.line_num
            if len(raw_labels) >= max_samples:
                raise InvalidInput(f"line {line}: at most {max_samples} data rows are allowed")
            if len(record) != len(names):
                raise InvalidInput(
                    f"line {line} has {len(record)} fields but the header has {len(names)}"
                )
            for i in feature_at:
                field = record[i].strip()
                try:
                    value = float(field)
                except ValueError:
                    raise InvalidInput(
                        f"line {line}, column {names[i]!r}: {field!r} is not a number"
                    ) from None
                if not math.isfinite(value):
                    raise InvalidInput(
                        f"line {line}, column {names[i]!r}: {field!r} is not a finite number"
                    )
                values.append(value)
            label = record[label_at].strip()
            if not label:
                raise InvalidInput(f"line {line}: the label column {names[label_at]!r} is empty")
            if task == "regression":
                target = _is_number(label) and math.isfinite(float(label))
                if not target:
                    raise InvalidInput(
                        f"line {line}, target column {names[label_at]!r}: {label!r} is not a "
                        "finite number"
                    )
            raw_labels.append(label)
    except csv.Error as exc:
        raise InvalidInput(f"line {reader.line_num}: malformed CSV: {exc}") from None
    if not raw_labels:
        raise InvalidInput("the CSV has a header but no data rows")
    X = np.frombuffer(values, dtype=np.float64).reshape(len(raw_labels), len(feature_at))
    feature_names = tuple(names[i] for i in feature_at)
    if task == "regression":
        targets = np.array([float(label) for label in raw_labels]).reshape(-1, 1)
        return _regression(X, targets, feature_names, (names[label_at],))
    parsed = [_parse_label(label) for label in raw_labels]
    labels: list[Label] = parsed if all(isinstance(p, int) for p in parsed) else [*raw_labels]
    return _from_labels(X, labels, feature_names)


def _lines(text: str) -> Iterator[str]:
    """The lines of `text`, each with its line end, one slice at a time."""
    start, end = 0, len(text)
    while start < end:
        stop = text.find("\n", start)
        stop = end if stop < 0 else stop + 1
        yield text[start:stop]
        start = stop


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- train/test split --------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """A stratified train/test split (regression: a random one). X_* are standardized when
    `scaler` is set, regression's y_* when `target_scaler` is."""

    X_train: np.ndarray  # (n_train, n_features)
    y_train: np.ndarray  # (n_train,) int64; regression (n_train, n_targets) float64
    X_test: np.ndarray  # (n_test, n_features), n_test may be 0
    y_test: np.ndarray  # (n_test,) int64; regression (n_test, n_targets) float64
    train_index: np.ndarray  # (n_train,) int64 rows of the dataset, ascending
    test_index: np.ndarray  # (n_test,) int64 rows of the dataset, ascending
    scaler: Scaler | None  # fitted on the training rows only
    target_scaler: Scaler | None = None  # regression with standardize: the training targets'


def _regression_sides(
    dataset: Dataset, test_fraction: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """round(test_fraction * n) random rows to the test side, at least one left to train on."""
    n = dataset.n_samples
    n_test = min(math.floor(test_fraction * n + 0.5), n - 1)
    if test_fraction > 0 and n_test == 0:
        raise InvalidInput(
            f"test_fraction {test_fraction} puts none of the {n} points on the test side; raise "
            "test_fraction, add points, or use test_fraction 0"
        )
    shuffled = rng.permutation(n)
    return [shuffled[n_test:]], [shuffled[:n_test]]


def split(dataset: Dataset, *, test_fraction: float, standardize: bool, seed: int) -> Split:
    """Per class, round(test_fraction * count) examples go to the test side (at least one
    stays on the training side); the same seed gives the same split. Regression data split
    round(test_fraction * n) random points off, and standardize their targets too.

    With test_fraction > 0 every class must get at least one test example.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float | np.floating):
        raise InvalidInput(f"test_fraction must be a number, got {test_fraction!r}")
    if not (math.isfinite(test_fraction) and 0 <= test_fraction < 1):
        raise InvalidInput(
            f"test_fraction must be >= 0 and < 1, got {test_fraction}; use 0 for no test set"
        )
    seed = _check_int("seed", seed, 0, MAX_SEED, "seeds are 32-bit")
    rng = np.random.default_rng(seed)
    train_parts: list[np.ndarray] = []
    test_parts: list[np.ndarray] = []
    if dataset.regression:
        train_parts, test_parts = _regression_sides(dataset, test_fraction, rng)
    for label_index, label in enumerate(dataset.classes):
        members = np.flatnonzero(dataset.y == label_index)  # (count,)
        count = members.size
        n_test = min(math.floor(test_fraction * count + 0.5), count - 1)
        if test_fraction > 0 and n_test == 0:
            raise InvalidInput(
                f"test_fraction {test_fraction} puts no example of class {label!r} on the test "
                f"side: it has {count} example{'s' if count != 1 else ''}; raise test_fraction, "
                "add examples of that class, or use test_fraction 0"
            )
        shuffled = rng.permutation(members)
        test_parts.append(shuffled[:n_test])
        train_parts.append(shuffled[n_test:])
    train_index = np.sort(np.concatenate(train_parts)).astype(np.int64)
    test_index = np.sort(np.concatenate(test_parts)).astype(np.int64)
    X_train = dataset.X[train_index]  # (n_train, n_features), a fresh writable copy
    X_test = dataset.X[test_index]  # (n_test, n_features)
    scaler = Scaler.fit(X_train) if standardize else None
    if scaler is not None:
        X_train = scaler.transform(X_train)
        X_test = scaler.transform(X_test)
    y_train, y_test = dataset.y[train_index], dataset.y[test_index]
    target_scaler = Scaler.fit(y_train) if standardize and dataset.regression else None
    if target_scaler is not None:
        y_train = target_scaler.transform(y_train)
        y_test = target_scaler.transform(y_test)
    return Split(
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        train_index=train_index,
        test_index=test_index,
        scaler=scaler,
        target_scaler=target_scaler,
    )
