"""Model aliases through the API: every model route takes one, a move is one step, each key
has its own, they outlive a restart with a data directory, and they go with their model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_support import (
    assert_problem,
    create_dataset,
    running,
    state_of,
    trained_model,
)

pytestmark = pytest.mark.anyio

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef"
KEYS = {"api_keys": f"alice:{ALICE},bob:{BOB}"}


async def two_models(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    moons = await create_dataset(client, kind="moons", n_samples=100)
    return await trained_model(client, moons), await trained_model(client, moons)


async def aliases_of(client: httpx.AsyncClient, model_id: str) -> list[str]:
    response = await client.get(f"/v1/models/{model_id}")
    assert response.status_code == 200
    aliases: list[str] = response.json()["aliases"]
    return aliases


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_an_alias_names_its_model_on_every_route_and_moves_in_one_step(
    store: str, tmp_path: Path
) -> None:
    settings = {"data_dir": tmp_path} if store == "sqlite" else {}
    async with running(**settings) as (app, client):
        assert state_of(app).store.backend == store
        first, second = await two_models(client)
        put = await client.put(f"/v1/models/{first['id']}/aliases/moons-best")
        assert put.status_code == 200 and put.json()["aliases"] == ["moons-best"]
        again = await client.put(f"/v1/models/{first['id']}/aliases/moons-best")
        assert again.json()["aliases"] == ["moons-best"]  # setting it twice changes nothing
        await client.put("/v1/models/moons-best/aliases/v1.0")  # an alias names the model here too
        assert await aliases_of(client, first["id"]) == ["moons-best", "v1.0"]

        read = await client.get("/v1/models/moons-best")
        assert read.json()["id"] == first["id"]
        points = {"points": [[0.5, 0.25], [-1.0, 0.75]]}
        by_alias = await client.post("/v1/models/moons-best/predict", json=points)
        by_id = await client.post(f"/v1/models/{first['id']}/predict", json=points)
        assert by_alias.status_code == 200 and by_alias.json() == by_id.json()
        export = await client.get("/v1/models/moons-best/export")
        assert export.content == (await client.get(f"/v1/models/{first['id']}/export")).content
        assert f'filename="{first["id"]}.npz"' in export.headers["content-disposition"]
        for picture in ("decision-boundary.png", "loss-curve.png"):
            drawn = await client.get(f"/v1/models/moons-best/{picture}", params={"width": 120})
            assert drawn.status_code == 200 and drawn.content.startswith(b"\x89PNG"), picture

        moved = await client.put(f"/v1/models/{second['id']}/aliases/moons-best")
        assert moved.json()["aliases"] == ["moons-best"]
        assert await aliases_of(client, first["id"]) == ["v1.0"]  # the old model lost it
        assert (await client.get("/v1/models/moons-best")).json()["id"] == second["id"]
        listed = {m["id"]: m["aliases"] for m in (await client.get("/v1/models")).json()["items"]}
        assert listed == {first["id"]: ["v1.0"], second["id"]: ["moons-best"]}

        removed = await client.delete(f"/v1/models/{second['id']}/aliases/moons-best")
        assert removed.status_code == 204
        assert_problem(await client.get("/v1/models/moons-best"), 404, "not-found")
        assert_problem(
            await client.delete(f"/v1/models/{second['id']}/aliases/moons-best"), 404, "not-found"
        )
        # another model's alias is not this one's to remove
        assert_problem(
            await client.delete(f"/v1/models/{second['id']}/aliases/v1.0"), 404, "not-found"
        )
        assert await aliases_of(client, first["id"]) == ["v1.0"]


@pytest.mark.parametrize(
    "alias",
    ["bad_name", "mdl_0123456789abcdef", "-leading", ".hidden", "a" * 64, "sp ace", "é"],
)
async def test_a_bad_alias_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient, alias: str
) -> None:
    moons = await create_dataset(client, kind="moons", n_samples=60)
    model = await trained_model(client, moons)
    response = await client.put(f"/v1/models/{model['id']}/aliases/{alias}")
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"] == ["path", "alias"]
    assert await aliases_of(client, model["id"]) == []


async def test_an_unknown_model_is_a_404(client: httpx.AsyncClient) -> None:
    for name in ("mdl_0000000000000000", "no-such-alias"):
        assert_problem(await client.put(f"/v1/models/{name}/aliases/best"), 404, "not-found")
        assert_problem(await client.get(f"/v1/models/{name}"), 404, "not-found")


async def test_deleting_a_model_deletes_its_aliases(tmp_path: Path) -> None:
    async with running(data_dir=tmp_path) as (_app, client):
        first, second = await two_models(client)
        await client.put(f"/v1/models/{first['id']}/aliases/champion")
        assert (await client.delete("/v1/models/champion")).status_code == 204  # by its alias
        assert_problem(await client.get(f"/v1/models/{first['id']}"), 404, "not-found")
        assert_problem(await client.get("/v1/models/champion"), 404, "not-found")
        free = await client.put(f"/v1/models/{second['id']}/aliases/champion")
        assert free.json()["aliases"] == ["champion"]
    async with running(data_dir=tmp_path) as (_app, client):
        assert (await client.get("/v1/models/champion")).json()["id"] == second["id"]


async def test_aliases_survive_a_restart(tmp_path: Path) -> None:
    async with running(data_dir=tmp_path) as (_app, client):
        first, second = await two_models(client)
        await client.put(f"/v1/models/{first['id']}/aliases/production")
        await client.put(f"/v1/models/{first['id']}/aliases/staging")
        await client.put(f"/v1/models/{second['id']}/aliases/staging")  # moved
        await client.put(f"/v1/models/{second['id']}/aliases/gone")
        await client.delete(f"/v1/models/{second['id']}/aliases/gone")
    async with running(data_dir=tmp_path) as (_app, client):
        assert await aliases_of(client, first["id"]) == ["production"]
        assert await aliases_of(client, second["id"]) == ["staging"]
        assert (await client.get("/v1/models/staging")).json()["id"] == second["id"]
        assert_problem(await client.get("/v1/models/gone"), 404, "not-found")


async def test_each_key_has_its_own_aliases() -> None:
    alice = {"Authorization": f"Bearer {ALICE}"}
    bob = {"X-API-Key": BOB}
    async with running(**KEYS) as (_app, client):
        models = {}
        for who, headers in (("alice", alice), ("bob", bob)):
            client.headers.update(headers)
            models[who] = (await two_models(client))[0]
            for key in headers:
                del client.headers[key]
        alice_id, bob_id = models["alice"]["id"], models["bob"]["id"]
        put = await client.put(f"/v1/models/{alice_id}/aliases/best", headers=alice)
        assert put.status_code == 200
        assert (
            await client.put(f"/v1/models/{bob_id}/aliases/best", headers=bob)
        ).status_code == 200
        assert (await client.get("/v1/models/best", headers=alice)).json()["id"] == alice_id
        assert (await client.get("/v1/models/best", headers=bob)).json()["id"] == bob_id
        # alice's model and her alias do not exist for bob, whatever he names them by
        assert_problem(
            await client.put(f"/v1/models/{alice_id}/aliases/mine", headers=bob), 404, "not-found"
        )
        assert_problem(
            await client.delete(f"/v1/models/{alice_id}/aliases/best", headers=bob),
            404,
            "not-found",
        )
        await client.delete(f"/v1/models/{bob_id}/aliases/best", headers=bob)
        assert_problem(await client.get("/v1/models/best", headers=bob), 404, "not-found")
        assert (await client.get("/v1/models/best", headers=alice)).json()["id"] == alice_id
        assert_problem(await client.get("/v1/models/best"), 401, "unauthorized")


async def test_a_refused_write_changes_no_alias(tmp_path: Path) -> None:
    from tests.test_store import sql

    async with running(data_dir=tmp_path) as (app, client):
        first, second = await two_models(client)
        await client.put(f"/v1/models/{first['id']}/aliases/kept")
        sql(app, "PRAGMA query_only = ON")  # SQLite refuses every write, as for a read-only file
        for method, url in (
            ("PUT", f"/v1/models/{second['id']}/aliases/kept"),  # a move
            ("PUT", f"/v1/models/{second['id']}/aliases/new"),
            ("DELETE", f"/v1/models/{first['id']}/aliases/kept"),
            ("DELETE", "/v1/models/kept"),  # the model and its alias
        ):
            refused = await client.request(method, url)
            assert_problem(refused, 507, "insufficient-storage")
        assert (await client.get("/v1/models/kept")).json()["id"] == first["id"]
        assert await aliases_of(client, second["id"]) == []
        sql(app, "PRAGMA query_only = OFF")
    async with running(data_dir=tmp_path) as (_app, client):
        assert await aliases_of(client, first["id"]) == ["kept"]
        assert await aliases_of(client, second["id"]) == []
