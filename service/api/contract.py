"""The exact contract: what FastAPI's OpenAPI document leaves out, added to it per app.

- **This deployment's limits as schema bounds**, from the app's Settings: the list `limit`'s
  maximum (page_size_max); the training options a job or sweep may ask for (a request-side
  copy of Hyperparameters, `HyperparametersCreate`, with max_hidden_layers, max_units_per_layer,
  max_epochs, and batch_size <= max_samples); a sweep's grid keys, values and lengths
  (max_sweep_configurations); dataset sizes (max_samples) and prediction sizes
  (predict_max_points). Responses keep the engine's own Hyperparameters: a stored job may
  predate a lower limit.
- **Optional query and header parameters without a null branch**: they cannot carry null.
- **A problem+json example for every error status** an operation declares, built from the
  status's error class in service.errors (one definition of each type and title).
- **OpenAPI links**: from every response carrying a resource id (the `id` of what an operation
  creates or reads, and the `*_id` fields naming other resources) to every operation taking
  that id in its path or its JSON body, so stateful clients and tests reach every operation.

What JSON Schema cannot say stays in the descriptions and the 422s: an id that names nothing,
one label per point, rows of one length, the work limit (points x parameters x epochs), a
batch no larger than this dataset's training split, the product of a sweep's grid lengths.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from service import errors
from service.api.problems import PROBLEM_MEDIA_TYPE
from service.errors import PROBLEM_BASE
from service.settings import Settings

Document = dict[str, Any]
Operation = dict[str, Any]
SCHEMAS = "#/components/schemas/"


def _error_classes() -> dict[int, type[errors.ServiceError]]:
    """status -> the first error class answering it, walking service.errors' tree breadth
    first (so InvalidRequest, not LimitExceeded, for 422)."""
    found: dict[int, type[errors.ServiceError]] = {}
    level = errors.ServiceError.__subclasses__()
    while level:
        for error in level:
            found.setdefault(error.status, error)
        level = [child for error in level for child in error.__subclasses__()]
    return found


# status -> the error class answering it (405 and 500 are declared by no operation).
ERROR_CLASSES = _error_classes()
# An example detail per status; a status missing here takes its response's description.
EXAMPLE_DETAILS: dict[int, str] = {
    400: "the body is not valid JSON: EOF while parsing an object at character 11",
    404: "{noun} {example_id} does not exist",  # 422: from the operation (_invalid_value)
    409: "the resource's state forbids this request; the detail says which state and why",
    413: "the request body is larger than max_request_bytes = {settings.max_request_bytes}",
    415: "Content-Type 'text/plain' is not accepted; send the body as application/json",
    429: "{settings.max_queued_jobs} jobs are queued, the most max_queued_jobs allows; retry "
    "after Retry-After seconds",
    503: "the training workers are not all up",
    507: "storing this would pass max_stored_bytes; delete datasets or models first",
}
EXAMPLE_IDS = {
    "dataset_id": "ds_5f0c2a9e81d34b7a",
    "job_id": "job_91c3d0a4e5f67b28",
    "model_id": "mdl_2b7e41f09ac35d86",
    "sweep_id": "swp_0c8e1f5a9b2d4e67",
}


def complete(document: Document, settings: Settings) -> None:
    """Add limits, error examples and links to `document` in place (see the module)."""
    _declare_limits(document["components"]["schemas"], settings)
    for path, _method, operation in operations(document):
        _no_null_parameters(operation)
        if any(
            p["name"] == "limit" and p["in"] == "query" for p in operation.get("parameters", [])
        ):
            _limit_page_size(operation, settings)
        _add_error_examples(path, operation, settings)
    _add_links(document)


def operations(document: Document) -> Iterator[tuple[str, str, Operation]]:
    """(path, method, operation) for every operation of the document."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


# --- limits -------------------------------------------------------------------------------------


def _integer(schema: dict[str, Any]) -> dict[str, Any]:
    """The integer schema of `int` or `int | None` (the anyOf branch that is not null)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "integer":
            return branch
    raise ValueError(f"no integer in {schema}")


def _no_null_parameters(operation: Operation) -> None:
    """A query or header parameter cannot carry JSON null (`?limit=null` is the string
    "null", a 422): an optional one is left out instead, so its schema drops FastAPI's null
    branch and null default."""
    for parameter in operation.get("parameters", []):
        schema = parameter["schema"]
        kept = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
        if parameter["in"] != "path" and len(kept) == 1:
            rest = {key: value for key, value in schema.items() if key != "anyOf"}
            if rest.get("default", 0) is None:
                del rest["default"]
            parameter["schema"] = {**kept[0], **rest}


def _limit_page_size(operation: Operation, settings: Settings) -> None:
    for parameter in operation["parameters"]:
        if parameter["name"] == "limit" and parameter["in"] == "query":
            _integer(parameter["schema"])["maximum"] = settings.page_size_max
            parameter["description"] = (
                f"Items per page: at most page_size_max ({settings.page_size_max}); default "
                f"page_size_default ({settings.page_size_default})."
            )


def _declare_limits(schemas: dict[str, Any], settings: Settings) -> None:
    options = copy.deepcopy(schemas["Hyperparameters"])
    options["description"] = (
        "Hyperparameters as a request may give them: the engine's bounds and this "
        "deployment's limits (see /v1/info)."
    )
    fields = options["properties"]
    layers = fields["hidden_layers"]
    layers["maxItems"] = settings.max_hidden_layers
    layers["items"]["maximum"] = min(layers["items"]["maximum"], settings.max_units_per_layer)
    fields["epochs"]["maximum"] = min(fields["epochs"]["maximum"], settings.max_epochs)
    batch = _integer(fields["batch_size"])
    batch["maximum"] = min(batch["maximum"], settings.max_samples)
    schemas["HyperparametersCreate"] = options
    reference = {"$ref": SCHEMAS + "HyperparametersCreate"}
    schemas["JobCreate"]["properties"]["hyperparameters"].update(reference)
    sweep = schemas["SweepCreate"]["properties"]
    sweep["base"].update(reference)
    sweep["grid"] = {
        "type": "object",
        "description": sweep["grid"]["description"],
        "examples": sweep["grid"]["examples"],
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            name: {
                "type": "array",
                "minItems": 1,
                "maxItems": settings.max_sweep_configurations,
                "uniqueItems": True,
                "items": {k: v for k, v in field.items() if k not in ("default", "title")},
                "description": f"Values of {name} to try.",
            }
            for name, field in fields.items()
        },
    }
    for branch in schemas["DatasetCreate"]["oneOf"]:
        properties = branch["properties"]
        if "n_samples" in properties:
            _integer(properties["n_samples"])["maximum"] = settings.max_samples
        if "points" in properties:
            properties["points"]["maxItems"] = settings.max_samples
    schemas["PredictRequest"]["properties"]["points"]["maxItems"] = settings.predict_max_points


# --- error examples -----------------------------------------------------------------------------


def _add_error_examples(path: str, operation: Operation, settings: Settings) -> None:
    noun, example_id = "resource", "x"
    for name, value in EXAMPLE_IDS.items():
        if "{" + name + "}" in path:
            noun, example_id = name.removesuffix("_id"), value
    for code, response in operation["responses"].items():
        if not (code.isdigit() and int(code) >= 400):
            continue
        if PROBLEM_MEDIA_TYPE not in response.get("content", {}):  # /v2: the protocol's errors
            json_content = response.get("content", {}).get("application/json")
            if json_content is not None:
                json_content["example"] = {"error": response["description"]}
            continue
        error = ERROR_CLASSES[int(code)]
        example: dict[str, Any] = {
            "type": PROBLEM_BASE + error.slug,
            "title": error.title,
            "status": error.status,
            "detail": EXAMPLE_DETAILS[error.status].format(
                noun=noun, example_id=example_id, settings=settings
            )
            if error.status in EXAMPLE_DETAILS
            else response["description"],
        }
        if error.status == 422:
            loc, message, kind = _invalid_value(operation)
            example |= {
                "type": PROBLEM_BASE + "validation-error",
                "detail": f"{loc[-1]}: {message}",
                "errors": [{"loc": loc, "msg": message, "type": kind}],
            }
        response["content"][PROBLEM_MEDIA_TYPE]["example"] = example


def _invalid_value(operation: Operation) -> tuple[list[str | int], str, str]:
    """A value this operation refuses with 422: (loc, msg, type) as pydantic words them."""
    for parameter in operation.get("parameters", []):
        schema = parameter["schema"]
        bounded = next((s for s in schema.get("anyOf", [schema]) if "minimum" in s), None)
        if bounded is not None:
            minimum = bounded["minimum"]
            message = f"Input should be greater than or equal to {minimum}"
            return [parameter["in"], parameter["name"]], message, "greater_than_equal"
    if "requestBody" in operation:
        return ["body"], "Field required", "missing"
    where = (
        operation["parameters"][0] if operation.get("parameters") else {"in": "path", "name": ""}
    )
    return [where["in"], where["name"]], "the value names nothing this route can use", "invalid"


# --- links --------------------------------------------------------------------------------------


def _id_parameter(document: Document, path: str) -> str | None:
    """The path parameter naming the resources of the collection `path` belongs to:
    /v1/jobs and /v1/jobs/{job_id}/cancel -> job_id; /v1/models/import -> model_id."""
    parts = path.split("/")
    for end in range(len(parts), 1, -1):
        collection = "/".join(parts[:end])
        for other in document["paths"]:
            rest = other.removeprefix(collection + "/")
            if other != rest and rest.startswith("{") and rest.endswith("}"):
                return rest[1:-1]
    return None


def _body_properties(document: Document, operation: Operation) -> dict[str, Any]:
    content = operation.get("requestBody", {}).get("content", {})
    reference = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    if not reference.startswith(SCHEMAS):
        return {}
    properties: dict[str, Any] = document["components"]["schemas"][
        reference.removeprefix(SCHEMAS)
    ].get("properties", {})
    return properties


def _takers(document: Document, name: str) -> Iterator[tuple[str, Operation, str, str]]:
    """(operationId, operation, where, parameter) of every operation taking the id `name`:
    where is `path` or `body`. The Open Inference Protocol's `{name}` takes a model id."""
    for path, _method, operation in operations(document):
        parameters = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
        if name in parameters:
            yield operation["operationId"], operation, "path", name
        elif name == "model_id" and path.startswith("/v2/models/") and "name" in parameters:
            yield operation["operationId"], operation, "path", "name"
        elif name in _body_properties(document, operation):
            yield operation["operationId"], operation, "body", name


def _add_links(document: Document) -> None:
    schemas = document["components"]["schemas"]
    id_names = {
        p["name"]
        for _path, _method, operation in operations(document)
        for p in operation.get("parameters", [])
        if p["in"] == "path" and p["name"].endswith("_id")
    }
    for path, _method, source in operations(document):
        own = _id_parameter(document, path)
        for code, response in source["responses"].items():
            if not code.startswith("2"):
                continue
            reference = (
                response.get("content", {})
                .get("application/json", {})
                .get("schema", {})
                .get("$ref")
            )
            if reference is None:
                continue
            fields = schemas[reference.removeprefix(SCHEMAS)].get("properties", {})
            names = {"id": own} if "id" in fields and own is not None else {}
            names |= {field: field for field in fields if field in id_names}
            links: dict[str, Any] = {}
            for field, name in names.items():
                expression = f"$response.body#/{field}"
                for operation_id, target, where, parameter in _takers(document, name):
                    if target is source:
                        continue
                    link: dict[str, Any] = {
                        "operationId": operation_id,
                        "description": f"`{field}` of this response is the {name} of "
                        f"{target['summary']!r}.",
                    }
                    if where == "path":
                        link["parameters"] = {f"path.{parameter}": expression}
                    else:
                        link["requestBody"] = {name: expression}
                    links[operation_id] = link
            if links:
                response["links"] = links
