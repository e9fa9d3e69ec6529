"""Operations endpoints, error handling shared by every route, offline docs, the OpenAPI
document."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from service.errors import Problem
from tests.api_support import (
    PROBLEM,
    QUICK_JOB,
    api_settings,
    assert_problem,
    create_dataset,
    create_job,
    wait_for_job,
)

pytestmark = pytest.mark.anyio

# Every status code each route can answer (besides 405 and 500, which any route can). Every
# /v1 route can also answer 401 (a key is needed when the service has keys) and 429 (the rate
# limit); ALL_V1 adds them.
ALL_V1 = {"429"}
PICTURE = {"200", "304", "404", "422", "503"}
DECLARED: dict[tuple[str, str], set[str]] = {
    ("post", "/v1/datasets"): {"201", "400", "413", "415", "422", "507"},
    ("get", "/v1/datasets"): {"200", "422"},
    ("get", "/v1/datasets/{dataset_id}"): {"200", "404", "422"},
    ("delete", "/v1/datasets/{dataset_id}"): {"204", "404", "409", "507"},
    ("get", "/v1/datasets/{dataset_id}/image.png"): PICTURE,
    ("post", "/v1/jobs"): {"202", "400", "404", "409", "413", "415", "422", "429", "503"},
    ("get", "/v1/jobs"): {"200", "422"},
    ("get", "/v1/jobs/{job_id}"): {"200", "404"},
    ("get", "/v1/jobs/{job_id}/history"): {"200", "404", "422"},
    ("get", "/v1/jobs/{job_id}/events"): {"200", "404", "422"},
    ("post", "/v1/jobs/{job_id}/cancel"): {"202", "404", "409"},
    ("get", "/v1/jobs/{job_id}/snapshots"): {"200", "404"},
    ("get", "/v1/jobs/{job_id}/decision-boundary.png"): PICTURE | {"409"},
    ("get", "/v1/jobs/{job_id}/evolution.gif"): PICTURE | {"409"},
    ("get", "/v1/models"): {"200", "422"},
    ("post", "/v1/models/import"): {"201", "413", "415", "422", "507"},
    ("get", "/v1/models/{model_id}"): {"200", "404"},
    ("delete", "/v1/models/{model_id}"): {"204", "404", "507"},
    ("post", "/v1/models/{model_id}/predict"): {"200", "400", "404", "413", "415", "422", "503"},
    ("get", "/v1/models/{model_id}/decision-boundary.png"): PICTURE | {"409"},
    ("get", "/v1/models/{model_id}/predicted-vs-actual.png"): PICTURE | {"409"},
    ("get", "/v1/models/{model_id}/loss-curve.png"): PICTURE | {"409"},
    ("get", "/v1/models/{model_id}/neurons.png"): PICTURE | {"409"},
    ("get", "/v1/models/{model_id}/export"): {"200", "404"},
    ("post", "/v1/sweeps"): {"202", "400", "409", "413", "415", "422", "429", "503"},
    ("get", "/v1/sweeps"): {"200", "422"},
    ("get", "/v1/sweeps/{sweep_id}"): {"200", "404"},
    ("post", "/v1/sweeps/{sweep_id}/cancel"): {"202", "404", "409"},
    ("get", "/v1/sweeps/{sweep_id}/events"): {"200", "404", "422"},
    ("get", "/v1/sweeps/{sweep_id}/grid.png"): PICTURE | {"409"},
    ("get", "/v1/sweeps/{sweep_id}/curves.png"): PICTURE | {"409"},
    ("get", "/v1/info"): {"200"},
    ("put", "/v1/models/{model_id}/aliases/{alias}"): {"200", "404", "422", "507"},
    ("delete", "/v1/models/{model_id}/aliases/{alias}"): {"204", "404", "422", "507"},
    ("get", "/v2"): {"200"},
    ("get", "/v2/models/{name}"): {"200", "404"},
    ("get", "/v2/models/{name}/ready"): {"200", "404"},
    ("post", "/v2/models/{name}/infer"): {"200", "400", "404", "413", "415", "503"},
}
DECLARED = {key: codes | ALL_V1 for key, codes in DECLARED.items()} | {
    ("get", "/healthz"): {"200"},
    ("get", "/v2/health/live"): {"200"},
    ("get", "/v2/health/ready"): {"200"},
    ("get", "/readyz"): {"200", "503"},
    ("get", "/metrics"): {"200"},
}


def success_media_type(path: str) -> str:
    if path.endswith(".png"):
        return "image/png"
    if path.endswith(".gif"):
        return "image/gif"
    if path.endswith("/events"):
        return "text/event-stream"
    if path.endswith("/export"):
        return "application/octet-stream"
    if path == "/metrics":
        return "text/plain"
    return "application/json"


def own_schemas() -> set[str]:
    """Components defined by the modules these tests cover."""
    from pydantic import BaseModel

    from service.api import schemas

    defined = {
        name
        for name, value in vars(schemas).items()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == schemas.__name__
    }
    return defined | {"Problem", "ValidationIssue", "Hyperparameters"}


@pytest.fixture
async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    # workers on this machine: no cluster to describe
    assert (await client.get("/readyz")).json() == {"status": "ok", "cluster": None}


async def test_info_reports_workers_and_limits(client: httpx.AsyncClient) -> None:
    info = (await client.get("/v1/info")).json()
    assert info["executor_backend"] == "LocalProcessExecutor"
    assert info["workers"] == 2
    assert len(info["worker_pids"]) == 2
    assert info["ready"] is True
    assert info["cluster"] is None
    settings = api_settings()
    assert info["limits"]["max_hidden_layers"] == settings.max_hidden_layers
    assert info["limits"]["predict_max_points"] == settings.predict_max_points
    assert info["limits"]["max_work"] == settings.max_work


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_values_follow_known_traffic(client: httpx.AsyncClient) -> None:
    """Counters move by exactly the traffic sent; gauges show the state after it. (The shared
    app runs one test at a time, and the client fixture leaves nothing training.)"""
    first = await client.get("/metrics")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/plain")
    before = scrape(first.text)
    for _ in range(3):
        assert (await client.get("/v1/datasets/ds_nothing")).status_code == 404
    assert (await client.get("/v1/nowhere")).status_code == 404
    moons = await create_dataset(client, kind="moons", n_samples=40)
    job = await create_job(client, moons["id"], **QUICK_JOB)
    assert (await wait_for_job(client, job["id"]))["status"] == "succeeded"
    text = (await client.get("/metrics")).text
    after = scrape(text)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    missing = {"method": "GET", "route": "/v1/datasets/{dataset_id}", "status": "404"}
    assert moved("scratchnet_http_requests_total", **missing) == 3
    assert moved("scratchnet_http_request_duration_seconds_count", **missing) == 3
    assert moved("scratchnet_http_request_duration_seconds_bucket", **missing, le="+Inf") == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert moved("scratchnet_http_requests_total", **unmatched) == 1
    created = {"method": "POST", "route": "/v1/jobs", "status": "202"}
    assert moved("scratchnet_http_requests_total", **created) == 1
    assert "ds_nothing" not in text and "nowhere" not in text  # templates, never raw paths
    assert moved("scratchnet_epochs_trained_total") == QUICK_JOB["epochs"]
    assert moved("scratchnet_jobs", status="succeeded") == 1
    assert after[("scratchnet_jobs", (("status", "running"),))] == 0
    assert after[("scratchnet_queue_depth", ())] == 0
    assert after[("scratchnet_running_jobs", ())] == 0
    assert after[("scratchnet_workers", ())] == 2
    assert after[("scratchnet_event_streams", ())] == 0


async def test_unknown_path_is_a_404_problem(client: httpx.AsyncClient) -> None:
    assert (
        "/v1/things" in assert_problem(await client.get("/v1/things"), 404, "not-found")["detail"]
    )  # under /v2 the Open Inference Protocol's {"error"} (tests/test_api_inference.py)


async def test_wrong_method_is_a_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/jobs")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, POST"
    on_item = await client.post("/v1/models/mdl_x")
    assert_problem(on_item, 405, "method-not-allowed")
    assert on_item.headers["allow"] == "GET, DELETE"


async def test_405_lists_only_the_methods_of_the_literal_path(client: httpx.AsyncClient) -> None:
    # /v1/models/{model_id} must not take "import": that path is POST only.
    for method in ("GET", "DELETE", "PUT"):
        response = await client.request(method, "/v1/models/import")
        assert_problem(response, 405, "method-not-allowed")
        assert response.headers["allow"] == "POST", method
    assert (await client.get("/v1/models/imports")).status_code == 404


async def test_unexpected_errors_are_a_generic_500_problem() -> None:
    from service.main import create_app

    app = create_app(api_settings())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/boom")
    problem = assert_problem(response, 500, "internal-error")
    assert "secret" not in response.text
    assert problem["detail"] == "an unexpected error occurred"


# --- offline docs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", ["/static/docs/swagger-ui-bundle.js", "/static/docs/swagger-ui.css"]),
        ("/redoc", ["/static/docs/redoc.standalone.js"]),
    ],
)
async def test_docs_pages_load_their_assets_from_this_server(
    client: httpx.AsyncClient, page: str, assets: list[str]
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    assert "/openapi.json" in html
    for asset in assets:
        assert asset in html
        served = await client.get(asset)
        assert served.status_code == 200
        assert len(served.content) > 10_000
    assert "cdn" not in html.lower()
    assert "fonts.googleapis" not in html


# --- the OpenAPI document ------------------------------------------------------------------


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


async def test_openapi_declares_every_status_code_of_every_route(
    openapi: dict[str, Any],
) -> None:
    declared = {key: set(op["responses"]) for key, op in operations(openapi).items()}
    assert declared == DECLARED  # every operation, none left out


async def test_openapi_errors_are_problem_json_and_successes_have_their_media_type(
    openapi: dict[str, Any],
) -> None:
    for key, operation in operations(openapi).items():
        for code, response in operation["responses"].items():
            content = response.get("content", {})
            if int(code) >= 400 and key[1].startswith("/v2"):  # the protocol's own shape
                error = {"$ref": "#/components/schemas/InferenceError"}
                assert content["application/json"]["schema"] == error, key
            elif int(code) >= 400:
                assert list(content) == ["application/problem+json"], key
                problem = content["application/problem+json"]
                assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}, key
                example = Problem.model_validate(problem["example"])
                assert example.status == int(code), (key, code)
                assert example.type.startswith(PROBLEM) and example.detail, (key, code)
                assert (example.errors is not None) == (code == "422"), (key, code)
            elif code in ("204", "304"):
                assert content == {}, key
            else:
                assert list(content) == [success_media_type(key[1])], (key, code, list(content))
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


async def test_openapi_dataset_creation_takes_json_and_csv(openapi: dict[str, Any]) -> None:
    body = openapi["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/DatasetCreate"}
    assert body["text/csv"]["schema"] == {"type": "string"}
    assert "DatasetCreate" in openapi["components"]["schemas"]
    upload = openapi["paths"]["/v1/models/import"]["post"]["requestBody"]["content"]
    assert list(upload) == ["application/octet-stream"]


async def test_openapi_describes_every_schema_and_field(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for body, field in (("JobCreate", "hyperparameters"), ("SweepCreate", "base")):
        reference = schemas[body]["properties"][field]["$ref"]
        assert reference.endswith("/HyperparametersCreate"), body
    # Request, Page and TaskMetrics: the bases of request bodies, of listings and of metric
    # bodies, never components
    own = own_schemas() - {"Request", "Page", "TaskMetrics"}
    assert own <= set(schemas)
    for name in own:
        schema = schemas[name]
        assert schema.get("description"), name
        for field, definition in schema.get("properties", {}).items():
            assert definition.get("description") or definition.get("$ref"), (name, field)
    for name in ("DatasetCreate", "JobCreate", "PredictRequest", "Hyperparameters", "Problem"):
        assert schemas[name].get("examples"), name


async def test_openapi_declares_location_and_retry_after_headers(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    for path, method, code in (
        ("/v1/datasets", "post", "201"),
        ("/v1/models/import", "post", "201"),
        ("/v1/jobs", "post", "202"),
        ("/v1/sweeps", "post", "202"),
    ):
        assert "Location" in paths[path][method]["responses"][code]["headers"], path
    for path in ("/v1/jobs", "/v1/sweeps"):
        for code in ("429", "503"):
            assert "Retry-After" in paths[path]["post"]["responses"][code]["headers"], path
    assert "ProgressEvent" in openapi["components"]["schemas"]


# --- the exact contract (service.api.contract) ---------------------------------------------


async def test_every_operation_has_a_summary_a_description_and_only_known_statuses(
    openapi: dict[str, Any],
) -> None:
    from service.api.contract import ERROR_CLASSES

    for key, operation in operations(openapi).items():
        assert operation.get("summary"), key
        assert operation.get("description"), key
        errors = {int(code) for code in operation["responses"] if int(code) >= 400}
        assert errors <= set(ERROR_CLASSES), key


def link_targets(document: dict[str, Any], source: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """operationId -> link, over every success response of `source`."""
    return {
        link["operationId"]: link
        for code, response in source["responses"].items()
        if code.startswith("2")
        for link in response.get("links", {}).values()
    }


# The operations creating each kind of resource, and the id name it gets.
CREATORS = {
    ("post", "/v1/datasets"): "dataset_id",
    ("post", "/v1/jobs"): "job_id",
    ("post", "/v1/sweeps"): "sweep_id",
    ("post", "/v1/models/import"): "model_id",
}


async def test_links_lead_from_each_creating_operation_to_every_operation_taking_its_id(
    openapi: dict[str, Any],
) -> None:
    by_id = {op["operationId"]: op for op in operations(openapi).values()}
    for key, name in CREATORS.items():
        links = link_targets(openapi, operations(openapi)[key])
        takers = {
            op["operationId"]
            for op in operations(openapi).values()
            if any(p["name"] == name and p["in"] == "path" for p in op.get("parameters", []))
        }
        assert takers, name
        for operation_id in takers:
            link = links.get(operation_id)
            assert link is not None, (key, operation_id)
            assert link["parameters"] == {f"path.{name}": "$response.body#/id"}, (key, link)
        assert operation_id in by_id
    dataset_links = link_targets(openapi, operations(openapi)[("post", "/v1/datasets")])
    for body_taker in ("create_job_v1_jobs_post", "create_sweep_v1_sweeps_post"):
        assert dataset_links[body_taker]["requestBody"] == {"dataset_id": "$response.body#/id"}


async def test_every_id_taking_operation_is_reachable_by_a_link(openapi: dict[str, Any]) -> None:
    """Stateful clients start from the operations taking no id and follow links: every
    operation must be reachable that way."""
    all_operations = list(operations(openapi).values())
    by_id = {op["operationId"]: op for op in all_operations}
    reached = {
        op["operationId"]
        for op in all_operations
        if not any(p["in"] == "path" for p in op.get("parameters", []))
    }
    frontier = list(reached)
    while frontier:
        for target in link_targets(openapi, by_id[frontier.pop()]):
            assert target in by_id, target
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(by_id)


async def test_declared_bounds_are_this_apps_settings(openapi: dict[str, Any]) -> None:
    from service.main import create_app

    def limit_maxima(document: dict[str, Any]) -> set[int]:
        return {
            p["schema"]["maximum"]
            for op in operations(document).values()
            for p in op.get("parameters", [])
            if p["name"] == "limit"
        }

    settings = api_settings()
    assert limit_maxima(openapi) == {settings.page_size_max}
    for key, operation in operations(openapi).items():
        for parameter in operation.get("parameters", []):
            assert "null" not in json.dumps(parameter["schema"]), (key, parameter["name"])
    schemas = openapi["components"]["schemas"]
    options = schemas["HyperparametersCreate"]["properties"]
    assert options["hidden_layers"]["maxItems"] == settings.max_hidden_layers
    assert options["hidden_layers"]["items"]["maximum"] == settings.max_units_per_layer
    assert options["epochs"]["maximum"] == settings.max_epochs
    assert "maxItems" not in schemas["Hyperparameters"]["properties"]["hidden_layers"]
    grid = schemas["SweepCreate"]["properties"]["grid"]
    assert set(grid["properties"]) == set(options)
    assert grid["additionalProperties"] is False
    assert {g["maxItems"] for g in grid["properties"].values()} == {
        settings.max_sweep_configurations
    }
    assert schemas["PredictRequest"]["properties"]["points"]["maxItems"] == (
        settings.predict_max_points
    )
    other = create_app(api_settings(page_size_max=7, max_epochs=99)).openapi()
    assert limit_maxima(other) == {7}
    assert other["components"]["schemas"]["HyperparametersCreate"]["properties"]["epochs"][
        "maximum"
    ] == (99)


def dataset_branches(document: dict[str, Any]) -> list[dict[str, Any]]:
    branches: list[dict[str, Any]] = document["components"]["schemas"]["DatasetCreate"]["oneOf"]
    return branches


async def test_dataset_branches_cover_each_kind_once(openapi: dict[str, Any]) -> None:
    from engine.datasets import DESCRIPTIONS

    kinds = [k for b in dataset_branches(openapi) for k in b["properties"]["kind"]["enum"]]
    assert sorted(kinds) == sorted(DESCRIPTIONS)
    for branch in dataset_branches(openapi):
        assert branch["additionalProperties"] is False
        for name, field in branch["properties"].items():
            assert name == "kind" or field.get("description"), (branch["title"], name)


# Fields of DatasetCreate with a value the service takes for the kinds they apply to.
FIELD_VALUES: dict[str, Any] = {
    "name": "n",
    "seed": 3,
    "test_fraction": 0.25,
    "standardize": False,
    "n_samples": 40,
    "noise": 0.1,
    "n_classes": 3,
    "points": [[float(i), float(i % 3)] for i in range(12)],
    "labels": [i % 2 for i in range(12)],
    "feature_names": ["a", "b"],
    "n_features": 6,
    "targets": [float(i) / 2 for i in range(12)],
    "target_names": ["t"],
    "task": "classification",
}
# A branch with `oneOf` (custom: labels or targets) takes one alternative at a time: with it, the
# fields of the other task are left out, and refused when given.
ALTERNATIVES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "labels": ({"task": "classification"}, {"targets", "target_names"}),
    "targets": ({"task": "regression"}, {"labels"}),
}


async def test_dataset_branches_say_exactly_which_fields_the_service_takes(
    client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    """Each branch's fields, all given at once (one `oneOf` alternative at a time), are
    accepted; a field it leaves out is a 422 naming it, and so is a missing required field."""
    cases = [
        (branch, kind, chosen, other_task)
        for branch in dataset_branches(openapi)
        for kind in branch["properties"]["kind"]["enum"]
        for chosen, other_task in (
            [ALTERNATIVES[alt["required"][0]] for alt in branch["oneOf"]]
            if "oneOf" in branch
            else [({}, set())]
        )
    ]
    for branch, kind, chosen, other_task in cases:
        listed = set(branch["properties"]) - {"kind"}
        assert listed <= set(FIELD_VALUES)
        given = listed - other_task
        body = {"kind": kind, **{name: FIELD_VALUES[name] for name in given}, **chosen}
        response = await client.post("/v1/datasets", json=body)
        assert response.status_code == 201, (kind, response.text)
        await client.delete(response.headers["location"])
        # the fields this body may not carry, then each required one left out
        for extra in (set(FIELD_VALUES) - listed) | other_task:
            refused = await client.post("/v1/datasets", json={**body, extra: FIELD_VALUES[extra]})
            problem = assert_problem(refused, 422, "invalid-request")
            assert problem["errors"][0]["loc"] == ["body", extra], (kind, extra)
        for required in set(branch["required"]) - {"kind"}:
            missing = {k: v for k, v in body.items() if k != required}
            problem = assert_problem(
                await client.post("/v1/datasets", json=missing), 422, "invalid-request"
            )
            assert problem["errors"][0]["loc"] == ["body", required], (kind, required)
