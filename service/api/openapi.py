"""The OpenAPI document (problem+json errors, 415s, hand-read bodies) and offline docs pages."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from service.api import contract, problems, ratelimit
from service.api.auth import authenticate_docs
from service.api.inference_schemas import InferenceRequest
from service.api.schemas import DatasetCreate, PredictRequest, ProgressEvent

DOCS_STATIC = "/static/docs"
DOCS_PATHS = frozenset({"/metrics"})  # behind SCRATCHNET_PROTECT_DOCS, as /docs and /redoc


def install_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from assets bundled in a package: no CDN, works offline."""
    static = files("fastapi_offline") / "static"
    app.mount(DOCS_STATIC, StaticFiles(directory=str(static)), name="docs-static")

    guard = [Depends(authenticate_docs)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="scratchnet API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="scratchnet API",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, then: errors as application/problem+json, a 415 wherever a JSON
    body is taken (service.api.problems answers one for any other Content-Type); the bodies
    routes read by hand (DatasetCreate: two content types; PredictRequest: parsed off the event
    loop when large) and the event-stream payload (ProgressEvent) added to the components."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for body in (DatasetCreate, PredictRequest, ProgressEvent):
        schemas[body.__name__] = body.model_json_schema(ref_template="#/components/schemas/{model}")
    inference = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(inference.pop("$defs"), InferenceRequest=inference)  # the /v2 infer body
    problem = {"$ref": "#/components/schemas/Problem"}
    state = app.state.scratchnet
    for path, path_item in document["paths"].items():
        for operation in path_item.values():
            # this deployment's contract: a key is declared only where one is asked for
            guarded_docs = state.settings.protect_docs and state.keys.enabled
            if not state.keys.enabled or (path in DOCS_PATHS and not guarded_docs):
                operation.pop("security", None)
            if problems.protocol_path(path):  # /v2 declares its errors in the protocol's shape
                operation["responses"].pop("422", None)  # FastAPI's guess: a name cannot fail
                if not state.keys.enabled:
                    operation["responses"].pop("401", None)
                continue
            responses = operation.get("responses", {})
            added = {
                401: bool(operation.get("security")),  # service.api.auth
                429: path not in ratelimit.EXEMPT,  # service.api.ratelimit
            }
            for status, applies in added.items():
                if applies and str(status) not in responses:
                    entry = problems.problem_responses(status)[status]
                    responses[str(status)] = {k: v for k, v in entry.items() if k != "model"}
            operation["responses"] = responses = dict(sorted(responses.items()))
            takes_json = "application/json" in operation.get("requestBody", {}).get("content", {})
            if takes_json and "415" not in responses:  # errors: any other Content-Type -> 415
                responses["415"] = {"description": "The body is not sent as application/json."}
                operation["responses"] = dict(sorted(responses.items()))
                responses = operation["responses"]
            automatic = responses.get("422", {}).get("content", {}).get("application/json", {})
            if automatic.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]  # FastAPI's guess; this route's parameters cannot fail
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = {problems.PROBLEM_MEDIA_TYPE: {"schema": problem}}
                elif code in ("204", "304"):
                    response.pop("content", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if not state.keys.enabled:
        document["components"].pop("securitySchemes", None)
    contract.complete(document, app.state.scratchnet.settings)
    app.openapi_schema = document
    return document
