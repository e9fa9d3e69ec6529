"""/v1/datasets through the app: creation by kind, CSV uploads, errors, pages, pictures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.main import create_app
from tests.api_support import (
    api_settings,
    assert_problem,
    create_dataset,
    create_job,
    png_size,
    state_of,
    wait_for_job,
)
from tests.documented import GENERATOR_DEFAULTS

pytestmark = pytest.mark.anyio


async def dataset_count(client: httpx.AsyncClient) -> int:
    total: int = (await client.get("/v1/datasets")).json()["total"]
    return total


async def test_create_moons_answers_201_with_location_and_defaults(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/datasets", json={"kind": "moons", "n_samples": 100})
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    assert body["id"].startswith("ds_")
    assert body["created_at"].endswith("Z")
    assert body["name"] == "moons"
    assert (body["n_samples"], body["n_features"], body["n_classes"]) == (100, 2, 2)
    assert body["classes"] == [0, 1]
    assert body["class_counts"] == [50, 50]
    assert (body["train_size"], body["test_size"]) == (80, 20)
    assert (body["test_fraction"], body["standardize"], body["seed"]) == (0.2, True, 0)
    assert body["parameters"] == {"n_samples": 100, "noise": 0.2, "seed": 0}
    fetched = await client.get(response.headers["location"])
    assert fetched.json() == body


@pytest.mark.parametrize(
    ("kind", "n_features", "n_classes"),
    [
        ("circles", 2, 2),
        ("blobs", 2, 3),
        ("xor", 2, 2),
        ("spiral", 2, 3),
        ("gaussian", 2, 2),
        ("iris", 4, 3),
        ("wine", 13, 3),
        ("breast_cancer", 30, 2),
        ("digits", 64, 10),
    ],
)
async def test_every_kind_builds(
    client: httpx.AsyncClient, kind: str, n_features: int, n_classes: int
) -> None:
    body = await create_dataset(client, kind=kind)
    assert (body["n_features"], body["n_classes"]) == (n_features, n_classes)
    assert body["parameters"] == GENERATOR_DEFAULTS.get(kind, {})  # bundled sets take none


async def test_custom_points_with_string_labels_and_include_points(
    client: httpx.AsyncClient,
) -> None:
    points = [[float(i), float(i % 3)] for i in range(10)]
    labels = ["b" if i % 2 else "a" for i in range(10)]
    body = await create_dataset(
        client,
        kind="custom",
        points=points,
        labels=labels,
        feature_names=["width", "height"],
        test_fraction=0.4,
        standardize=False,
        seed=3,
        name="mine",
    )
    assert body["classes"] == ["a", "b"]
    assert body["feature_names"] == ["width", "height"]
    assert (body["train_size"], body["test_size"]) == (6, 4)
    assert body["points"] is None
    detail = (await client.get(f"/v1/datasets/{body['id']}?include_points=true")).json()
    assert detail["points"] == points
    assert detail["labels"] == labels
    assert detail["split"].count("test") == 4
    assert detail["split"].count("train") == 6


async def test_test_fraction_zero_means_no_test_split(client: httpx.AsyncClient) -> None:
    body = await create_dataset(client, kind="xor", n_samples=40, test_fraction=0)
    assert (body["train_size"], body["test_size"]) == (40, 0)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"kind": "iris", "noise": 0.1}, "noise", "noise does not apply to iris"),
        ({"kind": "moons", "n_classes": 3}, "n_classes", "always has 2 classes"),
        ({"kind": "moons", "points": [[0, 0]]}, "points", "applies only to kind custom"),
        ({"kind": "digits", "n_samples": 10}, "n_samples", "digits takes no generator"),
        ({"kind": "custom", "points": [[0.0], [1.0]]}, "labels", "kind custom needs labels"),
    ],
)
async def test_a_field_that_does_not_apply_is_named(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, words: str
) -> None:
    before = await dataset_count(client)
    problem = assert_problem(await client.post("/v1/datasets", json=body), 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["body", field]
    assert words in problem["detail"]
    assert await dataset_count(client) == before


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"kind": "custom", "points": [[0, NaN], [1, 1]], "labels": [0, 1]}', "points"),
        (b'{"kind": "custom", "points": [[0, 1e309], [1, 1]], "labels": [0, 1]}', "points"),
        (b'{"kind": "custom", "points": [[0, -Infinity], [1, 1]], "labels": [0, 1]}', "points"),
        (b'{"kind": "moons", "noise": Infinity}', "noise"),
        (b'{"kind": "moons", "test_fraction": NaN}', "test_fraction"),
    ],
)
async def test_non_finite_numbers_are_refused(
    client: httpx.AsyncClient, raw: bytes, field: str
) -> None:
    response = await client.post(
        "/v1/datasets", content=raw, headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["loc"][:2] == ["body", field]
    assert problem["errors"][0]["type"] == "finite_number"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"kind": "spiral", "n_classes": 11}, ["body", "n_classes"]),
        ({"kind": "moons", "test_fraction": 1.0}, ["body", "test_fraction"]),
        ({"kind": "moons", "seed": -1}, ["body", "seed"]),
        ({"kind": "sphere"}, ["body", "kind"]),
        ({"kind": "moons", "colour": "red"}, ["body", "colour"]),
        ({"kind": "custom", "points": [[0]], "labels": [True]}, ["body", "labels", 0]),
        ({}, ["body", "kind"]),
    ],
)
async def test_wrong_values_and_types_name_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[Any]
) -> None:
    problem = assert_problem(await client.post("/v1/datasets", json=body), 422, "validation-error")
    assert problem["errors"][0]["loc"][: len(loc)] == loc


async def test_too_many_samples_is_a_limit(client: httpx.AsyncClient) -> None:
    problem = assert_problem(
        await client.post("/v1/datasets", json={"kind": "moons", "n_samples": 2001}),
        422,
        "limit-exceeded",
    )
    assert "max_samples = 2000" in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", "n_samples"]


async def test_engine_refusals_are_invalid_input(client: httpx.AsyncClient) -> None:
    before = await dataset_count(client)
    # 2 points per class: test_fraction 0.1 leaves the test side without any of them
    response = await client.post(
        "/v1/datasets",
        json={
            "kind": "custom",
            "points": [[0], [1], [2], [3]],
            "labels": [0, 0, 1, 1],
            "test_fraction": 0.1,
        },
    )
    assert "puts no example of class" in assert_problem(response, 422, "invalid-input")["detail"]
    single = await client.post(
        "/v1/datasets", json={"kind": "custom", "points": [[0], [1]], "labels": [5, 5]}
    )
    assert "at least 2 classes" in assert_problem(single, 422, "invalid-input")["detail"]
    assert await dataset_count(client) == before


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/datasets", content=b'{"kind": ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_problem(response, 400, "malformed-request")["detail"]


# --- CSV -------------------------------------------------------------------------------------


async def post_csv(client: httpx.AsyncClient, text: str, **params: Any) -> httpx.Response:
    return await client.post(
        "/v1/datasets",
        content=text.encode(),
        params=params,
        headers={"content-type": "text/csv; charset=utf-8"},
    )


CSV = "length,width,species\n" + "".join(
    f"{i}.5,{i % 4},{'setosa' if i % 2 else 'virginica'}\n" for i in range(20)
)


async def test_csv_upload_takes_header_names_and_query_options(client: httpx.AsyncClient) -> None:
    response = await post_csv(client, CSV, name="flowers", test_fraction=0.5, standardize="false")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "custom"
    assert body["name"] == "flowers"
    assert body["feature_names"] == ["length", "width"]
    assert body["classes"] == ["setosa", "virginica"]
    assert (body["train_size"], body["test_size"], body["standardize"]) == (10, 10, False)


async def test_csv_label_column_can_be_named(client: httpx.AsyncClient) -> None:
    text = "label,a,b\n1,0.5,2\n0,1.5,3\n1,2.5,4\n0,3.5,5\n"
    response = await post_csv(client, text, label_column="label", test_fraction=0)
    assert response.status_code == 201, response.text
    assert response.json()["feature_names"] == ["a", "b"]
    assert response.json()["classes"] == [0, 1]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a,b,label\n1,2,x\n3,y\n", "line 3 has 2 fields but the header has 3"),
        ("a,b,label\n1,2,x\n3,four,y\n", "line 3, column 'b': 'four' is not a number"),
        ("a,b,label\n1,2,x\n3,nan,y\n", "line 3, column 'b': 'nan' is not a finite number"),
        ("a,b,label\n1,2,x\n3,inf,y\n", "line 3, column 'b': 'inf' is not a finite number"),
        ("a,b,label\n1,2,x\n3,4,x\n", "a classifier needs at least 2 classes"),
        ("a,b,label\n", "no data rows"),
    ],
)
async def test_csv_errors_name_the_line(client: httpx.AsyncClient, text: str, words: str) -> None:
    problem = assert_problem(await post_csv(client, text, test_fraction=0), 422, "invalid-input")
    assert words in problem["detail"]


async def test_csv_that_is_not_utf8_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/datasets", content=b"a,label\n\xff\xfe,1\n", headers={"content-type": "text/csv"}
    )
    assert "UTF-8" in assert_problem(response, 400, "malformed-request")["detail"]


async def test_csv_query_options_with_json_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/datasets?test_fraction=0.5", json={"kind": "moons"})
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"][0]["loc"] == ["query", "test_fraction"]


async def test_other_content_types_are_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/datasets",
        content=b"kind=moons",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported-media-type")


async def test_bodies_over_max_request_bytes_are_413(client: httpx.AsyncClient) -> None:
    big = "a,label\n" + "1.0,0\n2.0,1\n" * 8000  # > 64 KiB
    assert_problem(await post_csv(client, big), 413, "payload-too-large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
        for _ in range(20):
            yield b"1.0,0\n2.0,1\n" * 400

    response = await client.post(
        "/v1/datasets", content=chunks(), headers={"content-type": "text/csv"}
    )
    assert_problem(response, 413, "payload-too-large")


# --- reading, pages, deleting, pictures ------------------------------------------------------


async def test_pages_of_datasets() -> None:
    fresh = create_app(api_settings())  # no lifespan needed: datasets do not train
    transport = httpx.ASGITransport(app=fresh)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ids = [(await create_dataset(client, kind="xor", n_samples=20))["id"] for _ in range(4)]
        first = (await client.get("/v1/datasets")).json()
        assert (first["total"], first["limit"], first["offset"]) == (4, 3, 0)
        assert [item["id"] for item in first["items"]] == ids[:3]
        rest = (await client.get("/v1/datasets?limit=5&offset=3")).json()
        assert [item["id"] for item in rest["items"]] == ids[3:]
        problem = assert_problem(await client.get("/v1/datasets?limit=6"), 422, "invalid-request")
        assert "page_size_max = 5" in problem["detail"]
        assert_problem(await client.get("/v1/datasets?offset=-1"), 422, "validation-error")


async def test_unknown_dataset_is_404(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/v1/datasets/ds_missing"),
        await client.delete("/v1/datasets/ds_missing"),
        await client.get("/v1/datasets/ds_missing/image.png"),
    ):
        assert "ds_missing" in assert_problem(response, 404, "not-found")["detail"]


async def test_delete_dataset_then_it_is_gone(client: httpx.AsyncClient) -> None:
    body = await create_dataset(client, kind="moons", n_samples=30)
    response = await client.delete(f"/v1/datasets/{body['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await client.get(f"/v1/datasets/{body['id']}"), 404, "not-found")


async def test_delete_dataset_is_409_while_a_job_uses_it(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    body = await create_dataset(client, kind="moons", n_samples=100)
    job = await create_job(client, body["id"], **{"hidden_layers": [64], "epochs": 1_000_000})
    problem = assert_problem(await client.delete(f"/v1/datasets/{body['id']}"), 409, "conflict")
    assert job["id"] in problem["detail"]
    await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert (await wait_for_job(client, job["id"]))["status"] == "cancelled"
    assert (await client.delete(f"/v1/datasets/{body['id']}")).status_code == 204
    assert state_of(app).store.datasets.get(body["id"]) is None


async def test_image_is_a_png_of_the_asked_size_and_cached(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    body = await create_dataset(client, kind="blobs", n_samples=60)
    url = f"/v1/datasets/{body['id']}/image.png?width=320&height=200"
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert png_size(response.content) == (320, 200)
    cache = state_of(app).pictures
    hits = cache.hits
    again = await client.get(url)
    assert again.content == response.content
    assert cache.hits == hits + 1
    not_modified = await client.get(url, headers={"if-none-match": response.headers["etag"]})
    assert not_modified.status_code == 304


async def test_image_size_out_of_bounds_is_422(client: httpx.AsyncClient) -> None:
    body = await create_dataset(client, kind="moons", n_samples=30)
    problem = assert_problem(
        await client.get(f"/v1/datasets/{body['id']}/image.png?width=99"), 422, "validation-error"
    )
    assert problem["errors"][0]["loc"] == ["query", "width"]
