"""What routes depend on: the service state of their app and pagination parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request

from service.api.pictures import PictureCache
from service.errors import InvalidRequest
from service.execution.dispatcher import Dispatcher
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.state.jobs import JobLifecycle
from service.state.store import Store
from service.state.sweeps import SweepLifecycle


@dataclass(frozen=True)
class ServiceState:
    """Everything one app instance holds; lives on `app.state.scratchnet`."""

    settings: Settings
    store: Store
    dispatcher: Dispatcher
    jobs: JobLifecycle
    sweeps: SweepLifecycle
    pictures: PictureCache
    metrics: ServiceMetrics


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.scratchnet
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


@dataclass(frozen=True)
class Pagination:
    limit: int
    offset: int


async def pagination(
    state: StateDep,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            description="Items per page: at most page_size_max (default 500); "
            "default page_size_default (50).",
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0, description="Items to skip.")] = 0,
) -> Pagination:
    settings = state.settings
    if limit is not None and limit > settings.page_size_max:
        raise InvalidRequest.at(
            ["query", "limit"],
            f"limit {limit} exceeds page_size_max = {settings.page_size_max}",
            "less_than_equal",
        )
    return Pagination(limit=limit or settings.page_size_default, offset=offset)


PageDep = Annotated[Pagination, Depends(pagination)]
