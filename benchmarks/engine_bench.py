"""Engine speed and memory, side by side with a plain NumPy reference and scikit-learn.

    python -m benchmarks.engine_bench            all workloads, 5 repeats each (median)
    python -m benchmarks.engine_bench --only W1  one workload (W1, W2, W3, MEM)
    python -m benchmarks.engine_bench --quick    1 repeat, shorter runs

W1  the tutorial: moons n=200, [3] tanh, sgd full batch, lr 2.0, l2 0.01, 20000 epochs, float64
W2  large data: moons n=100,000, [100] tanh, 50 full-batch epochs, float32
W3  minibatch: spiral 3 classes n=3,000, [64, 64] relu, Adam, batch 128, 100 epochs
MEM n=1,000,000, [100], float32, 3 epochs: peak RSS of a fresh training process

W2 runs two repeats fewer (its reference and scikit-learn need ~0.5 s an epoch). Each row also
notes the ratios of the fastest runs: on a shared machine they move less than the medians.
The engine pins BLAS to one thread for small products (see engine.network); scikit-learn runs
with BLAS's default threads, and W3 is also shown with scikit-learn on one BLAS thread, because
threaded BLAS on these 128x64x64 products is fast on an idle machine and very slow on a busy one.

Each run trains all epochs; the engine records history at its default record_every=10 unless
noted. The reference implements the tutorial's algorithm from the mathematics with plain,
allocating NumPy operations (no max shift in the softmax, like the tutorial); scikit-learn's
MLPClassifier is configured to take the same steps (its own initialisation).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from engine.hyperparameters import Hyperparameters
from engine.network import init_params
from engine.training import train

Array = np.ndarray


# -- references --------------------------------------------------------------------------------


def reference_full_batch(
    X: Array, y: Array, hidden: int, learning_rate: float, l2: float, epochs: int, seed: int
) -> list[Array]:
    """The tutorial's full-batch gradient descent, one hidden tanh layer, in X's dtype.

    Step `learning_rate / n` on the summed gradient == `learning_rate` on the mean gradient.
    The loss is evaluated every 1000 epochs, as the tutorial prints it.
    """
    n = X.shape[0]
    dtype = X.dtype
    (W1, W2), (b1, b2) = init_params(
        [X.shape[1], hidden, 2], "lecun", dtype, np.random.default_rng(seed)
    )
    targets = np.zeros((n, 2), dtype=dtype)
    targets[np.arange(n), y] = 1
    step = dtype.type(learning_rate / n)
    reg = dtype.type(l2)
    for epoch in range(epochs):
        a1 = np.tanh(X.dot(W1) + b1)
        scores = np.exp(a1.dot(W2) + b2)
        probs = scores / np.sum(scores, axis=1, keepdims=True)
        if epoch % 1000 == 0:
            _ = -np.log(probs[np.arange(n), y]).sum() / n
        delta3 = probs - targets
        dW2 = a1.T.dot(delta3) + reg * W2
        db2 = delta3.sum(axis=0)
        delta2 = delta3.dot(W2.T) * (1 - a1**2)
        dW1 = X.T.dot(delta2) + reg * W1
        db1 = delta2.sum(axis=0)
        W1 = W1 - step * dW1
        b1 = b1 - step * db1
        W2 = W2 - step * dW2
        b2 = b2 - step * db2
    return [W1, b1, W2, b2]


def sklearn_fit(
    X: Array,
    y: Array,
    hidden: tuple[int, ...],
    activation: str,
    solver: str,
    batch_size: int,
    learning_rate: float,
    l2: float,
    epochs: int,
    shuffle: bool,
) -> MLPClassifier:
    model = MLPClassifier(
        hidden_layer_sizes=hidden,
        activation=activation,
        solver=solver,
        alpha=l2,
        batch_size=batch_size,
        learning_rate="constant",
        learning_rate_init=learning_rate,
        momentum=0.0,
        nesterovs_momentum=False,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs + 1,  # never stops early: runs all epochs
        shuffle=shuffle,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    assert model.n_iter_ == epochs
    return model


def spiral(n: int, n_classes: int, noise: float, seed: int) -> tuple[Array, Array]:
    rng = np.random.default_rng(seed)
    per_class = n // n_classes
    radius = np.tile(np.linspace(0.0, 1.0, per_class), n_classes)
    labels = np.repeat(np.arange(n_classes), per_class)
    angle = 4.0 * labels + 4.0 * radius + noise * rng.standard_normal(radius.shape)
    return np.column_stack([radius * np.sin(angle), radius * np.cos(angle)]), labels


# -- timing ------------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    engine: float
    reference: float | None
    sklearn: float | None
    target: str
    met: bool
    note: str = ""


def run_interleaved(
    runs: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(median, minimum) time of each run, alternating them so drift in machine load hits all
    alike. The median is the headline; the minimum is the least disturbed run."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return medians, {name: min(values) for name, values in times.items()}


def _minimum_note(minimum: dict[str, float], repeats: int) -> str:
    parts = [
        f"eng/{label} {minimum['engine'] / minimum[other]:.3f}"
        for other, label in (("reference", "ref"), ("sklearn", "skl"), ("sklearn_1", "skl-1"))
        if other in minimum
    ]
    return f"min of {repeats}: engine {minimum['engine']:.3f} s, " + ", ".join(parts)


def w1(repeats: int, quick: bool) -> Row:
    X, y = make_moons(200, noise=0.2, random_state=0)
    epochs = 5000 if quick else 20000
    hp = Hyperparameters(
        hidden_layers=[3], activation="tanh", optimizer="sgd", learning_rate=2.0, l2=0.01,
        epochs=epochs, init="lecun", seed=0,
    )  # fmt: skip
    times, minimum = run_interleaved(
        {
            "engine": lambda: train(hp, X, y, 2),
            "reference": lambda: reference_full_batch(X, y, 3, 2.0, 0.01, epochs, 0),
            "sklearn": lambda: sklearn_fit(
                X, y, (3,), "tanh", "sgd", 200, 2.0, 0.01, epochs, False
            ),
        },
        repeats,
    )
    ratio = times["engine"] / times["reference"]
    return Row(
        f"W1 tutorial x{epochs}", times["engine"], times["reference"], times["sklearn"],
        "<= 0.75x reference", ratio <= 0.75, _minimum_note(minimum, repeats),
    )  # fmt: skip


def w2(repeats: int, quick: bool) -> Row:
    n = 100_000
    X, y = make_moons(n, noise=0.2, random_state=0)
    X = X.astype(np.float32)
    epochs = 10 if quick else 50
    hp = Hyperparameters(
        hidden_layers=[100], activation="tanh", optimizer="sgd", learning_rate=2.0, l2=0.01,
        epochs=epochs, init="lecun", seed=0, dtype="float32",
    )  # fmt: skip
    times, minimum = run_interleaved(
        {
            "engine": lambda: train(hp, X, y, 2),
            "reference": lambda: reference_full_batch(X, y, 100, 2.0, 0.01, epochs, 0),
            "sklearn": lambda: sklearn_fit(
                X, y, (100,), "tanh", "sgd", n, 2.0, 0.01, epochs, False
            ),
        },
        repeats,
    )
    to_reference = times["engine"] / times["reference"]
    to_sklearn = times["engine"] / times["sklearn"]
    return Row(
        f"W2 n=100k [100] f32 x{epochs}", times["engine"], times["reference"], times["sklearn"],
        "<= 0.2x ref, <= 0.3x sklearn", to_reference <= 0.2 and to_sklearn <= 0.3,
        _minimum_note(minimum, repeats),
    )  # fmt: skip


def w3(repeats: int, quick: bool) -> list[Row]:
    X, y = spiral(3000, 3, noise=0.2, seed=0)
    epochs = 20 if quick else 100
    hp = Hyperparameters(
        hidden_layers=[64, 64], activation="relu", optimizer="adam", learning_rate=0.001,
        batch_size=128, epochs=epochs, init="he", seed=0,
    )  # fmt: skip

    def fit() -> MLPClassifier:
        return sklearn_fit(X, y, (64, 64), "relu", "adam", 128, 0.001, 0.0, epochs, True)

    def fit_one_blas_thread() -> MLPClassifier:
        with threadpool_limits(limits=1, user_api="blas"):
            return fit()

    times, minimum = run_interleaved(
        {"engine": lambda: train(hp, X, y, 3), "sklearn": fit, "sklearn_1": fit_one_blas_thread},
        repeats,
    )
    ratio = times["engine"] / times["sklearn"]
    return [
        Row(
            f"W3 spiral adam b128 x{epochs}", times["engine"], None, times["sklearn"],
            "<= 0.15x sklearn", ratio <= 0.15, _minimum_note(minimum, repeats),
        ),
        Row(
            "  same, sklearn on 1 BLAS thread", times["engine"], None, times["sklearn_1"],
            "(info: like the engine's BLAS)", times["engine"] / times["sklearn_1"] <= 0.15,
        ),
    ]  # fmt: skip


def memory(quick: bool) -> Row:
    n = 200_000 if quick else 1_000_000
    command = [sys.executable, "-m", "benchmarks.memory_probe", "--n", str(n), "--epochs", "3"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    probe = json.loads(output.strip().splitlines()[-1])
    peak = float(probe["peak_rss_mib"])
    return Row(
        f"MEM n={n:,} [100] f32 x3",
        float(probe["seconds"]),
        None,
        None,
        "peak RSS < 200 MB",
        peak * 2**20 < 200e6,
        f"peak RSS {peak:.0f} MiB (before training {probe['peak_rss_before_training_mib']:.0f}"
        f" MiB, data {probe['data_mib']:.0f} MiB)",
    )


def _ratio(numerator: float, denominator: float | None) -> str:
    return "-" if denominator is None else f"{numerator / denominator:.3f}"


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'workload':<30} {'engine s':>9} {'ref s':>8} {'sklearn s':>9} "
        f"{'eng/ref':>8} {'eng/skl':>8}  {'target':<30} met"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        reference = "-" if row.reference is None else f"{row.reference:.3f}"
        scikit = "-" if row.sklearn is None else f"{row.sklearn:.3f}"
        print(
            f"{row.workload:<30} {row.engine:>9.3f} {reference:>8} {scikit:>9} "
            f"{_ratio(row.engine, row.reference):>8} {_ratio(row.engine, row.sklearn):>8}  "
            f"{row.target:<30} {'yes' if row.met else 'NO'}"
        )
        if row.note:
            print(f"{'':<30} {row.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description="scratchnet engine benchmark")
    parser.add_argument("--only", action="append", choices=["W1", "W2", "W3", "MEM"])
    parser.add_argument("--quick", action="store_true", help="1 repeat, shorter runs")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    chosen = args.only or ["W1", "W2", "W3", "MEM"]
    repeats = 1 if args.quick else args.repeats
    rows = []
    for name in chosen:
        started = time.perf_counter()
        if name == "W1":
            rows.append(w1(repeats, args.quick))
        elif name == "W2":  # its reference and sklearn take ~0.5 s an epoch: fewer repeats
            rows.append(w2(max(1, repeats - 2), args.quick))
        elif name == "W3":
            rows.extend(w3(repeats, args.quick))
        else:
            rows.append(memory(args.quick))
        print(f"[{name} done in {time.perf_counter() - started:.0f} s]", file=sys.stderr)
    print_table(rows)
    if not all(math.isfinite(row.engine) for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
