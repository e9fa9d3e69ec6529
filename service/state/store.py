"""The Store: everything the service keeps, behind one interface.

    Store
    ├── datasets      Collection[DatasetRecord]   never change once added
    ├── models        Collection[ModelRecord]     never change once added
    ├── jobs          Collection[JobRecord]       change by update() only
    ├── sweeps        Collection[SweepRecord]     change by update() only
    └── idempotency   IdempotencyKeys per kind of work

Every method is one atomic step — one transaction for a database — and `atomic()` groups the
calls of one logical write (create a job and reserve its Idempotency-Key; finish a job and
register its model) into one. Reads return snapshots: later writes never change a record a
caller holds. `MemoryStore` keeps everything in this process's memory under one re-entrant lock.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Generic, Protocol, Self, TypeVar

from service.state.idempotency import IdempotencyKeys
from service.state.records import DatasetRecord, JobRecord, ModelRecord, SweepRecord


class Snapshotting(Protocol):
    """A record: an id, and a copy that later writes to it do not reach."""

    @property
    def id(self) -> str: ...

    def snapshot(self) -> Self: ...


R = TypeVar("R", bound=Snapshotting)
T = TypeVar("T")


class Collection(abc.ABC, Generic[R]):
    """Records of one kind by id, in insertion order."""

    @abc.abstractmethod
    def add(self, record: R) -> None: ...

    @abc.abstractmethod
    def get(self, record_id: str) -> R | None:
        """A snapshot of the record, or None."""

    @abc.abstractmethod
    def read(self, record_id: str, view: Callable[[R], T]) -> T | None:
        """What `view` makes of the stored record, in one atomic step (None when there is no
        such record); `view` must not change the record, and must copy what it keeps."""

    @abc.abstractmethod
    def update(self, record_id: str, change: Callable[[R], T]) -> T | None:
        """Apply `change` to the stored record in one atomic step and store the result; returns
        what `change` returned (None when there is no such record)."""

    @abc.abstractmethod
    def remove(self, record_id: str) -> R | None: ...

    @abc.abstractmethod
    def select(self, keep: Callable[[R], bool] | None = None) -> list[R]:
        """Snapshots of the records `keep` accepts, in insertion order."""

    @abc.abstractmethod
    def __len__(self) -> int: ...


class Store(abc.ABC):
    datasets: Collection[DatasetRecord]
    models: Collection[ModelRecord]
    jobs: Collection[JobRecord]
    sweeps: Collection[SweepRecord]

    @abc.abstractmethod
    def atomic(self) -> AbstractContextManager[object]:
        """Make the calls inside one atomic step (nesting joins the outer one)."""

    @abc.abstractmethod
    def idempotency(self, noun: str) -> IdempotencyKeys:
        """The Idempotency-Keys used to create one kind of work ("job", "sweep")."""


class MemoryCollection(Collection[R]):
    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._items: dict[str, R] = {}

    def add(self, record: R) -> None:
        with self._lock:
            self._items[record.id] = record

    def get(self, record_id: str) -> R | None:
        with self._lock:
            record = self._items.get(record_id)
            return None if record is None else record.snapshot()

    def read(self, record_id: str, view: Callable[[R], T]) -> T | None:
        with self._lock:
            record = self._items.get(record_id)
            return None if record is None else view(record)

    def update(self, record_id: str, change: Callable[[R], T]) -> T | None:
        with self._lock:
            record = self._items.get(record_id)
            return None if record is None else change(record)

    def remove(self, record_id: str) -> R | None:
        with self._lock:
            return self._items.pop(record_id, None)

    def select(self, keep: Callable[[R], bool] | None = None) -> list[R]:
        with self._lock:
            return [item.snapshot() for item in self._items.values() if keep is None or keep(item)]

    def __iter__(self) -> Iterator[R]:
        return iter(self.select())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class MemoryStore(Store):
    """Everything in this process's memory; lost when it stops."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.datasets = MemoryCollection(self._lock)
        self.models = MemoryCollection(self._lock)
        self.jobs = MemoryCollection(self._lock)
        self.sweeps = MemoryCollection(self._lock)
        self._keys: dict[str, IdempotencyKeys] = {}

    def atomic(self) -> AbstractContextManager[object]:
        return self._lock

    def idempotency(self, noun: str) -> IdempotencyKeys:
        with self._lock:
            return self._keys.setdefault(noun, IdempotencyKeys(noun))
