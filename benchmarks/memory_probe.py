"""Peak resident memory of one training run, measured in a fresh process.

    python -m benchmarks.memory_probe --n 1000000 --hidden 100 --epochs 3 --dtype float32

Prints one JSON line: the process's peak resident set (VmHWM) before and after training, in MiB.
VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across fork and
exec, so a probe started from a big benchmark process would report the parent's size. The data
are two Gaussian blobs generated with NumPy here (scikit-learn is deliberately not imported: it
would inflate the resident set this probe exists to measure).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from engine.hyperparameters import Hyperparameters
from engine.training import train


def _peak_mib() -> float:
    """Peak resident set size of this process image (Linux /proc), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # reported in kB
    raise RuntimeError("no VmHWM in /proc/self/status (needs Linux)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    y = (rng.random(args.n) < 0.5).astype(np.intp)  # (n,)
    X = rng.standard_normal((args.n, 2)).astype(args.dtype)  # (n, 2)
    X[:, 0] += 2.0 * y
    hp = Hyperparameters(
        hidden_layers=[args.hidden],
        activation="tanh",
        optimizer="sgd",
        learning_rate=0.5,
        epochs=args.epochs,
        record_every=1,
        dtype=args.dtype,
    )
    before = _peak_mib()
    started = time.perf_counter()
    result = train(hp, X, y, 2)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "peak_rss_before_training_mib": round(before, 1),
                "peak_rss_mib": round(_peak_mib(), 1),
                "data_mib": round((X.nbytes + y.nbytes) / 2**20, 1),
                "seconds": round(seconds, 2),
                "final_train_accuracy": result.final_metrics()["train_accuracy"],
            }
        )
    )


if __name__ == "__main__":
    main()
