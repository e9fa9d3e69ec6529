"""The client's typed responses have exactly the fields and field types of the schemas the
service publishes in /openapi.json (descriptions, titles, examples and defaults aside), so the
two cannot drift apart; the event payloads the document only names are compared with the
service's own models."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import scratchnet.types
import service
from tests.api_support import LiveServer

pytestmark = pytest.mark.e2e

REF_TEMPLATE = "#/components/schemas/{model}"
WORDS = {"title", "description", "examples", "default"}  # for people, or the client's leniency
# Named in the service's event-stream descriptions, not published as components.
UNPUBLISHED = ("SweepPointEvent", "SweepResultEvent")


def service_model(name: str) -> type[BaseModel]:
    """The service's own pydantic model of this name, from whichever of its schema modules
    defines it (found by walking the package, so moving a module does not break the test)."""
    for module in pkgutil.walk_packages(service.__path__, "service."):
        if module.name.endswith("schemas"):
            found = getattr(importlib.import_module(module.name), name, None)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
    raise LookupError(f"the service defines no model {name}")


def shape(schema: Any, *, properties: bool = False) -> Any:
    """A JSON schema without its words for people; `required` as a sorted list."""
    if isinstance(schema, dict):
        shaped = {
            key: shape(value, properties=key == "properties")
            for key, value in schema.items()
            if properties or key not in WORDS
        }
        if not properties and "required" in shaped:
            shaped["required"] = sorted(shaped["required"])
        return shaped
    if isinstance(schema, list):
        return [shape(item) for item in schema]
    return schema


def client_models() -> list[type[BaseModel]]:
    models = [getattr(scratchnet.types, name) for name in scratchnet.types.__all__]
    return [m for m in models if isinstance(m, type) and issubclass(m, BaseModel)]


def schemas_of(models: list[type[BaseModel]]) -> dict[str, Any]:
    _, document = models_json_schema(
        [(model, "serialization") for model in models], ref_template=REF_TEMPLATE
    )
    definitions: dict[str, Any] = document["$defs"]
    return definitions


@pytest.fixture(scope="module")
def published(live_server: LiveServer) -> dict[str, Any]:
    response = httpx.get(f"{live_server.url}/openapi.json")
    assert response.status_code == 200
    components: dict[str, Any] = response.json()["components"]["schemas"]
    return components


def protocol_schemas() -> set[str]:
    """The Open Inference Protocol's bodies: its own clients speak it, not scratchnet's."""
    from service.api import inference_schemas

    return {
        value.__name__
        for value in vars(inference_schemas).values()
        if isinstance(value, type) and value.__module__ == inference_schemas.__name__
    }


def test_every_response_schema_has_a_client_model(published: dict[str, Any]) -> None:
    requests = {
        "DatasetCreate",
        "JobCreate",
        "PredictRequest",
        "SweepCreate",
        "HyperparametersCreate",
    }
    mine = set(schemas_of(client_models()))
    assert set(published) - requests - protocol_schemas() <= mine
    assert mine - set(published) == set(UNPUBLISHED)


@pytest.mark.parametrize("name", sorted(schemas_of(client_models())))
def test_client_model_matches_the_service_schema(name: str, published: dict[str, Any]) -> None:
    mine = schemas_of(client_models())[name]
    theirs = schemas_of([service_model(name)])[name] if name in UNPUBLISHED else published[name]
    mine_fields = shape(mine).get("properties", {})
    their_fields = shape(theirs).get("properties", {})
    assert mine_fields.keys() == their_fields.keys()
    for field, schema in mine_fields.items():
        assert schema == their_fields[field], f"{name}.{field}"
    assert shape(mine) == shape(theirs)


def test_the_comparison_sees_a_changed_field() -> None:
    """The normalisation keeps what matters: a field's type and whether it is required."""

    class Narrow(BaseModel):
        status: int

    class Wide(BaseModel):
        status: int | None

    class Defaulted(BaseModel):
        status: int = 0

    narrow, wide, defaulted = (schemas_of([m])[m.__name__] for m in (Narrow, Wide, Defaulted))
    assert shape(narrow) != shape(wide)
    assert shape(narrow) != shape(defaulted)  # required differs
    assert shape(narrow)["properties"] == shape(defaulted)["properties"]
