"""README's documented defaults, written out as literal values, and a reader of README's tables.

These literals are the tests' oracle for defaults: tests/test_documented.py checks them against
README's text and against what the engine, the settings and the API actually use, so a default
changed in the code but not in README (or the other way round) fails a test. Other tests take
their expected echoes from here, never from the code that fills the defaults in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"

# README "Datasets": each generator's parameters (default); seed from "Every kind also takes".
GENERATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "moons": {"n_samples": 200, "noise": 0.2, "seed": 0},
    "circles": {"n_samples": 200, "noise": 0.1, "seed": 0},
    "blobs": {"n_samples": 200, "noise": 1.0, "n_classes": 3, "seed": 0},
    "xor": {"n_samples": 200, "noise": 0.1, "seed": 0},
    "spiral": {"n_samples": 300, "noise": 0.2, "n_classes": 3, "seed": 0},
    "gaussian": {"n_samples": 200, "noise": 0.5, "n_classes": 2, "seed": 0},
    "reg_plane": {"n_samples": 200, "noise": 0.1, "seed": 0},
    "reg_gauss": {"n_samples": 200, "noise": 0.1, "seed": 0},
    "friedman1": {"n_samples": 200, "noise": 1.0, "n_features": 10, "seed": 0},
}
# README "Every kind also takes ...": the options every dataset has.
DATASET_DEFAULTS: dict[str, Any] = {"test_fraction": 0.2, "standardize": True, "seed": 0}

# README "Training jobs": the hyperparameters table.
HYPERPARAMETER_DEFAULTS: dict[str, Any] = {
    "hidden_layers": [16],
    "input_features": ["identity"],
    "activation": "tanh",
    "optimizer": "adam",
    "learning_rate": 0.01,
    "lr_schedule": "constant",
    "lr_decay": 0.5,
    "lr_decay_epochs": 1000,
    "momentum": 0.9,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-8,
    "batch_size": None,
    "epochs": 1000,
    "l1": 0.0,
    "l2": 0.0,
    "init": "lecun",
    "dtype": "float64",
    "seed": 0,
    "early_stopping": False,
    "patience": 100,
    "record_every": 10,
    "snapshot_every": 100,
    "max_seconds": None,
    "tolerance": 1e-5,
    "lbfgs_memory": 10,
}

# README "Configuration": the settings whose default is a value...
SETTING_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8000,
    "max_queued_jobs": 100,
    "job_timeout_seconds": 3600.0,
    "max_hidden_layers": 8,
    "max_units_per_layer": 4096,
    "max_samples": 1_000_000,
    "max_epochs": 1_000_000,
    "max_work": 1e11,
    "max_sweep_configurations": 64,
    "predict_max_points": 100_000,
    "max_request_bytes": 67_108_864,
    "picture_cache_size": 64,
    "page_size_default": 50,
    "page_size_max": 500,
    "sse_ping_seconds": 15.0,
    "log_level": "info",
    "cache_bytes": 268_435_456,
    "request_timeout_seconds": 30.0,
    "max_active_jobs_per_key": 10,
    "rate_limit": "100/s",
    "rate_limit_burst": 200,
    "protect_docs": False,
    "cors_allow_credentials": False,
    "log_format": "json",
}
# ... and those whose default README describes in words (Settings holds None for all but
# workers: unset, or worked out by the service).
SETTING_DEFAULTS_IN_WORDS: dict[str, str] = {
    "workers": "CPU count",
    "data_dir": "unset",
    "max_stored_bytes": "a quarter of memory; with a data directory, half its free disk",
    "api_keys": "unset",
    "admin_api_keys": "unset",
    "cors_origins": "unset",
    "executor": "unset",
}


def readme_value(text: str) -> Any:
    """One default as README writes it: `tanh`, `[16]`, 0.01, 1e-8, null, false, 1,000,000."""
    text = text.strip().strip("`")
    if re.fullmatch(r"-?[\d,]+", text):
        return int(text.replace(",", ""))
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _rows(section: str) -> list[list[str]]:
    """The cells of every table row under README's heading `section`, up to the next heading."""
    text = README.read_text()
    start = text.index(f"\n{section}\n")
    end = text.find("\n#", start + len(section) + 2)
    rows = []
    for line in text[start : end if end >= 0 else None].splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def readme_generator_defaults() -> dict[str, dict[str, Any]]:
    """{kind: {parameter: default}} from the `kind` table; seed's default from the sentence
    "Every kind also takes ... `seed` (default N ...)"."""
    seed = readme_dataset_defaults()["seed"]
    table: dict[str, dict[str, Any]] = {}
    for cells in _rows("### Datasets"):
        kinds = re.findall(r"`(\w+)`", cells[0])
        if len(kinds) != 1 or len(cells) != 3 or kinds[0] in ("custom",):
            continue
        parameters = dict(re.findall(r"`(\w+)` \(([^)]*)\)", cells[2]))
        if not parameters:
            continue
        values = {name: readme_value(value) for name, value in parameters.items()}
        if "`seed`" in cells[2]:
            values["seed"] = seed
        table[kinds[0]] = values
    return table


def readme_dataset_defaults() -> dict[str, Any]:
    """{option: default} from "Every kind also takes ... `x` (default v ...)"."""
    text = README.read_text()
    sentence = text[text.index("Every kind also takes") :].split("\n\n")[0]
    found = re.findall(r"`(\w+)`\s+\(default ([^;:)]+)", sentence)
    return {name: readme_value(value) for name, value in found}


def readme_hyperparameter_defaults() -> dict[str, Any]:
    """{field: default} from the hyperparameters table (a row may name several fields, with
    their defaults in the same order: "`beta_1`, `beta_2`, `epsilon` | 0.9, 0.999, 1e-8")."""
    text = README.read_text()
    start = text.index("`hyperparameters` (every field optional")
    table: dict[str, Any] = {}
    for line in text[start:].split("\n\n")[1].splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0])
        if not names or cells[0] == "field":
            continue
        values = [cells[1]] if len(names) == 1 else cells[1].split(", ")
        assert len(values) == len(names), cells
        table.update(zip(names, map(readme_value, values), strict=True))
    return table


def readme_setting_defaults() -> dict[str, Any]:
    """{setting: default} from the Configuration table (SCRATCHNET_MAX_WORK -> max_work)."""
    table = {}
    for cells in _rows("## Configuration"):
        match = re.fullmatch(r"`SCRATCHNET_(\w+)`", cells[0])
        if match:
            table[match[1].lower()] = readme_value(cells[1])
    return table
