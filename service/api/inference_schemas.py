"""Bodies of the Open Inference Protocol (KServe v2 REST, also spoken by Triton and Seldon):
the names and shapes its clients send and expect, field for field."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, JsonValue

from service.api.schemas import Request

Parameters = dict[str, JsonValue]
Datatype = Annotated[str, Field(description="A tensor datatype: BOOL, INT64, FP32, FP64, BYTES.")]


class InferenceError(BaseModel):
    """An error, as the protocol gives it."""

    error: str = Field(description="What went wrong, and what to do.")


class ServerMetadata(BaseModel):
    name: str = Field(examples=["scratchnet"])
    version: str = Field(description="The service's version.")
    extensions: list[str] = Field(description="Protocol extensions it implements.")


class ServerLive(BaseModel):
    live: Literal[True] = True


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str = Field(description="The name asked for (a model id or an alias).")
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="Dimensions; -1 is any size.", examples=[[-1, 2]])


class ModelMetadata(BaseModel):
    """A model's tensors: one input (points, one row each) and two outputs."""

    name: str = Field(description="The name asked for (a model id or an alias).")
    platform: str = Field(examples=["scratchnet"])
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(Request):
    name: str = Field(description="The input's name from the model's metadata.")
    shape: list[Annotated[int, Field(ge=0)]] = Field(examples=[[2, 2]])
    datatype: Datatype
    parameters: Parameters | None = Field(
        default=None,
        description="`binary_data_size`: the tensor's bytes follow the JSON (binary tensor "
        "extension), little-endian, row-major.",
    )
    data: JsonValue = Field(
        default=None,
        description="The elements in row-major order, flat or nested; absent when the bytes "
        "follow the JSON.",
        examples=[[0.5, 0.25, -1.0, 0.75]],
    )


class RequestOutput(Request):
    name: str = Field(description="An output's name from the model's metadata.")
    parameters: Parameters | None = None


class InferenceRequest(Request):
    """Tensors to infer on; `outputs` (when given) names the outputs to return, in order."""

    id: str | None = Field(default=None, description="Echoed in the response.")
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[float] | list[int] | list[str] = Field(description="Row-major elements.")


class InferenceResponse(BaseModel):
    model_name: str
    id: str | None = None
    outputs: list[ResponseOutput]
