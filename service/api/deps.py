"""What routes depend on: the service state of their app and pagination parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Query, Request

from service.api.auth import KeyRing
from service.api.pictures import PictureCache
from service.api.schemas import JobCreate
from service.api.sweep_schemas import SweepCreate
from service.errors import InvalidRequest, NotFound
from service.execution.dispatcher import Dispatcher
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.state.callers import Caller
from service.state.idempotency import IdempotencyClaim
from service.state.job_kind import JobLifecycle
from service.state.lifecycle import Submission
from service.state.records import DatasetRecord, ModelRecord
from service.state.store import Store
from service.state.sweep_kind import SweepLifecycle

Item = TypeVar("Item")
Content = TypeVar("Content")
Owned = TypeVar("Owned", DatasetRecord, ModelRecord)
Submitted = TypeVar("Submitted", bound=Submission)


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
    keys: KeyRing


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.scratchnet
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def seen(record: Owned | None, noun: str, record_id: str, caller: Caller) -> Owned:
    """The record, when it exists for this caller; 404 naming `record_id` otherwise."""
    if record is None or not caller.sees(record.owner):
        raise NotFound(f"{noun} {record_id} does not exist")
    return record


def loaded(content: Content | None, noun: str, record_id: str) -> Content:
    """The content, when it is still there; 404 naming `record_id` otherwise."""
    if content is None:
        raise NotFound(f"{noun} {record_id} does not exist")
    return content


@dataclass(frozen=True)
class Pagination:
    limit: int
    offset: int

    def page(self, items: Sequence[Item], view: Callable[[Item], Any]) -> dict[str, Any]:
        """This page of `items` as views, with the total: the fields of every XsPublic."""
        chosen = items[self.offset : self.offset + self.limit]
        return {
            "items": [view(item) for item in chosen],
            "total": len(items),
            "limit": self.limit,
            "offset": self.offset,
        }


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


def idempotency_key_header(noun: str) -> Any:
    """The optional `Idempotency-Key` header of a route that creates a `noun`."""
    return Header(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description=f"Makes retries safe: the same key with the same body returns the {noun} "
        "created first; with a different body it is refused (422).",
    )


def submission(
    kind: type[Submitted],
    body: JobCreate | SweepCreate,
    idempotency_key: str | None,
    caller: Caller,
    **options: Any,
) -> Submitted:
    """What a create body submits: its dataset, name and baseline, the retry claim of its
    Idempotency-Key and the caller, with the kind's `options`."""
    return kind(
        dataset_id=body.dataset_id,
        name=body.name,
        baseline=body.baseline,
        claim=IdempotencyClaim.of(idempotency_key, body),
        caller=caller,
        **options,
    )
