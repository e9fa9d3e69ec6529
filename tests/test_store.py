"""The stores: the SQLite file (schema migrations, damaged content, a full or read-only disk)
and the bound on stored bytes, through the API with the app's lifespan and real workers."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from fastapi import FastAPI
from pydantic import TypeAdapter

from tests.api_support import (
    QUICK_JOB,
    assert_problem,
    create_dataset,
    create_job,
    running,
    state_of,
    trained_model,
    wait_for_job,
)

pytestmark = pytest.mark.anyio

GRID = [[x, y] for x in np.linspace(-1.5, 2.5, 5) for y in np.linspace(-1.0, 1.5, 5)]


def sql(app: FastAPI, statement: str) -> None:
    """Run SQL on the store's own connection (how the tests make the disk full or read-only)."""
    store: Any = state_of(app).store
    with store.lock:
        store.connection.exec_driver_sql(statement)
        store.connection.commit()


async def test_everything_outlives_the_app_bit_for_bit(tmp_path: Path) -> None:
    async with running(data_dir=tmp_path) as (_app, client):
        dataset = await create_dataset(client, kind="moons", n_samples=120, noise=0.2)
        model = await trained_model(client, dataset)
        sweep = await client.post(
            "/v1/sweeps",
            json={"dataset_id": dataset["id"], "base": QUICK_JOB, "grid": {"l2": [0.0, 0.01]}},
        )
        assert sweep.status_code == 202
        exported = (await client.get(f"/v1/models/{model['id']}/export")).content
        imported = await client.post(
            "/v1/models/import",
            content=exported,
            headers={"content-type": "application/octet-stream"},
        )
        assert imported.status_code == 201
        for _ in range(500):
            body = (await client.get(f"/v1/sweeps/{sweep.json()['id']}")).json()
            if body["status"] == "succeeded":
                break
            await anyio.sleep(0.02)
        before = await snapshot(client)
    async with running(data_dir=tmp_path) as (app, client):
        assert state_of(app).store.backend == "sqlite"
        assert await snapshot(client) == before


async def snapshot(client: httpx.AsyncClient) -> dict[str, Any]:
    """Every list, every model's predictions and pictures, every history, as bytes."""
    seen: dict[str, Any] = {}
    for kind in ("datasets", "models", "jobs", "sweeps"):
        seen[kind] = (await client.get(f"/v1/{kind}?limit=5")).content
    for model in (await client.get("/v1/models?limit=5")).json()["items"]:
        url = f"/v1/models/{model['id']}"
        seen[url] = (await client.post(f"{url}/predict", json={"points": GRID})).content
        seen[f"{url}/png"] = (await client.get(f"{url}/decision-boundary.png")).content
        seen[f"{url}/export"] = (await client.get(f"{url}/export")).content
        if model["has_history"]:
            seen[f"{url}/loss"] = (await client.get(f"{url}/loss-curve.png")).content
    for job in (await client.get("/v1/jobs?limit=5")).json()["items"]:
        seen[job["id"]] = (await client.get(f"/v1/jobs/{job['id']}/history")).content
    for dataset in (await client.get("/v1/datasets?limit=5")).json()["items"]:
        url = f"/v1/datasets/{dataset['id']}"
        seen[url] = (await client.get(f"{url}?include_points=true")).content
        seen[f"{url}/png"] = (await client.get(f"{url}/image.png")).content
    return seen


async def test_damaged_content_is_a_409_naming_it_and_the_rest_still_works(
    tmp_path: Path,
) -> None:
    async with running(data_dir=tmp_path) as (_app, client):
        dataset = await create_dataset(client, kind="moons", n_samples=120)
        damaged = await trained_model(client, dataset)
        healthy = await trained_model(client, dataset)
    database = sqlite3.connect(tmp_path / "scratchnet.db")
    with database:
        (blob_id,) = database.execute(
            "SELECT blob_id FROM models WHERE id = ?", (damaged["id"],)
        ).fetchone()
        database.execute("UPDATE blobs SET data = substr(data, 1, 100) WHERE id = ?", (blob_id,))
    database.close()
    async with running(data_dir=tmp_path) as (_app, client):
        assert (await client.get(f"/v1/models/{damaged['id']}")).status_code == 200
        response = await client.post(
            f"/v1/models/{damaged['id']}/predict", json={"points": [[0.0, 0.0]]}
        )
        body = assert_problem(response, 409, "conflict")
        assert damaged["id"] in body["detail"] and "damaged" in body["detail"]
        ok = await client.post(f"/v1/models/{healthy['id']}/predict", json={"points": [[0, 0]]})
        assert ok.status_code == 200


async def test_a_full_disk_answers_507_changes_nothing_and_reads_go_on(tmp_path: Path) -> None:
    async with running(data_dir=tmp_path) as (app, client):
        dataset = await create_dataset(client, kind="moons", n_samples=120)
        model = await trained_model(client, dataset)
        exported = (await client.get(f"/v1/models/{model['id']}/export")).content
        listed = (await client.get("/v1/datasets")).json()
        sql(app, "PRAGMA max_page_count = 1")  # no page more: SQLite's "database or disk is full"
        refused = await client.post("/v1/datasets", json={"kind": "moons", "n_samples": 1000})
        body = assert_problem(refused, 507, "insufficient-storage")
        assert "disk is full" in body["detail"] and str(tmp_path) not in body["detail"]
        imported = await client.post(
            "/v1/models/import",
            content=exported,
            headers={"content-type": "application/octet-stream"},
        )
        assert_problem(imported, 507, "insufficient-storage")
        assert (await client.get("/v1/datasets")).json() == listed
        predicted = await client.post(f"/v1/models/{model['id']}/predict", json={"points": GRID})
        assert predicted.status_code == 200
        sql(app, "PRAGMA max_page_count = 1073741823")
        assert (await client.post("/v1/datasets", json={"kind": "moons"})).status_code == 201
    async with running(data_dir=tmp_path) as (_app, client):
        assert (await client.get("/v1/datasets")).json()["total"] == 2
        assert (await client.get("/v1/models")).json()["total"] == 1


async def test_a_read_only_database_answers_507_and_reads_go_on(tmp_path: Path) -> None:
    async with running(data_dir=tmp_path) as (app, client):
        dataset = await create_dataset(client, kind="circles", n_samples=120)
        sql(app, "PRAGMA query_only = ON")  # SQLite refuses every write, as for a read-only file
        refused = await client.post("/v1/datasets", json={"kind": "moons"})
        body = assert_problem(refused, 507, "insufficient-storage")
        assert "readonly" in body["detail"]
        deleted = await client.delete(f"/v1/datasets/{dataset['id']}")
        assert_problem(deleted, 507, "insufficient-storage")
        assert (await client.get(f"/v1/datasets/{dataset['id']}")).status_code == 200
        image = await client.get(f"/v1/datasets/{dataset['id']}/image.png")
        assert image.status_code == 200
        sql(app, "PRAGMA query_only = OFF")


async def test_stored_bytes_are_bounded_in_memory_with_a_507_naming_the_setting() -> None:
    from service.state.records import DatasetContent

    async with running(max_stored_bytes=60_000) as (app, client):
        first = await create_dataset(client, kind="moons", n_samples=1000)  # ~ 48 kB of arrays
        store = state_of(app).store
        content = store.datasets.content(first["id"])
        assert isinstance(content, DatasetContent)
        assert store.stored_bytes == content.nbytes
        refused = await client.post("/v1/datasets", json={"kind": "moons", "n_samples": 1000})
        body = assert_problem(refused, 507, "insufficient-storage")
        assert "max_stored_bytes = 60000" in body["detail"]
        assert f"({content.nbytes} bytes are used)" in body["detail"]
        info = (await client.get("/v1/info")).json()
        assert info["stored_bytes"] == content.nbytes
        assert info["limits"]["max_stored_bytes"] == 60_000
        metrics = (await client.get("/metrics")).text
        assert f"scratchnet_stored_bytes {float(content.nbytes)}" in metrics
        assert (await client.get("/v1/datasets")).json()["total"] == 1
        assert (await client.delete(f"/v1/datasets/{first['id']}")).status_code == 204
        assert store.stored_bytes == 0
        assert (await client.post("/v1/datasets", json={"kind": "moons"})).status_code == 201


async def test_a_job_whose_model_would_pass_the_bound_fails_with_insufficient_storage() -> None:
    async with running(max_stored_bytes=10_000) as (_app, client):
        dataset = await create_dataset(client, kind="moons", n_samples=100)  # ~ 4.8 kB
        job = await create_job(
            client, dataset["id"], hidden_layers=[64, 64], epochs=20, record_every=10
        )
        failed = await wait_for_job(client, job["id"])
        assert failed["status"] == "failed" and failed["model_id"] is None
        assert failed["error"]["type"] == "insufficient_storage"
        assert "max_stored_bytes = 10000" in failed["error"]["detail"]
        assert (await client.get("/v1/models")).json()["total"] == 0


def test_an_older_database_is_migrated_and_a_newer_one_refused(tmp_path: Path) -> None:
    from engine.datasets import generate, split
    from service.settings import Settings
    from service.state.records import DatasetContent, DatasetRecord, utc_now
    from service.state.sqlite_store import (
        NewerDatabase,
        SQLiteStore,
        alembic_config,
        encode_dataset,
    )

    path = tmp_path / "scratchnet.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0001")  # the first schema
        connection.commit()
        tables = set(sa.inspect(connection).get_table_names())
        assert "idempotency_keys" not in tables and "datasets" in tables
        dataset = generate("moons", n_samples=50, noise=0.1, seed=3)
        content = DatasetContent(
            dataset, split(dataset, test_fraction=0.2, standardize=True, seed=0)
        )
        record = DatasetRecord.describe(
            content,
            id="ds_0000000000000001",
            name="old",
            kind="moons",
            parameters={"n_samples": 50, "noise": 0.1, "seed": 3},
            test_fraction=0.2,
            standardize=True,
            seed=0,
            created_at=utc_now(),
        )
        data = encode_dataset(content)
        blob = connection.execute(
            sa.text("INSERT INTO blobs (sha256, data) VALUES (:sha, :data) RETURNING id"),
            {"sha": hashlib.sha256(data).hexdigest(), "data": data},
        ).scalar_one()
        connection.execute(
            sa.text("INSERT INTO datasets (id, record, nbytes, blob_id) VALUES (:id, :r, :n, :b)"),
            {
                "id": record.id,
                "r": TypeAdapter(DatasetRecord).dump_json(record).decode(),
                "n": record.nbytes,
                "b": blob,
            },
        )
        connection.commit()
    engine.dispose()

    store = SQLiteStore(tmp_path, Settings().stored_bytes_limit(), cache_bytes=1 << 20)
    try:
        assert store.datasets.get(record.id) == record
        loaded = store.datasets.content(record.id)
        assert loaded is not None
        np.testing.assert_array_equal(loaded.split.X_train, content.split.X_train)
        revision = store.connection.exec_driver_sql("SELECT version_num FROM alembic_version")
        assert revision.scalar_one() == "0004"
        tables = sa.inspect(store.connection).get_table_names()
        assert "model_aliases" in tables  # 0003
        assert "work_snapshots" in tables  # 0004
        store.connection.rollback()
    finally:
        store.close()

    database = sqlite3.connect(path)
    with database:
        database.execute("UPDATE alembic_version SET version_num = '0099'")
    database.close()
    with pytest.raises(NewerDatabase, match=r"revision 0099.*newer scratchnet.*up to 0004"):
        SQLiteStore(tmp_path, 1 << 30, cache_bytes=1 << 20)


async def test_an_online_backup_restores_everything(tmp_path: Path) -> None:
    live, restored = tmp_path / "live", tmp_path / "restored"
    restored.mkdir()
    async with running(data_dir=live) as (_app, client):
        dataset = await create_dataset(client, kind="moons", n_samples=120)
        await trained_model(client, dataset)
        before = await snapshot(client)
        # what `sqlite3 scratchnet.db ".backup copy.db"` does, while the service runs
        source = sqlite3.connect(live / "scratchnet.db")
        copy = sqlite3.connect(restored / "scratchnet.db")
        with copy:
            source.backup(copy)
        source.close()
        copy.close()
    async with running(data_dir=restored) as (_app, client):
        assert await snapshot(client) == before


def test_snapshots_are_thinned_evenly_keeping_the_first_and_the_latest() -> None:
    from engine.training import ParameterSnapshot
    from service.state.records import MAX_SNAPSHOT_BYTES, MAX_SNAPSHOTS, keep_snapshot

    small = [np.zeros((2, 3))], [np.zeros(3)]
    kept: list[ParameterSnapshot] = []
    for index in range(1000):
        keep_snapshot(kept, ParameterSnapshot(index, 10 * (index + 1), *small))
        assert len(kept) <= MAX_SNAPSHOTS
        assert kept[0].index == 0 and kept[-1].index == index
        gaps = {b.index - a.index for a, b in itertools.pairwise(kept[:-1])}
        assert len(gaps) <= 1  # evenly spaced (the latest aside)
    # 1000 taken: a stride of 16 keeps 0, 16, ..., 992 and the latest, 999
    assert [s.index for s in kept] == [*range(0, 1000, 16), 999]
    # snapshots that arrive with gaps are thinned by the same rule as a full rebuild
    rng = np.random.default_rng(0)
    indices = np.cumsum(rng.integers(1, 9, size=600)) - 1
    gapped: list[ParameterSnapshot] = []
    for index in map(int, indices):
        keep_snapshot(gapped, ParameterSnapshot(index, index + 1, *small))
        stride = 1
        while index // stride + 1 + (index % stride != 0) > MAX_SNAPSHOTS:
            stride *= 2
        expected = [int(i) for i in indices if i <= index and i % stride == 0]
        assert [s.index for s in gapped] == expected + ([index] if index % stride else [])
    # a network too big for two snapshots in the bound keeps only its latest
    big = [np.zeros(MAX_SNAPSHOT_BYTES // 8 // 2 + 1)], [np.zeros(1)]
    huge: list[ParameterSnapshot] = []
    for index in range(3):
        keep_snapshot(huge, ParameterSnapshot(index, index + 1, *big))
        assert [s.index for s in huge] == [index]


def test_regression_models_and_datasets_round_trip_and_older_histories_load() -> None:
    import io as _io
    import itertools

    from engine.datasets import generate, split
    from engine.hyperparameters import Hyperparameters
    from engine.model import Model, Scaler
    from engine.training import HistoryPoint
    from service.state.records import DatasetContent, DatasetRecord, ModelContent, utc_now
    from service.state.sqlite_store import (
        decode_dataset,
        decode_model,
        encode_dataset,
        encode_model,
    )

    data = generate("friedman1", n_samples=40, n_features=6)
    content = DatasetContent(data, split(data, test_fraction=0.25, standardize=True, seed=0))
    record = DatasetRecord.describe(
        content, id="ds_1", name="f", kind="friedman1", parameters={}, test_fraction=0.25,
        standardize=True, seed=0, created_at=utc_now(),
    )  # fmt: skip
    assert (record.task, record.target_names, record.n_outputs) == ("regression", ("y",), 1)
    decoded = decode_dataset(record, encode_dataset(content))
    assert decoded.dataset.task == "regression"
    assert np.array_equal(decoded.split.y_test, content.split.y_test)

    rng = np.random.default_rng(0)
    sizes = [6, 3, 1]
    model = Model(
        weights=[rng.normal(size=(a, b)) for a, b in itertools.pairwise(sizes)],
        biases=[rng.normal(size=b) for b in sizes[1:]],
        activation="tanh",
        classes=(),
        hyperparameters=Hyperparameters(hidden_layers=[3]),
        task="regression",
        target_names=("y",),
        target_scaler=Scaler(mean=np.array([14.0]), scale=np.array([5.0])),
    )
    metrics = {"loss": 0.5, "mse": 0.4, "mae": 0.3, "r2": 0.9}
    history = (
        HistoryPoint.of(10, metrics, metrics, 0.01),
        HistoryPoint.of(20, metrics, None, 0.01),
    )
    loaded = decode_model(None, encode_model(ModelContent(model, history)))  # type: ignore[arg-type]
    assert loaded.history == history
    points = rng.normal(size=(5, 6))
    np.testing.assert_array_equal(loaded.model.predict_values(points), model.predict_values(points))

    # A model stored before regression: its history array has six columns.
    classifier = ModelContent(
        Model([np.eye(2)], [np.zeros(2)], "tanh", (0, 1), Hyperparameters(hidden_layers=[])), ()
    )
    arrays = dict(np.load(_io.BytesIO(encode_model(classifier))))
    arrays["history"] = np.array([[10, 0.5, 0.75, np.nan, np.nan, 0.01]])  # (1, 6)
    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    old = decode_model(None, buffer.getvalue())  # type: ignore[arg-type]
    assert old.history == (HistoryPoint(10, 0.5, 0.75, None, None, 0.01),)
    assert old.history[0].as_dict() == {
        "epoch": 10, "train_loss": 0.5, "train_accuracy": 0.75, "test_loss": None,
        "test_accuracy": None, "learning_rate": 0.01,
    }  # fmt: skip
