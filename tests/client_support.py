"""Helpers of the client, estimator and command tests (all against a real `python -m service`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Quick to train: well under a second on a free worker.
QUICK: dict[str, Any] = {"hidden_layers": [4], "epochs": 60, "record_every": 20}
# Trains far longer than any test waits; tests cancel it.
LONG: dict[str, Any] = {"hidden_layers": [64], "epochs": 1_000_000, "record_every": 100}
# A learning rate so large that full-batch gradient descent diverges within a few epochs.
DIVERGING: dict[str, Any] = {"optimizer": "sgd", "learning_rate": 1000.0, "epochs": 200}
# The console script pip installed beside this interpreter.
COMMAND = str(Path(sys.executable).with_name("scratchnet"))
