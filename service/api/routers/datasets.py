"""/v1/datasets: generate, load or upload datasets; list, read, draw and delete them."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response

from engine import plotting
from engine.hyperparameters import Task
from service.api import dataset_requests as builders
from service.api.auth import Caller, CallerDep
from service.api.deps import PageDep, StateDep, loaded, seen
from service.api.pictures import picture_response, png_route
from service.api.problems import answers, parse_json_body, problem_responses
from service.api.schemas import DatasetCreate, DatasetPublic, DatasetsPublic
from service.api.views import dataset_public
from service.errors import (
    InvalidRequest,
    MalformedRequest,
    UnsupportedMediaType,
)
from service.state.lifecycle import delete_unused_dataset
from service.state.records import DatasetContent, DatasetRecord

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

# XOR, four points a class: enough for the default test_fraction to hold one of each out.
CSV_EXAMPLE = (
    "x1,x2,label\n0.0,0.0,a\n0.0,1.0,b\n1.0,0.0,b\n1.0,1.0,a\n"
    "0.1,0.1,a\n0.1,0.9,b\n0.9,0.1,b\n0.9,0.9,a\n"
)
CSV_QUERY = ("label_column", "task", "name", "test_fraction", "standardize", "seed")

CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Either a JSON DatasetCreate, or CSV text: a header row naming the "
        "columns, then one row per point; the label column (with `task=regression`, the "
        "target) is the last unless `label_column` names another; every other column must "
        "hold finite numbers.",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DatasetCreate"}},
            "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
        },
    }
}


def require_dataset(state: StateDep, dataset_id: str, caller: Caller) -> DatasetRecord:
    return seen(state.store.datasets.get(dataset_id), "dataset", dataset_id, caller)


def require_points(state: StateDep, dataset_id: str) -> DatasetContent:
    return loaded(state.store.datasets.content(dataset_id), "dataset", dataset_id)


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    summary="Create a dataset",
    responses=answers(
        201, "Created; Location names the new dataset.", (400, 413, 415, 422, 507), location=True
    ),
    openapi_extra=CREATE_BODY,
)
async def create_dataset(
    request: Request,
    response: Response,
    state: StateDep,
    caller: CallerDep,
    label_column: Annotated[
        str | None, Query(description="text/csv only: the label column (default: the last).")
    ] = None,
    task: Annotated[
        Task | None,
        Query(
            description="text/csv only: classification (default; the label column holds "
            "classes) or regression (it holds a finite number, the target)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="text/csv only: the dataset's name."),
    ] = None,
    test_fraction: Annotated[
        float | None,
        Query(ge=0, lt=1, allow_inf_nan=False, description="text/csv only (default 0.2)."),
    ] = None,
    standardize: Annotated[bool | None, Query(description="text/csv only (default true).")] = None,
    seed: Annotated[
        int | None, Query(ge=0, le=2**32 - 1, description="text/csv only: split seed (default 0).")
    ] = None,
) -> DatasetPublic:
    """Generate a synthetic dataset, load a bundled one, or accept your own points (JSON
    `custom` or a CSV upload), then split it into training and test points, stratified by
    class (at random for regression). A field that does not apply to the kind is refused with
    422 naming it."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    settings = state.settings
    raw = await request.body()
    record: DatasetRecord
    content: DatasetContent
    if content_type == "text/csv":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedRequest(f"the CSV is not UTF-8 text: {exc}") from None
        options = builders.SplitOptions(
            test_fraction=builders.DEFAULT_TEST_FRACTION
            if test_fraction is None
            else test_fraction,
            standardize=True if standardize is None else standardize,
            seed=builders.DEFAULT_SPLIT_SEED if seed is None else seed,
        )
        record, content = await anyio.to_thread.run_sync(
            lambda: builders.build_from_csv(
                text,
                label_column=label_column,
                name=name,
                options=options,
                settings=settings,
                task=task or "classification",
            )
        )
    elif content_type in ("application/json", ""):
        given = [key for key in CSV_QUERY if key in request.query_params]
        if given:
            raise InvalidRequest.at(
                ["query", given[0]],
                f"query parameter {given[0]} applies to text/csv bodies only; "
                "put it in the JSON body instead",
                "not_applicable",
            )
        record, content = await anyio.to_thread.run_sync(
            lambda: builders.build(parse_json_body(DatasetCreate, raw), settings)
        )
    else:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not accepted; send application/json or text/csv"
        )
    record = replace(record, owner=caller.name)
    await anyio.to_thread.run_sync(state.store.datasets.add, record, content)
    response.headers["Location"] = f"/v1/datasets/{record.id}"
    return dataset_public(record)


@router.get(
    "", response_model=DatasetsPublic, summary="List datasets", responses=problem_responses(422)
)
async def list_datasets(state: StateDep, caller: CallerDep, page: PageDep) -> DatasetsPublic:
    """Every dataset, oldest first, without its points."""
    datasets = state.store.datasets.select(lambda record: caller.sees(record.owner))
    return DatasetsPublic.model_validate(page.page(datasets, dataset_public))


@router.get(
    "/{dataset_id}",
    response_model=DatasetPublic,
    summary="Read a dataset",
    responses=problem_responses(404, 422),
)
async def read_dataset(
    state: StateDep,
    caller: CallerDep,
    dataset_id: str,
    include_points: Annotated[
        bool,
        Query(description="Add `points`, `labels` and `split` (the side of each point)."),
    ] = False,
) -> DatasetPublic | Response:
    """A dataset's description and split; with include_points, every point too."""
    record = require_dataset(state, dataset_id, caller)
    if include_points:
        # every point: load, build and serialize in a thread, not on the event loop
        content = await anyio.to_thread.run_sync(
            lambda: (
                dataset_public(record, require_points(state, dataset_id)).model_dump_json().encode()
            )
        )
        return Response(content, media_type="application/json")
    return dataset_public(record)


@router.delete(
    "/{dataset_id}",
    status_code=204,
    summary="Delete a dataset",
    responses=answers(204, "Deleted. Models trained on it stay.", (404, 409, 507)),
)
async def delete_dataset(state: StateDep, caller: CallerDep, dataset_id: str) -> Response:
    """Forget a dataset. Refused (409) while a queued or running job or sweep trains on it."""
    delete_unused_dataset(state.store, dataset_id, (state.jobs, state.sweeps), caller)
    state.pictures.forget(dataset_id)
    return Response(status_code=204)


@png_route(
    router,
    "/{dataset_id}/image.png",
    "Draw a dataset",
    404,
    422,
    description="Scatter plot of the first two features coloured by class.",
)
async def dataset_image(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    dataset_id: str,
    width: Annotated[
        int, Query(ge=plotting.MIN_PIXELS, le=plotting.MAX_PIXELS, description="Pixels.")
    ] = 640,
    height: Annotated[
        int, Query(ge=plotting.MIN_PIXELS, le=plotting.MAX_PIXELS, description="Pixels.")
    ] = 480,
) -> Response:
    """Scatter plot of the first two features, coloured by class (PNG); a regression dataset's
    points are coloured by their (first) target on a diverging map with a colour bar."""
    record = require_dataset(state, dataset_id, caller)
    described = (
        f"target {record.target_names[0]}"
        if record.task == "regression"
        else f"{record.n_classes} classes"
    )
    return await picture_response(
        request,
        state.pictures,
        (record.id, "image", width, height),
        lambda: plotting.dataset_png(
            require_points(state, dataset_id).dataset,
            title=f"{record.name}: {record.n_samples} points, {described}",
            width=width,
            height=height,
        ),
    )
