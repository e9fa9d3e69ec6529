"""Operations endpoints, error handling shared by every route, offline docs, the OpenAPI
document."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api_support import api_settings, assert_problem

pytestmark = pytest.mark.anyio

# Every status code each route can answer (besides 405 and 500, which any route can). Every
# /v1 route can also answer 401 (a key is needed when the service has keys) and 429 (the rate
# limit); ALL_V1 adds them.
ALL_V1 = {"401", "429"}
PICTURE = {"200", "304", "404", "422", "503"}
DECLARED: dict[tuple[str, str], set[str]] = {
    ("post", "/v1/datasets"): {"201", "400", "413", "415", "422", "507"},
    ("get", "/v1/datasets"): {"200", "422"},
    ("get", "/v1/datasets/{dataset_id}"): {"200", "404", "422"},
    ("delete", "/v1/datasets/{dataset_id}"): {"204", "404", "409", "507"},
    ("get", "/v1/datasets/{dataset_id}/image.png"): PICTURE,
    ("post", "/v1/jobs"): {"202", "400", "409", "413", "415", "422", "429", "503"},
    ("get", "/v1/jobs"): {"200", "422"},
    ("get", "/v1/jobs/{job_id}"): {"200", "404"},
    ("get", "/v1/jobs/{job_id}/history"): {"200", "404", "422"},
    ("get", "/v1/jobs/{job_id}/events"): {"200", "404", "422"},
    ("post", "/v1/jobs/{job_id}/cancel"): {"202", "404", "409"},
    ("get", "/v1/models"): {"200", "422"},
    ("post", "/v1/models/import"): {"201", "413", "415", "422", "507"},
    ("get", "/v1/models/{model_id}"): {"200", "404"},
    ("delete", "/v1/models/{model_id}"): {"204", "404", "507"},
    ("post", "/v1/models/{model_id}/predict"): {"200", "400", "404", "413", "415", "422", "503"},
    ("get", "/v1/models/{model_id}/decision-boundary.png"): PICTURE,
    ("get", "/v1/models/{model_id}/loss-curve.png"): PICTURE | {"409"},
    ("get", "/v1/models/{model_id}/export"): {"200", "404"},
    ("get", "/v1/info"): {"200"},
}
DECLARED = {key: codes | ALL_V1 for key, codes in DECLARED.items()} | {
    ("get", "/healthz"): {"200"},
    ("get", "/readyz"): {"200", "503"},
    ("get", "/metrics"): {"200", "401"},
}


def success_media_type(path: str) -> str:
    if path.endswith(".png"):
        return "image/png"
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
    assert (await client.get("/readyz")).json() == {"status": "ok"}


async def test_info_reports_workers_and_limits(client: httpx.AsyncClient) -> None:
    info = (await client.get("/v1/info")).json()
    assert info["executor_backend"] == "LocalProcessExecutor"
    assert info["workers"] == 2
    assert len(info["worker_pids"]) == 2
    assert info["ready"] is True
    settings = api_settings()
    assert info["limits"]["max_hidden_layers"] == settings.max_hidden_layers
    assert info["limits"]["predict_max_points"] == settings.predict_max_points
    assert info["limits"]["max_work"] == settings.max_work


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/datasets/ds_nothing")
    await client.get("/v1/nowhere")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'scratchnet_http_requests_total{method="GET",route="/v1/datasets/{dataset_id}",'
        'status="404"}' in text
    )
    assert 'route="unmatched"' in text
    assert "ds_nothing" not in text
    assert "scratchnet_http_request_duration_seconds_bucket{" in text
    for name in (
        "scratchnet_jobs{status=",
        "scratchnet_epochs_trained_total",
        "scratchnet_queue_depth",
        "scratchnet_running_jobs",
        "scratchnet_workers 2.0",
        "scratchnet_event_streams",
    ):
        assert name in text


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
    assert {key: declared.get(key) for key in DECLARED} == DECLARED


async def test_openapi_errors_are_problem_json_and_successes_have_their_media_type(
    openapi: dict[str, Any],
) -> None:
    for key, operation in operations(openapi).items():
        for code, response in operation["responses"].items():
            content = response.get("content", {})
            if int(code) >= 400 and key[1].startswith("/v2"):  # the protocol's own shape
                error = {"$ref": "#/components/schemas/InferenceError"}
                assert content == {"application/json": {"schema": error}}, key
            elif int(code) >= 400:
                assert content == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, key
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
    assert schemas["JobCreate"]["properties"]["hyperparameters"]["$ref"].endswith(
        "/Hyperparameters"
    )
    own = own_schemas() - {"Request"}  # Request: the base of request bodies, never a component
    assert own <= set(schemas)
    for name in own:
        schema = schemas[name]
        assert schema.get("description"), name
        for field, definition in schema.get("properties", {}).items():
            assert definition.get("description") or definition.get("$ref"), (name, field)
    for name in ("DatasetCreate", "JobCreate", "PredictRequest", "Hyperparameters", "Problem"):
        assert schemas[name].get("examples"), name
    for key in DECLARED:
        assert operations(openapi)[key].get("summary"), key


async def test_openapi_declares_location_and_retry_after_headers(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    for path, method, code in (
        ("/v1/datasets", "post", "201"),
        ("/v1/models/import", "post", "201"),
        ("/v1/jobs", "post", "202"),
    ):
        assert "Location" in paths[path][method]["responses"][code]["headers"], path
    for code in ("429", "503"):
        assert "Retry-After" in paths["/v1/jobs"]["post"]["responses"][code]["headers"]
    assert "ProgressEvent" in openapi["components"]["schemas"]
