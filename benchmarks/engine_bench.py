"""Engine speed and memory, side by side with a plain NumPy reference, scikit-learn and (when
it is installed) PyTorch on the CPU.

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
MLPClassifier is configured to take the same steps (its own initialisation). PyTorch, the
other thing users would pick, trains the same network from the engine's initial weights (same
seed, same dtype) with torch.optim taking the same steps, its loss evaluated every 10 epochs
like the engine's history; it runs with its default threads (one per core) and again on one
thread, on W2 and W3. Not on W1: its per-call overhead (~5-8 us of CPU an operation, measured)
makes the tutorial's 20,000 epochs of 200 points take over a minute a run. It is optional,
never a project dependency (`pip install torch` for the CPU wheel); its columns say "-" and a
note is printed when it is not installed.
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

from engine.hyperparameters import Hyperparameters, Init
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


_torch_default_threads: list[int] = []  # torch's own default, read before any run sets one


def torch_default_threads() -> int | None:
    """PyTorch's default number of threads (one per core), or None when it is not installed."""
    if not _torch_default_threads:
        try:
            import torch
        except ImportError:
            return None
        _torch_default_threads.append(torch.get_num_threads())
    return _torch_default_threads[0]


@dataclass(frozen=True)
class TorchRun:
    """What a PyTorch peer trains: the workload's network and steps."""

    hidden: list[int]
    activation: str
    init: Init
    optimizer: str  # "sgd" or "adam"
    batch_size: int | None  # None: full batch
    learning_rate: float
    l2: float
    epochs: int


def torch_fit(X: Array, y: Array, run: TorchRun, threads: int) -> None:
    """The engine's network trained by PyTorch on the CPU on `threads` threads, in X's dtype:
    the engine's initial weights (seed 0), mean cross-entropy plus the same l2 on the weights
    (torch's weight_decay = l2 / batch rows), sgd or adam with the engine's defaults, a fresh
    permutation per epoch for minibatches, the training loss evaluated every 10 epochs."""
    import torch

    torch.set_num_threads(threads)
    n = X.shape[0]
    n_classes = int(y.max()) + 1
    weights, biases = init_params(
        [X.shape[1], *run.hidden, n_classes], run.init, X.dtype, np.random.default_rng(0)
    )
    Ws = [torch.tensor(W, requires_grad=True) for W in weights]
    bs = [torch.tensor(b, requires_grad=True) for b in biases]
    batch_size = run.batch_size
    decay = run.l2 / (batch_size or n)
    groups = [{"params": Ws, "weight_decay": decay}, {"params": bs, "weight_decay": 0.0}]
    step: torch.optim.Optimizer = (
        torch.optim.SGD(groups, lr=run.learning_rate)
        if run.optimizer == "sgd"
        else torch.optim.Adam(groups, lr=run.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    )
    act = {"tanh": torch.tanh, "relu": torch.relu}[run.activation]
    X_t = torch.from_numpy(X)
    y_t = torch.from_numpy(y.astype(np.int64))
    generator = torch.Generator().manual_seed(0)

    def logits(inputs: torch.Tensor) -> torch.Tensor:
        for W, b in zip(Ws[:-1], bs[:-1], strict=True):
            inputs = act(torch.addmm(b, inputs, W))
        return torch.addmm(bs[-1], inputs, Ws[-1])

    for epoch in range(1, run.epochs + 1):
        if batch_size is None:
            batches = [(X_t, y_t)]
        else:
            order = torch.randperm(n, generator=generator)
            batches = [(X_t[chosen], y_t[chosen]) for chosen in torch.split(order, batch_size)]
        for X_b, y_b in batches:
            step.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(logits(X_b), y_b).backward()
            step.step()
        if epoch % 10 == 0:
            with torch.no_grad():
                torch.nn.functional.cross_entropy(logits(X_t), y_t)


def torch_runs(X: Array, y: Array, run: TorchRun) -> dict[str, Callable[[], object]]:
    """PyTorch on its default threads ("torch") and on one ("torch_1"); none without torch."""
    default_threads = torch_default_threads()
    if default_threads is None:
        return {}
    return {
        "torch": lambda: torch_fit(X, y, run, default_threads),
        "torch_1": lambda: torch_fit(X, y, run, 1),
    }


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
    torch: float | None = None  # PyTorch on its default threads (None: not installed)


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


PEERS = (
    ("reference", "ref"),
    ("sklearn", "skl"),
    ("sklearn_1", "skl-1"),
    ("torch", "torch"),
    ("torch_1", "torch-1"),
)


def _minimum_note(times: dict[str, float], minimum: dict[str, float], repeats: int) -> str:
    """The min-of-N ratios of every peer, and the medians of the one-thread peers the table's
    columns do not show (PyTorch's missing-install note when it did not run)."""
    parts = [
        f"eng/{label} {minimum['engine'] / minimum[other]:.3f}"
        for other, label in PEERS
        if other in minimum
    ]
    note = f"min of {repeats}: engine {minimum['engine']:.3f} s, " + ", ".join(parts)
    if "torch_1" in times:
        note += (
            f"; median torch 1 thread {times['torch_1']:.3f} s "
            f"(eng/torch-1 {times['engine'] / times['torch_1']:.3f})"
        )
    elif torch_default_threads() is None:
        note += "; PyTorch not installed (pip install torch): its columns are empty"
    return note


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
        "<= 0.75x reference", ratio <= 0.75, _minimum_note(times, minimum, repeats),
        times.get("torch"),
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
            **torch_runs(X, y, TorchRun([100], "tanh", "lecun", "sgd", None, 2.0, 0.01, epochs)),
        },
        repeats,
    )
    to_reference = times["engine"] / times["reference"]
    to_sklearn = times["engine"] / times["sklearn"]
    return Row(
        f"W2 n=100k [100] f32 x{epochs}", times["engine"], times["reference"], times["sklearn"],
        "<= 0.15x ref, <= 0.3x sklearn", to_reference <= 0.15 and to_sklearn <= 0.3,
        _minimum_note(times, minimum, repeats), times.get("torch"),
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
        {
            "engine": lambda: train(hp, X, y, 3),
            "sklearn": fit,
            "sklearn_1": fit_one_blas_thread,
            **torch_runs(X, y, TorchRun([64, 64], "relu", "he", "adam", 128, 0.001, 0.0, epochs)),
        },
        repeats,
    )
    ratio = times["engine"] / times["sklearn"]
    return [
        Row(
            f"W3 spiral adam b128 x{epochs}", times["engine"], None, times["sklearn"],
            "<= 0.25x sklearn", ratio <= 0.25, _minimum_note(times, minimum, repeats),
            times.get("torch"),
        ),
        Row(
            "  same, sklearn on 1 BLAS thread", times["engine"], None, times["sklearn_1"],
            "(info: like the engine's BLAS)", times["engine"] / times["sklearn_1"] <= 0.25,
            torch=times.get("torch_1"),
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
        f"{'workload':<30} {'engine s':>9} {'ref s':>8} {'sklearn s':>9} {'torch s':>8} "
        f"{'eng/ref':>8} {'eng/skl':>8} {'eng/torch':>9}  {'target':<30} met"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        reference = "-" if row.reference is None else f"{row.reference:.3f}"
        scikit = "-" if row.sklearn is None else f"{row.sklearn:.3f}"
        pytorch = "-" if row.torch is None else f"{row.torch:.3f}"
        print(
            f"{row.workload:<30} {row.engine:>9.3f} {reference:>8} {scikit:>9} {pytorch:>8} "
            f"{_ratio(row.engine, row.reference):>8} {_ratio(row.engine, row.sklearn):>8} "
            f"{_ratio(row.engine, row.torch):>9}  {row.target:<30} {'yes' if row.met else 'NO'}"
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
