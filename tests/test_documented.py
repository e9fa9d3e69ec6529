"""README's documented defaults, as literal values (tests/documented.py), against README's own
text and against what the engine, the settings and the API use: changing a default without
README, or README without the code, fails here."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from engine.datasets import generate
from engine.hyperparameters import Hyperparameters
from tests.documented import (
    DATASET_DEFAULTS,
    GENERATOR_DEFAULTS,
    HYPERPARAMETER_DEFAULTS,
    SETTING_DEFAULTS,
    SETTING_DEFAULTS_IN_WORDS,
    readme_dataset_defaults,
    readme_generator_defaults,
    readme_hyperparameter_defaults,
    readme_setting_defaults,
)


def test_readme_states_these_defaults() -> None:
    assert readme_generator_defaults() == GENERATOR_DEFAULTS
    assert readme_dataset_defaults() == DATASET_DEFAULTS
    assert readme_hyperparameter_defaults() == HYPERPARAMETER_DEFAULTS
    assert readme_setting_defaults() == SETTING_DEFAULTS | SETTING_DEFAULTS_IN_WORDS


@pytest.mark.parametrize("kind", sorted(GENERATOR_DEFAULTS))
def test_generators_use_the_documented_defaults(kind: str) -> None:
    implicit = generate(kind)  # type: ignore[arg-type]
    explicit = generate(kind, **GENERATOR_DEFAULTS[kind])  # type: ignore[arg-type]
    assert implicit.n_samples == GENERATOR_DEFAULTS[kind]["n_samples"]
    assert np.array_equal(implicit.X, explicit.X) and np.array_equal(implicit.y, explicit.y)
    if "n_classes" in GENERATOR_DEFAULTS[kind]:
        assert implicit.n_classes == GENERATOR_DEFAULTS[kind]["n_classes"]
    other_noise = {**GENERATOR_DEFAULTS[kind], "noise": GENERATOR_DEFAULTS[kind]["noise"] + 0.05}
    noisier = generate(kind, **other_noise)  # type: ignore[arg-type]
    # noise moves the points, or (regression generators) the targets
    assert not (np.array_equal(implicit.X, noisier.X) and np.array_equal(implicit.y, noisier.y))


def test_hyperparameters_use_the_documented_defaults() -> None:
    assert Hyperparameters().model_dump(mode="json") == HYPERPARAMETER_DEFAULTS


def test_settings_use_the_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from service.settings import Settings

    for name in [name for name in os.environ if name.startswith("SCRATCHNET_")]:
        monkeypatch.delenv(name)
    settings = Settings().model_dump()
    assert set(settings) == set(SETTING_DEFAULTS) | set(SETTING_DEFAULTS_IN_WORDS)  # all in README
    assert settings["workers"] == (os.cpu_count() or 1)
    assert {settings[name] for name in SETTING_DEFAULTS_IN_WORDS if name != "workers"} == {None}
    assert {name: settings[name] for name in SETTING_DEFAULTS} == SETTING_DEFAULTS


@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(GENERATOR_DEFAULTS))
async def test_a_dataset_created_without_options_echoes_the_documented_ones(
    client: httpx.AsyncClient, kind: str
) -> None:
    response = await client.post("/v1/datasets", json={"kind": kind})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["parameters"] == GENERATOR_DEFAULTS[kind]
    assert body["n_samples"] == GENERATOR_DEFAULTS[kind]["n_samples"]
    assert {name: body[name] for name in DATASET_DEFAULTS} == DATASET_DEFAULTS


@pytest.mark.anyio
async def test_a_job_without_hyperparameters_echoes_the_documented_ones(
    client: httpx.AsyncClient,
) -> None:
    moons = (await client.post("/v1/datasets", json={"kind": "moons", "n_samples": 40})).json()
    response = await client.post("/v1/jobs", json={"dataset_id": moons["id"]})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    try:
        assert response.json()["hyperparameters"] == HYPERPARAMETER_DEFAULTS
    finally:
        await client.post(f"/v1/jobs/{job_id}/cancel")
