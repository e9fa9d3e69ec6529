"""L-BFGS against gradient descent on the tutorial's problem, side by side in one run.

    python -m benchmarks.lbfgs_bench             5 repeats (medians), 20,000 gradient-descent epochs
    python -m benchmarks.lbfgs_bench --quick     1 repeat

The problem: moons n=200, noise 0.2 (scikit-learn's make_moons, random_state 0, as W1 of
benchmarks.engine_bench), [3] tanh, l2 0.01, full batch, float64, seed 0. Gradient descent is
README's tutorial job (sgd, learning rate 2.0, 20,000 epochs); its final training loss is the
target. L-BFGS (defaults: lbfgs_memory 10, learning_rate 0.01 as the first trial step) is first
run with a history point per iteration to find the first iteration whose training loss is at
most the target; then these are timed, interleaved:

    gd          train(sgd, 20,000 epochs)
    lbfgs       train(lbfgs, epochs = that iteration): the time to reach the target
    lbfgs-tol   train(lbfgs, tolerance 1e-5, the default): the time to converge

and the ratios to gradient descent are printed. Never part of `make test`.
"""

from __future__ import annotations

import argparse
from typing import Any

from sklearn.datasets import make_moons

from benchmarks.engine_bench import run_interleaved
from engine.hyperparameters import Hyperparameters
from engine.training import train

PROBLEM: dict[str, Any] = {
    "hidden_layers": [3],
    "activation": "tanh",
    "l2": 0.01,
    "init": "lecun",
    "seed": 0,
}
GD_EPOCHS = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat instead of 5")
    arguments = parser.parse_args()
    repeats = 1 if arguments.quick else 5
    X, y = make_moons(200, noise=0.2, random_state=0)
    gd = Hyperparameters(**PROBLEM, optimizer="sgd", learning_rate=2.0, epochs=GD_EPOCHS)
    target = train(gd, X, y, 2).final_metrics()["train_loss"]
    assert target is not None
    traced = train(
        Hyperparameters(**PROBLEM, optimizer="lbfgs", epochs=10_000, tolerance=0.0, record_every=1),
        X,
        y,
        2,
    )
    reached = next(point for point in traced.history if point.train_loss <= target)
    to_target = Hyperparameters(**PROBLEM, optimizer="lbfgs", epochs=reached.epoch)
    to_tolerance = Hyperparameters(**PROBLEM, optimizer="lbfgs", epochs=10_000)
    converged = train(to_tolerance, X, y, 2)
    print(f"gradient descent: train loss {target:.6f} after {GD_EPOCHS} epochs")
    print(
        f"L-BFGS: train loss {reached.train_loss:.6f} at iteration {reached.epoch}; "
        f"{converged.final_metrics()['train_loss']:.6f} at iteration {converged.epochs_run} "
        f"({converged.stop_reason}, tolerance 1e-5); lowest seen "
        f"{min(point.train_loss for point in traced.history):.6f} ({traced.stop_reason} "
        f"after {traced.epochs_run})"
    )
    medians, minimum = run_interleaved(
        {
            "gd": lambda: train(gd, X, y, 2),
            "lbfgs": lambda: train(to_target, X, y, 2),
            "lbfgs-tol": lambda: train(to_tolerance, X, y, 2),
        },
        repeats,
    )
    print(f"\n{'run':<38}{'median':>10}{'min':>10}{'/ gd (median)':>16}{'/ gd (min)':>12}")
    labels = {
        "gd": f"gradient descent, {GD_EPOCHS} epochs",
        "lbfgs": f"L-BFGS to that loss, {reached.epoch} iterations",
        "lbfgs-tol": f"L-BFGS to tolerance, {converged.epochs_run} iterations",
    }
    for name, label in labels.items():
        print(
            f"{label:<38}{medians[name]:>9.4f}s{minimum[name]:>9.4f}s"
            f"{medians[name] / medians['gd']:>16.4f}{minimum[name] / minimum['gd']:>12.4f}"
        )
    speedup = medians["gd"] / medians["lbfgs"]
    print(f"\nL-BFGS reaches gradient descent's loss {speedup:.0f}x sooner (medians of {repeats})")


if __name__ == "__main__":
    main()
