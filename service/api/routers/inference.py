"""/v2: the Open Inference Protocol (KServe v2 REST), so KServe, Triton and Seldon clients call
scratchnet models with no scratchnet code.

A model's `{name}` is its id or one of the caller's aliases; keys and ownership are those of
/v1 (`service.api.auth`), except the health probes, which need no key (as /healthz). Its
tensors:

    input   points          FP64 (or FP32)   [-1, n_features]   raw rows, the dataset's units
    output  probabilities   FP64             [-1, n_classes]    in the order of the classes
    output  class           INT64 | BYTES    [-1]               the likeliest class of each row
    output  values          FP64             [-1, n_targets]    regression models' only output:
                                                                predictions, the targets' units

`data` is row-major, flat or nested. With the binary tensor extension (Triton's clients use it
by default) the JSON is the first `Inference-Header-Content-Length` bytes of the body and an
input's `binary_data_size` bytes follow it, little-endian; answers are always JSON, which those
clients read as well. Errors are `{"error": "..."}` (`service.api.problems`): 400 for a bad
request, 404 for an unknown model; predict_max_points and request_timeout_seconds hold as for
POST /v1/models/{model_id}/predict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from engine.model import Model
from service.api.auth import CallerDep
from service.api.deps import StateDep
from service.api.inference_schemas import (
    InferenceError,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    RequestInput,
    ServerLive,
    ServerMetadata,
    ServerReady,
    TensorMetadata,
)
from service.api.predictions import (
    accept_json,
    check_point_count,
    classified,
    parsed,
    predicted,
    probabilities,
    require_model,
)
from service.api.problems import parse_json_body
from service.api.routers.operations import package_version
from service.api.schemas import MODEL_REF_DESCRIPTION
from service.errors import InvalidRequest, ValidationIssue
from service.state.records import ModelRecord

router = APIRouter(prefix="/v2", tags=["inference"])
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

PLATFORM = "scratchnet"
EXTENSIONS = ["binary_tensor_data"]
INPUT = "points"
PROBABILITIES = "probabilities"
CLASS = "class"
VALUES = "values"
OUTPUTS = (PROBABILITIES, CLASS)  # a classifier's
REGRESSION_OUTPUTS = (VALUES,)
# Accepted input datatypes and their little-endian element types for binary tensor data.
INPUT_DATATYPES: dict[str, np.dtype[np.floating]] = {
    "FP64": np.dtype("<f8"),
    "FP32": np.dtype("<f4"),
}
BINARY_HEADER = "inference-header-content-length"

ModelName = Annotated[str, Path(description=MODEL_REF_DESCRIPTION)]

_ERROR_DESCRIPTIONS = {
    400: "The request does not fit the protocol or the model (shape, datatype, names, "
    "predict_max_points); `error` says which.",
    401: "No API key, or one this service does not know (when it has keys).",
    404: "No such model (or one of another key).",
    413: "The request body is larger than max_request_bytes.",
    415: "Unsupported Content-Type.",
    429: "This key sent more requests than its rate limit; retry after Retry-After seconds.",
    503: "The inference took longer than request_timeout_seconds; retry with fewer rows.",
}


def protocol_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries: the protocol's error body for each status."""
    return {
        status: {"model": InferenceError, "description": _ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def _get(
    path: str, model: type[BaseModel], summary: str, *statuses: int
) -> Callable[[Endpoint], Endpoint]:
    """Declare a GET route answering `model`, or the protocol's error body for `statuses`."""
    return router.get(
        path, response_model=model, summary=summary, responses=protocol_errors(*statuses)
    )


def _class_datatype(record: ModelRecord) -> str:
    return "BYTES" if any(isinstance(label, str) for label in record.classes) else "INT64"


@_get("", ServerMetadata, "Server metadata", 401, 429)
async def server_metadata(caller: CallerDep) -> ServerMetadata:
    """The server's name, version and the protocol extensions it implements."""
    return ServerMetadata(name=PLATFORM, version=package_version(), extensions=EXTENSIONS)


@router.get("/health/live", response_model=ServerLive, summary="Server liveness")
async def server_live() -> ServerLive:
    """200 while the process answers (no key needed, as for /healthz)."""
    return ServerLive()


@router.get("/health/ready", response_model=ServerReady, summary="Server readiness")
async def server_ready() -> ServerReady:
    """200 once the service answers: inference runs in the API process and needs no training
    worker (no key needed, as for /readyz)."""
    return ServerReady(ready=True)


@_get("/models/{name}", ModelMetadata, "Model metadata", 401, 404, 429)
async def model_metadata(state: StateDep, caller: CallerDep, name: ModelName) -> ModelMetadata:
    """The model's input tensor (`points`, [-1, n_features], FP64 or FP32) and its outputs
    (`probabilities`, [-1, n_classes], FP64; `class`, [-1], INT64 or BYTES for string labels;
    a regression model's: `values`, [-1, n_targets], FP64)."""
    record = require_model(state, name, caller)
    outputs = [
        TensorMetadata(name=PROBABILITIES, datatype="FP64", shape=[-1, len(record.classes)]),
        TensorMetadata(name=CLASS, datatype=_class_datatype(record), shape=[-1]),
    ]
    if record.task == "regression":
        shape = [-1, len(record.target_names)]
        outputs = [TensorMetadata(name=VALUES, datatype="FP64", shape=shape)]
    return ModelMetadata(
        name=name,
        platform=PLATFORM,
        inputs=[TensorMetadata(name=INPUT, datatype="FP64", shape=[-1, record.n_features])],
        outputs=outputs,
    )


@_get("/models/{name}/ready", ModelReady, "Model readiness", 401, 404, 429)
async def model_ready(state: StateDep, caller: CallerDep, name: ModelName) -> ModelReady:
    """200 when the model exists for this key (a stored model is always ready); 404 otherwise."""
    require_model(state, name, caller)
    return ModelReady(name=name, ready=True)


def _bad(message: str) -> InvalidRequest:
    """A request the protocol or the model cannot take (answered as the protocol's 400)."""
    issue = ValidationIssue(loc=["body"], msg=message, type="invalid_inference_request")
    return InvalidRequest(message, errors=[issue])


def _elements(data: Any) -> list[Any]:
    """Row-major elements of flat or nested `data`."""
    if not isinstance(data, list):
        raise _bad(f"input {INPUT!r}: data must be a list of numbers, got {type(data).__name__}")
    flat: list[Any] = []
    pending = [iter(data)]
    while pending:
        for item in pending[-1]:
            if isinstance(item, list):
                pending.append(iter(item))
                break
            flat.append(item)
        else:
            pending.pop()
    return flat


def _points(given: RequestInput, record: ModelRecord, binary: bytes, offset: int) -> np.ndarray:
    """The input as float64 rows (n_points, n_features), checked against the model."""
    if given.name != INPUT:
        raise _bad(f"unknown input {given.name!r}; this model's input is {INPUT!r}")
    dtype = INPUT_DATATYPES.get(given.datatype)
    if dtype is None:
        raise _bad(f"input {INPUT!r} has datatype {given.datatype!r}; send FP64 (or FP32) numbers")
    n_features = record.n_features
    if len(given.shape) != 2 or given.shape[1] != n_features:
        raise _bad(
            f"input {INPUT!r} has shape {given.shape}; this model takes [n, {n_features}] "
            f"(n points of n_features = {n_features} values)"
        )
    count = given.shape[0] * n_features
    size = (given.parameters or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
            raise _bad(
                f"input {INPUT!r}: binary_data_size {size!r} is not the {count * dtype.itemsize}"
                f" bytes of {count} {given.datatype} values"
            )
        if offset + size > len(binary):
            raise _bad(f"input {INPUT!r}: the body ends before its {size} bytes of binary data")
        values = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
    else:
        elements = _elements(given.data)
        if len(elements) != count:
            raise _bad(
                f"input {INPUT!r} has {len(elements)} values but shape {given.shape} needs {count}"
            )
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in elements):
            raise _bad(f"input {INPUT!r}: every value must be a number ({given.datatype})")
        values = np.array(elements, dtype=dtype)
    points = values.astype(np.float64).reshape(given.shape[0], n_features)
    if not np.isfinite(points).all():
        raise _bad(f"input {INPUT!r}: every value must be a finite number")
    return points


def _read(raw: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The request and the binary data after it (b'' without the binary extension)."""
    if header_length is None:
        return parse_json_body(InferenceRequest, raw), b""
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise _bad(
            f"Inference-Header-Content-Length {header_length!r} is not a byte count within "
            f"the body's {len(raw)} bytes"
        )
    split = int(header_length)
    return parse_json_body(InferenceRequest, raw[:split]), raw[split:]


def _answer(
    model: Model, points: np.ndarray, outputs: list[str], name: str, request_id: str | None
) -> bytes:
    def matrix(name: str, values: np.ndarray) -> dict[str, Any]:
        shape = list(values.shape)
        return {"name": name, "datatype": "FP64", "shape": shape, "data": values.ravel().tolist()}

    tensors: dict[str, dict[str, Any]]
    if model.regression:
        tensors = {VALUES: matrix(VALUES, probabilities(model, points))}  # (n_points, n_targets)
    else:
        result, labels = classified(model, points)  # (n_points, n_classes), (n_points,)
        tensors = {
            PROBABILITIES: matrix(PROBABILITIES, result),
            CLASS: {
                "name": CLASS,
                "datatype": "BYTES" if any(isinstance(c, str) for c in model.classes) else "INT64",
                "shape": [len(points)],
                "data": labels,
            },
        }
    body: dict[str, Any] = {"model_name": name}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = [tensors[output] for output in outputs]
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


@router.post(
    "/models/{name}/infer",
    response_model=InferenceResponse,
    summary="Infer",
    responses=protocol_errors(400, 401, 404, 413, 415, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "The binary tensor extension: the JSON request (its length "
                    "in Inference-Header-Content-Length), then the tensors' bytes.",
                },
            },
        }
    },
)
async def infer(request: Request, state: StateDep, caller: CallerDep, name: ModelName) -> Response:
    """Class probabilities and classes of the `points` rows (the model applies its own
    standardization). `outputs`, when given, chooses the outputs and their order; `id` is
    echoed. At most predict_max_points rows."""
    record = require_model(state, name, caller)
    accept_json(request, ("application/octet-stream",), "the request")
    header_length = request.headers.get(BINARY_HEADER)
    body, binary = await parsed(lambda raw: _read(raw, header_length), await request.body())
    if len(body.inputs) != 1:
        raise _bad(f"this model takes one input, {INPUT!r}; got {len(body.inputs)}")
    given = body.inputs[0]
    if given.shape and given.shape[0] > 0:
        check_point_count(state, given.shape[0], ["body", "inputs", 0, "shape"])
    points = _points(given, record, binary, 0)  # (n_points, n_features)
    offered = REGRESSION_OUTPUTS if record.task == "regression" else OUTPUTS
    wanted = [output.name for output in body.outputs] if body.outputs else list(offered)
    for output in wanted:
        if output not in offered:
            raise _bad(f"unknown output {output!r}; this model's outputs are {list(offered)}")
    content = await predicted(
        state,
        record,
        len(points),
        lambda model: _answer(model, points, wanted, name, body.id),
    )
    return Response(content, media_type="application/json")
