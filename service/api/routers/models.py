"""/v1/models: trained networks — read, predict, draw, export, import, delete, and name.

Every `{model_id}` is a model id or one of the caller's aliases (`service.state.store.Aliases`):
`require_model` resolves it, and the route goes on with the record's id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from starlette.convertors import StringConvertor, register_url_convertor

from engine import plotting, serialize
from engine.model import Model
from service.api.auth import Caller, CallerDep
from service.api.deps import PageDep, ServiceState, StateDep
from service.api.pictures import (
    Height,
    LogScale,
    ShowQuery,
    Width,
    boundary_png,
    dataset_points,
    picture_response,
    png_route,
    require_classifier,
    require_plane,
    resolution_query,
    split_points,
)
from service.api.predictions import (
    accept_json,
    check_point_count,
    classified,
    media_type,
    parsed,
    predicted,
    probabilities,
    require_model,
    require_weights,
)
from service.api.problems import answers, parse_json_body, problem_responses
from service.api.schemas import (
    ALIAS_DESCRIPTION,
    ALIAS_PATTERN,
    MODEL_REF_DESCRIPTION,
    ModelPublic,
    ModelsPublic,
    Prediction,
    PredictRequest,
)
from service.api.views import model_public
from service.errors import Conflict, InvalidRequest, NotFound, UnsupportedMediaType
from service.state.records import DatasetContent, ModelContent, ModelRecord, new_id, utc_now

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelIdConvertor(StringConvertor):
    """A `{model_id}` path segment: any segment but `import`, the literal one beside it. So
    GET /v1/models/import is a 405 naming the one method that path takes (Allow: POST), not a
    lookup of a model called "import"."""

    regex = "(?!import(?:/|$))[^/]+"


register_url_convertor("model_id", ModelIdConvertor())
MODEL = "/{model_id:model_id}"

NPZ_MEDIA_TYPE = "application/octet-stream"


ModelRef = Annotated[str, Path(description=MODEL_REF_DESCRIPTION)]
Alias = Annotated[str, Path(pattern=ALIAS_PATTERN, description=ALIAS_DESCRIPTION)]


def public(state: StateDep, caller: Caller, record: ModelRecord) -> ModelPublic:
    """The model as this caller sees it, with its aliases."""
    return model_public(record, state.store.aliases.of(caller.name, record.id))


@router.get(
    "", response_model=ModelsPublic, summary="List models", responses=problem_responses(422)
)
async def list_models(state: StateDep, caller: CallerDep, page: PageDep) -> ModelsPublic:
    """Every model, oldest first: trained by jobs and sweeps, or imported."""
    models = state.store.models.select(lambda record: caller.sees(record.owner))
    return ModelsPublic.model_validate(
        page.page(models, lambda record: public(state, caller, record))
    )


@router.post(
    "/import",
    status_code=201,
    response_model=ModelPublic,
    summary="Import an exported model",
    responses=answers(
        201, "Imported; Location names the new model.", (413, 415, 422, 507), location=True
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The bytes of a model exported by GET /v1/models/{model_id}/export.",
            "content": {NPZ_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def import_model(
    request: Request,
    response: Response,
    state: StateDep,
    caller: CallerDep,
    name: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="Name of the new model."),
    ] = None,
) -> ModelPublic:
    """A new model that predicts exactly like the exported one. It has no job, no dataset and
    no training history."""
    content_type = media_type(request)
    if content_type != NPZ_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"send the exported .npz bytes as {NPZ_MEDIA_TYPE}, not {content_type or 'nothing'}"
        )
    raw = await request.body()
    model = await anyio.to_thread.run_sync(serialize.model_from_npz, raw)
    content = ModelContent(model, history=())
    record = ModelRecord.describe(
        content,
        id=new_id("mdl"),
        name=name or "imported",
        created_at=utc_now(),
        owner=caller.name,
    )
    await anyio.to_thread.run_sync(state.store.models.add, record, content)
    response.headers["Location"] = f"/v1/models/{record.id}"
    return public(state, caller, record)


@router.get(
    MODEL,
    response_model=ModelPublic,
    summary="Read a model",
    responses=problem_responses(404),
)
async def read_model(state: StateDep, caller: CallerDep, model_id: ModelRef) -> ModelPublic:
    """A model, named by its id or an alias: its options, final metrics, architecture,
    features, classes and aliases."""
    return public(state, caller, require_model(state, model_id, caller))


@router.delete(
    MODEL,
    status_code=204,
    summary="Delete a model",
    responses=answers(204, "Deleted.", (404, 507)),
)
async def delete_model(state: StateDep, caller: CallerDep, model_id: ModelRef) -> Response:
    """Forget a model, its pictures and every alias of it (the aliases name nothing
    afterwards). The job or sweep that trained it stays."""
    record = require_model(state, model_id, caller)
    if state.store.remove_model(record.id) is None:
        raise NotFound(f"model {model_id} does not exist")
    state.pictures.forget(record.id)
    return Response(status_code=204)


@router.put(
    "/{model_id}/aliases/{alias}",
    response_model=ModelPublic,
    summary="Give a model an alias",
    responses=answers(200, "The model, with the alias among its aliases.", (404, 422, 507)),
)
async def set_alias(
    state: StateDep, caller: CallerDep, model_id: ModelRef, alias: Alias
) -> ModelPublic:
    """Make `alias` name this model for this API key, moving it in one step from whichever
    model had it (that model loses it). Setting an alias the model already has changes
    nothing. Other keys' aliases are their own: the same name can name another model of theirs."""
    record = require_model(state, model_id, caller)
    store = state.store

    def assign() -> None:
        with store.atomic():  # the model may have been deleted since it was read
            if store.models.get(record.id) is None:
                raise NotFound(f"model {model_id} does not exist")
            store.aliases.assign(caller.name, alias, record.id)

    await anyio.to_thread.run_sync(assign)
    return public(state, caller, record)


@router.delete(
    "/{model_id}/aliases/{alias}",
    status_code=204,
    summary="Remove a model's alias",
    responses=answers(204, "Removed; the alias names nothing.", (404, 422, 507)),
)
async def delete_alias(
    state: StateDep, caller: CallerDep, model_id: ModelRef, alias: Alias
) -> Response:
    """Forget the alias. A 404 when the model does not exist or the alias is not one of its
    aliases (for this key)."""
    record = require_model(state, model_id, caller)
    store = state.store

    def remove() -> None:
        with store.atomic():
            if store.aliases.resolve(caller.name, alias) != record.id:
                raise NotFound(f"model {record.id} has no alias {alias!r}")
            store.aliases.remove(caller.name, alias)

    await anyio.to_thread.run_sync(remove)
    return Response(status_code=204)


def _parse_points(raw: bytes) -> list[list[float]]:
    """The body as a PredictRequest (NaN, Infinity and 1e309 are refused)."""
    return parse_json_body(PredictRequest, raw).points


def _predict(model: Model, points: list[list[float]]) -> bytes:
    body: dict[str, Any]
    if model.regression:
        body = {"values": probabilities(model, points).tolist()}  # (n_points, n_targets)
    else:
        result, labels = classified(model, points)  # (n_points, n_classes), (n_points,)
        body = {"classes": labels, "probabilities": result.tolist()}
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


@router.post(
    f"{MODEL}/predict",
    response_model=Prediction,
    summary="Predict classes or values",
    responses=problem_responses(400, 404, 413, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
            },
        }
    },
)
async def predict(
    request: Request, state: StateDep, caller: CallerDep, model_id: ModelRef
) -> Response:
    """Classify raw points, or for a regression model predict their targets (`values`, in the
    targets' units); the model applies its own standardization. At most predict_max_points per
    call; each point needs exactly n_features values."""
    record = require_model(state, model_id, caller)
    accept_json(request, (), "the points")
    points = await parsed(_parse_points, await request.body())
    check_point_count(state, len(points), ["body", "points"])
    n_features = record.n_features
    for index, point in enumerate(points):
        if len(point) != n_features:
            raise InvalidRequest.at(
                ["body", "points", index],
                f"point {index} has {len(point)} values but the model expects n_features = "
                f"{n_features}",
                "wrong_dimension",
            )
    content = await predicted(state, record, len(points), lambda model: _predict(model, points))
    return Response(content, media_type="application/json")


@dataclass(frozen=True)
class ModelPicture:
    """What a model's picture route starts from: the caller, the model as named (an id or an
    alias: what messages say), and the one way each picture answers."""

    request: Request
    state: ServiceState
    caller: Caller
    ref: str

    def require(self) -> ModelRecord:
        """The model (404 as for any model the caller cannot see)."""
        return require_model(self.state, self.ref, self.caller)

    def has_dataset(self, record: ModelRecord) -> bool:
        """Whether the model's dataset still exists (its record: no content is read)."""
        return bool(record.dataset_id and self.state.store.datasets.get(record.dataset_id))

    def points(self, record: ModelRecord) -> DatasetContent | None:
        """The model's dataset, while it exists (for `draw`: it reads the content)."""
        return dataset_points(self.state.store, record.dataset_id)

    async def respond(
        self, record: ModelRecord, key: tuple[Any, ...], draw: Callable[[ModelContent], bytes]
    ) -> Response:
        """The PNG `draw` makes of the model's content, cached by the model, `key` and whether
        its dataset (the points drawn) still exists."""
        return await picture_response(
            self.request,
            self.state.pictures,
            (record.id, *key, self.has_dataset(record)),
            lambda: draw(require_weights(self.state, record.id)),
        )


def model_picture(
    request: Request, state: StateDep, caller: CallerDep, model_id: ModelRef
) -> ModelPicture:
    return ModelPicture(request, state, caller, model_id)


ModelPictureDep = Annotated[ModelPicture, Depends(model_picture)]


@png_route(router, f"{MODEL}/decision-boundary.png", "Draw the decision boundary", 404, 409, 422)
async def decision_boundary(
    picture: ModelPictureDep,
    width: Width = 640,
    height: Height = 480,
    resolution: int = resolution_query(200, "Grid points per axis."),
    show: ShowQuery = "all",
) -> Response:
    """Class regions of a 2-feature model. Points come from the model's dataset while it
    exists (training filled, test hollow); imported models and models whose dataset was deleted
    are drawn without points. A 2-feature regression model is drawn as its prediction surface
    instead: a heatmap of its (first) target on a diverging colour map with a colour bar, the
    points coloured by their target (training circles, test diamonds). A model with other than
    2 features is a 409 (as a loss curve of a model without history): what the model is, not
    the request, forbids it."""
    record = picture.require()
    instead = "predicted-vs-actual.png draws any regression model"
    require_plane(
        f"model {picture.ref}", record.n_features, instead if record.task == "regression" else ""
    )
    return await picture.respond(
        record,
        ("boundary", width, height, resolution, show),
        lambda content: boundary_png(
            content.model,
            picture.points(record),
            width=width,
            height=height,
            resolution=resolution,
            show=show,
        ),
    )


@png_route(router, f"{MODEL}/neurons.png", "Draw every hidden unit", 404, 409, 422)
async def neurons(
    picture: ModelPictureDep,
    panel_size: Annotated[
        int, Query(ge=plotting.MIN_PIXELS, le=400, description="Pixels per panel side.")
    ] = 110,
    resolution: int = resolution_query(60, "Grid points per axis of each panel.", le=200),
) -> Response:
    """One panel per hidden unit of a 2-feature model: the unit's activation over the plane
    the decision boundary shows, one row of panels per hidden layer (input side first,
    wrapping after 10 units), each layer with its colour bar (tanh -1..1, sigmoid 0..1, other
    activations symmetric about 0). A 409 for a model with other than 2 features, for one
    without a hidden layer (softmax regression: its decision boundary is the whole picture)
    and for one with more than 100 hidden units."""
    record = picture.require()
    model_id = picture.ref
    require_plane(f"model {model_id}", record.n_features)
    require_classifier(
        f"model {model_id}", record.task, "decision-boundary.png draws its prediction surface"
    )
    hidden = record.architecture[1:-1]
    if not hidden:
        raise Conflict(
            f"model {model_id} has no hidden layer (softmax regression), so it has no hidden "
            "units to draw; its decision-boundary.png shows all it computes"
        )
    if sum(hidden) > plotting.MAX_PANELS:
        raise Conflict(
            f"model {model_id} has {sum(hidden)} hidden units; neuron panels are drawn for at "
            f"most {plotting.MAX_PANELS}"
        )

    def draw(content: ModelContent) -> bytes:
        points = picture.points(record)
        return plotting.neurons_png(
            content.model,
            X=None if points is None else points.dataset.X,
            panel_size=panel_size,
            resolution=resolution,
        )

    return await picture.respond(record, ("neurons", panel_size, resolution), draw)


@png_route(
    router, f"{MODEL}/predicted-vs-actual.png", "Draw predictions against targets", 404, 409, 422
)
async def predicted_vs_actual(
    picture: ModelPictureDep, width: Width = 640, height: Height = 480
) -> Response:
    """A regression model's predictions against the actual targets of its dataset's points
    (training filled, test hollow, one colour per target) and the diagonal a perfect model's
    points would lie on; any number of features. A classifier is a 409, as is a model without
    points to draw (imported, or its dataset deleted)."""
    record = picture.require()
    if record.task != "regression":
        raise Conflict(
            f"model {picture.ref} is a classifier; predicted-vs-actual pictures are drawn for "
            "regression models (decision-boundary.png draws a classifier)"
        )
    if not picture.has_dataset(record):
        raise Conflict(
            f"model {picture.ref} has no dataset to compare its predictions with (imported, "
            "or its dataset was deleted)"
        )

    def draw(content: ModelContent) -> bytes:
        train, test = split_points(picture.points(record))
        return plotting.predicted_vs_actual_png(
            content.model, train, test, width=width, height=height
        )

    return await picture.respond(record, ("predicted-vs-actual", width, height), draw)


@png_route(router, f"{MODEL}/loss-curve.png", "Draw the loss curve", 404, 409, 422)
async def loss_curve(
    picture: ModelPictureDep,
    width: Width = 640,
    height: Height = 480,
    log_scale: LogScale = False,
) -> Response:
    """Training (and test) loss by recorded epoch. Imported models have no history (409)."""
    record = picture.require()
    if not record.has_history:
        raise Conflict(
            f"model {picture.ref} has no training history (imported models carry none), so "
            "there is no loss curve to draw"
        )
    return await picture.respond(
        record,
        ("loss", width, height, log_scale),
        lambda content: plotting.loss_curve_png(
            content.history, log_scale=log_scale, width=width, height=height, title=None
        ),
    )


@router.get(
    f"{MODEL}/export",
    response_class=Response,
    summary="Export a model",
    responses={
        200: {
            "content": {NPZ_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "A NumPy .npz archive (no pickles) that POST /v1/models/import accepts.",
        },
        **problem_responses(404),
    },
)
async def export_model(state: StateDep, caller: CallerDep, model_id: ModelRef) -> Response:
    """The model as a NumPy .npz archive (weights, scaler, classes, feature names; no
    pickles), for POST /v1/models/import here or on another scratchnet."""
    record = require_model(state, model_id, caller)
    model = (await anyio.to_thread.run_sync(require_weights, state, record.id)).model
    content = await anyio.to_thread.run_sync(serialize.model_to_npz, model)
    return Response(
        content,
        media_type=NPZ_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{record.id}.npz"'},
    )
