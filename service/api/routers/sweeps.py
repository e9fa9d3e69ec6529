"""/v1/sweeps: train a grid of configurations together, follow them, compare them in pictures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from engine import plotting
from engine.training import HistoryPoint
from service.api.auth import CallerDep
from service.api.deps import PageDep, StateDep, idempotency_key_header, submission
from service.api.pictures import (
    Height,
    LogScale,
    Width,
    picture_response,
    png_route,
    resolution_query,
    split_points,
)
from service.api.problems import answers, problem_responses
from service.api.streams import (
    event_stream_200,
    follow_response,
    last_event_id_header,
    since_query,
)
from service.api.sweep_schemas import (
    SweepCreate,
    SweepPointEvent,
    SweepPublic,
    SweepResultEvent,
    SweepsPublic,
    SweepStatusName,
)
from service.api.views import configuration_public, sweep_public
from service.errors import Conflict
from service.state.records import ConfigurationRecord
from service.state.sweep_kind import SweepSnapshot, SweepSubmission

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

EVENTS_DESCRIPTION = """\
Server-sent events, numbered from 1. First every event already recorded after `since` (or
`Last-Event-ID`), then, as training goes, one `progress` event per history point a
configuration records and one `result` event per configuration that ends; then one final
`status` event, and the stream ends. Comment lines keep an idle connection alive.

    event: progress
    id: 12
    data: {"sweep_id": "swp_…", "index": 3, "epoch": 1000, "train_loss": 0.31, ...}

    event: result
    id: 13
    data: {"sweep_id": "swp_…", "index": 3, "status": "succeeded", "model_id": "mdl_…", ...}

    event: status
    data: {"id": "swp_…", "status": "succeeded", ...}
"""


# -- routes --------------------------------------------------------------------------------------


@router.post(
    "",
    status_code=202,
    response_model=SweepPublic,
    summary="Queue a sweep",
    responses=answers(
        202,
        "Queued; Location names the sweep. A retry with the same Idempotency-Key and body "
        "answers the same sweep.",
        (400, 409, 413, 422, 429, 503),
        location=True,
    ),
)
async def create_sweep(
    body: SweepCreate,
    response: Response,
    state: StateDep,
    caller: CallerDep,
    idempotency_key: str | None = idempotency_key_header("sweep"),
) -> SweepPublic:
    """Expand the grid (its keys in order, the last varying fastest), check every configuration
    as a full set of options against this deployment's limits (the work summed), then queue
    it: the configurations are split between the workers and trained packed together where
    they can be. Each refusal names the grid key and value."""
    request = submission(
        SweepSubmission, body, idempotency_key, caller, base=body.base, grid=body.grid
    )
    sweep, _created = state.sweeps.submit(request)
    response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
    return sweep_public(sweep)


@router.get(
    "", response_model=SweepsPublic, summary="List sweeps", responses=problem_responses(422)
)
async def list_sweeps(
    state: StateDep,
    caller: CallerDep,
    page: PageDep,
    status: Annotated[
        SweepStatusName | None, Query(description="Only sweeps in this state.")
    ] = None,
) -> SweepsPublic:
    """Every sweep, oldest first, optionally only those in one state."""
    return SweepsPublic.model_validate(page.page(state.sweeps.select(status, caller), sweep_public))


@router.get(
    "/{sweep_id}",
    response_model=SweepPublic,
    summary="Read a sweep",
    responses=problem_responses(404),
)
async def read_sweep(state: StateDep, caller: CallerDep, sweep_id: str) -> SweepPublic:
    """A sweep: its progress and one row per configuration, the best one marked."""
    return sweep_public(state.sweeps.require(sweep_id, caller))


@router.post(
    "/{sweep_id}/cancel",
    status_code=202,
    response_model=SweepPublic,
    summary="Cancel a sweep",
    responses=answers(
        202,
        "Cancel requested: configurations still training stop within an epoch and end "
        "`cancelled`; those that ended keep their results and models.",
        (404, 409),
    ),
)
async def cancel_sweep(state: StateDep, caller: CallerDep, sweep_id: str) -> SweepPublic:
    """Ask a queued or running sweep to stop. A finished sweep answers 409 with its status."""
    return sweep_public(state.sweeps.cancel(sweep_id, caller))


def _render(snapshot: SweepSnapshot) -> list[ServerSentEvent]:
    sweep = snapshot.record
    best_index = sweep.best_index()
    events = []
    for number, (kind, index, _position), shown in snapshot.entries:
        if kind == "point":
            assert isinstance(shown, HistoryPoint)
            data = SweepPointEvent.model_validate(
                {**shown.as_dict(), "sweep_id": sweep.id, "index": index}
            )
            events.append(
                ServerSentEvent(data=data.model_dump_json(), event="progress", id=str(number))
            )
        else:
            assert isinstance(shown, ConfigurationRecord)
            row = configuration_public(shown, index is not None and index == best_index)
            result = SweepResultEvent.model_validate({**row.model_dump(), "sweep_id": sweep.id})
            events.append(
                ServerSentEvent(data=result.model_dump_json(), event="result", id=str(number))
            )
    if sweep.finished:
        events.append(ServerSentEvent(data=sweep_public(sweep).model_dump_json(), event="status"))
    return events


@router.get(
    "/{sweep_id}/events",
    summary="Follow a sweep live (server-sent events)",
    description=EVENTS_DESCRIPTION,
    response_class=EventSourceResponse,
    responses={
        **event_stream_200(
            "An event stream (see above); `progress` data is a SweepPointEvent, "
            "`result` data a SweepResultEvent, `status` data a SweepPublic."
        ),
        **problem_responses(404, 422),
    },
)
async def sweep_events(
    state: StateDep,
    caller: CallerDep,
    sweep_id: str,
    since: int | None = since_query("events numbered"),
    last_event_id: int | None = last_event_id_header("event number"),
) -> EventSourceResponse:
    return follow_response(
        state.sweeps, sweep_id, since, last_event_id, _render, state.settings, caller
    )


# -- pictures ------------------------------------------------------------------------------------


def _accuracy_text(row: ConfigurationRecord, has_test: bool) -> str:
    metrics = row.metrics or {}
    which = "test" if has_test else "train"
    value = metrics.get(f"{which}_accuracy")
    return f"{which} {100 * value:.0f}%" if value is not None else which + " -"


@png_route(
    router, "/{sweep_id}/grid.png", "Draw every configuration's decision boundary", 404, 409, 422
)
async def grid_picture(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    sweep_id: str,
    panel_width: Annotated[
        int, Query(ge=plotting.MIN_PIXELS, le=1000, description="Pixels per panel.")
    ] = 320,
    panel_height: Annotated[
        int, Query(ge=plotting.MIN_PIXELS, le=1000, description="Pixels per panel.")
    ] = 280,
    columns: Annotated[
        int | None, Query(ge=1, le=plotting.MAX_PANELS, description="Panels per row.")
    ] = None,
    resolution: int = resolution_query(120, "Grid points per axis in each panel."),
) -> Response:
    """One decision-boundary panel per succeeded configuration (the baseline first when it
    succeeded), titled with what the configuration varies and its test accuracy (training
    accuracy without a test split); the dataset's points drawn while it exists. 2-feature data
    only (else 409); 409 until a configuration has succeeded."""
    sweep = state.sweeps.require(sweep_id, caller)
    n_features = sweep.data.n_features
    if sweep.data.task == "regression":
        raise Conflict(
            f"sweep {sweep_id} trains regression models; the grid of decision boundaries is "
            "drawn for classifiers (use curves.png, or each model's decision-boundary.png)"
        )
    if n_features != 2:
        raise Conflict(
            f"sweep {sweep_id} trains on {n_features} features; decision boundaries "
            "are drawn for 2-feature data only (use curves.png to compare its "
            "configurations)"
        )
    first = [sweep.baseline] if sweep.baseline is not None else []
    has_test = sweep.data.test_size > 0
    titled = [
        (row.model_id, f"{row.label} · {_accuracy_text(row, has_test)}")
        for row in first + sweep.configurations
        if row.model_id is not None
    ]
    status = sweep.status
    if not titled:
        raise Conflict(
            f"sweep {sweep_id} is {status} and no configuration has succeeded yet: there is no "
            "decision boundary to draw"
        )
    present = [(model_id, title) for model_id, title in titled if state.store.models.get(model_id)]
    if not present:
        raise Conflict(f"the models of sweep {sweep_id} have all been deleted")
    has_points = state.store.datasets.get(sweep.dataset_id) is not None
    if columns is not None and columns > len(present):
        columns = len(present)
    key = (
        sweep_id,
        "grid",
        tuple(model_id for model_id, _title in titled),
        tuple(title for _model_id, title in present),
        panel_width,
        panel_height,
        columns,
        resolution,
        has_points,
    )

    def render() -> bytes:
        train, test = split_points(state.store.datasets.content(sweep.dataset_id))
        panels = []
        for model_id, title in present:
            content = state.store.models.content(model_id)
            if content is not None:  # not deleted meanwhile
                model = content.model
                panels.append(
                    plotting.PanelSpec(model, train[0], train[1], test[0], test[1], title=title)
                )
        if not panels:
            raise Conflict(f"the models of sweep {sweep_id} have all been deleted")
        return plotting.panels_png(
            panels,
            columns=columns,
            panel_size=(panel_width, panel_height),
            resolution=resolution,
        )

    return await picture_response(request, state.pictures, key, render)


@png_route(
    router, "/{sweep_id}/curves.png", "Draw every configuration's loss curves", 404, 409, 422
)
async def curves_picture(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    sweep_id: str,
    width: Width = 800,
    height: Height = 500,
    log_scale: LogScale = False,
) -> Response:
    """Every configuration's loss by recorded epoch on one chart, one colour each: training
    loss solid, test loss dashed (the baseline too, when asked for). 409 until a point has
    been recorded, and past plotting.MAX_SERIES configurations."""
    histories = state.sweeps.histories(sweep_id, caller)
    series: list[tuple[str, list[HistoryPoint]]] = [
        (row.label, history) for row, history in histories if history
    ]
    if not series:
        raise Conflict(f"sweep {sweep_id} has not recorded a loss yet; retry shortly")
    if len(series) > plotting.MAX_SERIES:
        raise Conflict(
            f"sweep {sweep_id} has {len(series)} loss curves and one chart holds at most "
            f"{plotting.MAX_SERIES}; read the histories from the models instead"
        )
    version = tuple(len(history) for _label, history in series)
    key = (sweep_id, "curves", version, width, height, log_scale)
    title = f"Loss by epoch, {len(series)} configurations"
    return await picture_response(
        request,
        state.pictures,
        key,
        lambda: plotting.curves_png(
            series, log_scale=log_scale, width=width, height=height, title=title
        ),
    )
