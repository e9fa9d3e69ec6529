"""The Open Inference Protocol (/v2) against a real `python -m service`, with requests built
exactly as Triton's HTTP client (tritonclient.http) builds them — JSON tensors, and the binary
tensor extension it uses by default — and every answer checked against the protocol's JSON
schema (tests/fixtures/open_inference_protocol.schema.json, from the KServe v2 REST spec)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from tests.api_support import QUICK_JOB, LiveServer, wait_for

SCHEMA = json.loads(
    (Path(__file__).parent / "fixtures" / "open_inference_protocol.schema.json").read_text()
)
POINTS = np.array([[0.5, 0.25], [-1.0, 0.75], [1.5, -0.5]])  # (3, 2)


def conforms(kind: str, body: Any) -> Any:
    """`body`, after checking it is the protocol's `kind` (a $defs name of the schema)."""
    Draft202012Validator({"$ref": f"#/$defs/{kind}", "$defs": SCHEMA["$defs"]}).validate(body)
    return body


def protocol_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message: str = conforms("error_response", response.json())["error"]
    assert message and set(response.json()) == {"error"}
    return message


def triton_request(
    points: np.ndarray,
    *,
    datatype: str = "FP64",
    name: str = "points",
    outputs: list[str] | None = None,
    request_id: str = "",
    binary: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of tritonclient.http's InferenceServerClient.infer: InferInput
    .set_data_from_numpy(binary_data=...), InferRequestedOutput(name, binary_data=False), as
    its _get_inference_request puts them together."""
    tensor: dict[str, Any] = {"name": name, "shape": list(points.shape), "datatype": datatype}
    raw = points.astype({"FP64": "<f8", "FP32": "<f4"}.get(datatype, "<f8")).tobytes()
    if binary:
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = [value.item() for value in points.flatten()]
    request: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    if request_id:
        request["id"] = request_id
    request["inputs"] = [tensor]
    if outputs:
        request["outputs"] = [{"name": o, "parameters": {"binary_data": False}} for o in outputs]
    else:
        parameters["binary_data_output"] = True
    if parameters:
        request["parameters"] = parameters
    header = json.dumps(request)
    if not binary:
        return header.encode(), {}
    return header.encode() + raw, {"Inference-Header-Content-Length": str(len(header))}


@pytest.fixture(scope="module")
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def model(http: httpx.Client) -> dict[str, Any]:
    """A moons model (2 features, classes 0 and 1), aliased `oip-moons`."""
    dataset = http.post("/v1/datasets", json={"kind": "moons", "n_samples": 100}).json()
    job = http.post(
        "/v1/jobs", json={"dataset_id": dataset["id"], "hyperparameters": QUICK_JOB}
    ).json()
    finished = wait_for(http, job["id"])
    assert finished["status"] == "succeeded", finished
    model_id = finished["model_id"]
    assert http.put(f"/v1/models/{model_id}/aliases/oip-moons").status_code == 200
    body: dict[str, Any] = http.get(f"/v1/models/{model_id}").json()
    return body


def test_server_metadata_and_health(http: httpx.Client) -> None:
    metadata = conforms("server_metadata_response", http.get("/v2").json())
    assert metadata["name"] == "scratchnet" and "binary_tensor_data" in metadata["extensions"]
    assert metadata["version"] == http.get("/v1/info").json()["version"]
    assert conforms("server_live_response", http.get("/v2/health/live").json()) == {"live": True}
    ready = http.get("/v2/health/ready")
    assert ready.status_code == 200 and conforms("server_ready_response", ready.json())["ready"]


@pytest.mark.parametrize("by", ["id", "alias"])
def test_model_metadata_and_readiness(http: httpx.Client, model: dict[str, Any], by: str) -> None:
    name = model["id"] if by == "id" else "oip-moons"
    metadata = conforms("model_metadata_response", http.get(f"/v2/models/{name}").json())
    assert metadata["name"] == name
    assert metadata["inputs"] == [{"name": "points", "datatype": "FP64", "shape": [-1, 2]}]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
        {"name": "class", "datatype": "INT64", "shape": [-1]},
    ]
    ready = conforms("model_ready_response", http.get(f"/v2/models/{name}/ready").json())
    assert ready == {"name": name, "ready": True}


@pytest.mark.parametrize(
    ("datatype", "binary"), [("FP64", False), ("FP32", False), ("FP64", True), ("FP32", True)]
)
def test_infer_answers_as_predict_does(
    http: httpx.Client, model: dict[str, Any], datatype: str, binary: bool
) -> None:
    body, headers = triton_request(POINTS, datatype=datatype, request_id="req-7", binary=binary)
    answer = http.post("/v2/models/oip-moons/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    result = conforms("inference_response", answer.json())
    assert (result["model_name"], result["id"]) == ("oip-moons", "req-7")
    sent = POINTS.astype(np.float32).astype(np.float64) if datatype == "FP32" else POINTS
    expected = http.post(f"/v1/models/{model['id']}/predict", json={"points": sent.tolist()}).json()
    probabilities, classes = result["outputs"]
    assert probabilities["name"] == "probabilities" and probabilities["datatype"] == "FP64"
    assert probabilities["shape"] == [3, 2]
    np.testing.assert_array_equal(
        np.array(probabilities["data"]).reshape(3, 2), expected["probabilities"]
    )
    assert classes == {
        "name": "class",
        "datatype": "INT64",
        "shape": [3],
        "data": expected["classes"],
    }


def test_requested_outputs_nested_data_and_no_rows(http: httpx.Client) -> None:
    body, _ = triton_request(POINTS, outputs=["class"])
    only = conforms(
        "inference_response", http.post("/v2/models/oip-moons/infer", content=body).json()
    )
    assert [output["name"] for output in only["outputs"]] == ["class"] and "id" not in only
    body, _ = triton_request(POINTS, outputs=["class", "probabilities"])
    both = http.post("/v2/models/oip-moons/infer", content=body).json()
    assert [output["name"] for output in both["outputs"]] == ["class", "probabilities"]
    nested = {
        "inputs": [{"name": "points", "shape": [3, 2], "datatype": "FP64", "data": POINTS.tolist()}]
    }
    answer = http.post("/v2/models/oip-moons/infer", json=nested).json()
    assert answer["outputs"][1]["data"] == only["outputs"][0]["data"]  # row-major either way
    empty, _ = triton_request(np.zeros((0, 2)), outputs=["probabilities"])
    none = conforms(
        "inference_response", http.post("/v2/models/oip-moons/infer", content=empty).json()
    )
    assert none["outputs"] == [
        {"name": "probabilities", "datatype": "FP64", "shape": [0, 2], "data": []}
    ]


def _with(change: dict[str, Any]) -> dict[str, Any]:
    tensor = {
        "name": "points",
        "shape": [3, 2],
        "datatype": "FP64",
        "data": POINTS.ravel().tolist(),
    }
    return {"inputs": [{**tensor, **change}]}


@pytest.mark.parametrize(
    ("request_body", "says"),
    [
        (_with({"shape": [2, 3]}), "takes [n, 2]"),
        (_with({"shape": [6]}), "takes [n, 2]"),
        (_with({"shape": [2, 2]}), "has 6 values but shape [2, 2] needs 4"),
        (_with({"datatype": "INT32"}), "send FP64 (or FP32)"),
        (_with({"datatype": "BYTES", "data": ["a", "b", "c", "d", "e", "f"]}), "send FP64"),
        (_with({"data": [0.5, "x", 1, 2, 3, 4]}), "every value must be a number"),
        (_with({"data": [0.5, True, 1, 2, 3, 4]}), "every value must be a number"),
        (_with({"data": 3.0}), "data must be a list"),
        (_with({"name": "input-0"}), "this model's input is 'points'"),
        (_with({"shape": [-1, 2]}), "greater than or equal to 0"),
        ({**_with({}), "outputs": [{"name": "logits"}]}, "unknown output 'logits'"),
        ({"inputs": []}, "at least 1 item"),
        ({"inputs": _with({})["inputs"] * 2}, "one input"),
        ({"input": _with({})["inputs"]}, "input"),
    ],
)
def test_a_request_the_model_cannot_take_is_the_protocols_400(
    http: httpx.Client, model: dict[str, Any], request_body: dict[str, Any], says: str
) -> None:
    answer = http.post("/v2/models/oip-moons/infer", json=request_body)
    assert says in protocol_error(answer, 400)


def test_more_rows_than_predict_max_points_is_a_400(http: httpx.Client) -> None:
    limit = http.get("/v1/info").json()["limits"]["predict_max_points"]
    body, headers = triton_request(np.zeros((limit + 1, 2)), binary=True)
    answer = http.post("/v2/models/oip-moons/infer", content=body, headers=headers)
    assert f"{limit + 1} points exceed predict_max_points = {limit}" in protocol_error(answer, 400)


def test_binary_data_that_does_not_fit_and_bodies_that_are_not_json(http: httpx.Client) -> None:
    body, headers = triton_request(POINTS, binary=True)
    short = http.post("/v2/models/oip-moons/infer", content=body[:-8], headers=headers)
    assert "body ends before" in protocol_error(short, 400)
    wrong = http.post(
        "/v2/models/oip-moons/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(body) + 1)},
    )
    assert "Inference-Header-Content-Length" in protocol_error(wrong, 400)
    broken = http.post("/v2/models/oip-moons/infer", content=b'{"inputs": [')
    assert "not valid JSON" in protocol_error(broken, 400)
    typed = http.post(
        "/v2/models/oip-moons/infer", content=b"points", headers={"Content-Type": "text/csv"}
    )
    assert "text/csv" in protocol_error(typed, 415)


def test_an_unknown_model_or_route_is_the_protocols_404(http: httpx.Client) -> None:
    for path in ("/v2/models/no-such-model", "/v2/models/mdl_0000000000000000/ready"):
        assert "does not exist" in protocol_error(http.get(path), 404)
    body, _ = triton_request(POINTS)
    assert "does not exist" in protocol_error(
        http.post("/v2/models/no-such-model/infer", content=body), 404
    )
    assert "/v2/repository/index" in protocol_error(http.get("/v2/repository/index"), 404)
    problem = http.get("/v1/models/no-such-model")  # /v1 keeps problem+json
    assert problem.headers["content-type"] == "application/problem+json"


def test_the_openapi_document_describes_every_v2_route(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    paths = {path: item for path, item in document["paths"].items() if path.startswith("/v2")}
    assert set(paths) == {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
    }
    error = {"$ref": "#/components/schemas/InferenceError"}
    for path, item in paths.items():
        for operation in item.values():
            assert operation["summary"] and operation["description"], path
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    content = response["content"]["application/json"]
                    assert content["schema"] == error, path
                    assert content["example"] == {"error": response["description"]}, path
    infer = paths["/v2/models/{name}/infer"]["post"]
    # the shared server has no keys: its contract declares no 401 (test_auth checks one with keys)
    assert set(infer["responses"]) == {"200", "400", "404", "413", "415", "429", "503"}
    assert "InferenceRequest" in document["components"]["schemas"]
