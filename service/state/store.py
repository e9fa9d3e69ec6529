"""The Store: everything the service keeps, behind one interface.

    Store
    ├── datasets      Catalog[DatasetRecord, DatasetContent]   never change once added
    ├── models        Catalog[ModelRecord, ModelContent]       never change once added
    ├── jobs          Collection[JobRecord]                    change by update() only
    ├── sweeps        Collection[SweepRecord]                  change by update() only
    ├── aliases       Aliases                                  names of models, per owner
    └── idempotency   IdempotencyKeys per kind of work

Every method is one atomic step — one transaction for a database — and `atomic()` groups the
calls of one logical write (create a job and reserve its Idempotency-Key; finish a job and
register its model) into one. Reads return snapshots: later writes never change a record a
caller holds. A catalog's record is what lists and views show; its content (points, weights,
history) is loaded only when asked for.

Bytes. Every dataset's and model's content counts against `max_stored_bytes`: an add that would
pass it raises InsufficientStorage (507) naming the setting, its value and what is used, and
changes nothing. `MemoryStore` keeps everything in this process's memory under one re-entrant
lock; `service.state.sqlite_store.SQLiteStore` keeps it in a database file.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import ClassVar, Generic, Literal, Protocol, Self, TypeVar

from service.errors import InsufficientStorage
from service.settings import Settings
from service.state.callers import Caller
from service.state.idempotency import IdempotencyKeys
from service.state.records import (
    DatasetContent,
    DatasetRecord,
    JobRecord,
    ModelContent,
    ModelRecord,
    SweepRecord,
)


def open_store(settings: Settings) -> Store:
    """The store the settings ask for: SQLite in data_dir when set, else memory."""
    if settings.data_dir is not None:
        from service.state.sqlite_store import SQLiteStore

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return SQLiteStore(
            settings.data_dir, settings.stored_bytes_limit(), cache_bytes=settings.cache_bytes
        )
    return MemoryStore(settings.stored_bytes_limit())


class Snapshotting(Protocol):
    """A record: an id, and a copy that later writes to it do not reach."""

    @property
    def id(self) -> str: ...

    def snapshot(self) -> Self: ...


class Sized(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def nbytes(self) -> int: ...


R = TypeVar("R", bound=Snapshotting)
T = TypeVar("T")
CR = TypeVar("CR", bound=Sized)
C = TypeVar("C")


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
    def count(self, keep: Callable[[R], bool]) -> int:
        """How many records `keep` accepts (no snapshot is made)."""

    @abc.abstractmethod
    def __len__(self) -> int: ...


class Catalog(abc.ABC, Generic[CR, C]):
    """Records that never change, each with a content loaded on demand."""

    @abc.abstractmethod
    def add(self, record: CR, content: C) -> None:
        """Keep both; InsufficientStorage (507) when record.nbytes would pass the limit."""

    @abc.abstractmethod
    def get(self, record_id: str) -> CR | None: ...

    @abc.abstractmethod
    def content(self, record_id: str) -> C | None:
        """The record's content (None once it is removed)."""

    @abc.abstractmethod
    def remove(self, record_id: str) -> CR | None: ...

    @abc.abstractmethod
    def select(self, keep: Callable[[CR], bool] | None = None) -> list[CR]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...


class Aliases(abc.ABC):
    """Stable names for models (`moons-best`), one namespace per owner: (owner, alias) names
    one model, and a model has any number of aliases. Every method is one atomic step."""

    @abc.abstractmethod
    def resolve(self, owner: str | None, alias: str) -> str | None:
        """The id of the model `owner`'s alias names, or None."""

    @abc.abstractmethod
    def of(self, owner: str | None, model_id: str) -> list[str]:
        """The aliases `owner` gave the model, sorted."""

    @abc.abstractmethod
    def assign(self, owner: str | None, alias: str, model_id: str) -> str | None:
        """Point the alias at the model, taking it from whichever model had it (one step);
        returns that model's id (None when the alias is new)."""

    @abc.abstractmethod
    def remove(self, owner: str | None, alias: str) -> str | None:
        """Forget the alias; returns the id of the model it named (None when there was none)."""

    @abc.abstractmethod
    def drop(self, model_id: str) -> None:
        """Forget every alias of the model (it is being deleted)."""


class Store(abc.ABC):
    backend: ClassVar[Literal["memory", "sqlite"]]
    durable: ClassVar[bool]  # what it keeps outlives the process: interrupted work resumes
    datasets: Catalog[DatasetRecord, DatasetContent]
    models: Catalog[ModelRecord, ModelContent]
    jobs: Collection[JobRecord]
    sweeps: Collection[SweepRecord]
    aliases: Aliases

    def find_model(self, name: str, caller: Caller) -> ModelRecord | None:
        """The model `name` names for this caller: its id, or one of the caller's aliases;
        None otherwise, and for a model of another key."""
        record = self.models.get(name)
        if record is None:
            named = self.aliases.resolve(caller.name, name)
            record = self.models.get(named) if named is not None else None
        if record is None or not caller.sees(record.owner):
            return None
        return record

    def remove_model(self, model_id: str) -> ModelRecord | None:
        """Delete a model and its aliases, in one atomic step."""
        with self.atomic():
            self.aliases.drop(model_id)
            return self.models.remove(model_id)

    @abc.abstractmethod
    def atomic(self) -> AbstractContextManager[object]:
        """Make the calls inside one atomic step (nesting joins the outer one)."""

    @abc.abstractmethod
    def idempotency(self, noun: str) -> IdempotencyKeys:
        """The Idempotency-Keys used to create one kind of work ("job", "sweep")."""

    lock: threading.RLock  # every method holds it: one writer at a time
    usage: Usage  # the bytes kept and their limit (under the lock)

    @property
    def stored_bytes(self) -> int:
        """Bytes of dataset and model content kept now."""
        with self.lock:
            return self.usage.used

    @property
    def max_stored_bytes(self) -> int:
        return self.usage.limit

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the store holds open."""


class Usage:
    """The bytes a store keeps, checked against its limit (callers hold the store's lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def claim(self, what: str, size: int) -> None:
        if self.used + size > self.limit:
            raise InsufficientStorage(
                f"storing this {what} ({size} bytes) would pass max_stored_bytes = "
                f"{self.limit} ({self.used} bytes are used); delete datasets or models you no "
                "longer need, or ask the operator to raise SCRATCHNET_MAX_STORED_BYTES"
            )
        self.used += size

    def release(self, size: int) -> None:
        self.used = max(0, self.used - size)


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

    def count(self, keep: Callable[[R], bool]) -> int:
        with self._lock:
            return sum(1 for item in self._items.values() if keep(item))

    def __iter__(self) -> Iterator[R]:
        return iter(self.select())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class MemoryCatalog(Catalog[CR, C]):
    def __init__(self, lock: threading.RLock, usage: Usage, noun: str) -> None:
        self._lock = lock
        self._usage = usage
        self._noun = noun
        self._items: dict[str, tuple[CR, C]] = {}

    def add(self, record: CR, content: C) -> None:
        with self._lock:
            self._usage.claim(self._noun, record.nbytes)
            self._items[record.id] = (record, content)

    def get(self, record_id: str) -> CR | None:
        with self._lock:
            item = self._items.get(record_id)
            return None if item is None else item[0]

    def content(self, record_id: str) -> C | None:
        with self._lock:
            item = self._items.get(record_id)
            return None if item is None else item[1]

    def remove(self, record_id: str) -> CR | None:
        with self._lock:
            item = self._items.pop(record_id, None)
            if item is None:
                return None
            self._usage.release(item[0].nbytes)
            return item[0]

    def select(self, keep: Callable[[CR], bool] | None = None) -> list[CR]:
        with self._lock:
            return [r for r, _c in self._items.values() if keep is None or keep(r)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


AliasKey = tuple[str | None, str]  # (owner, alias)


class MemoryAliases(Aliases):
    """Aliases in a dict; the SQLite store keeps the same dict and writes it through."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._models: dict[AliasKey, str] = {}  # (owner, alias) -> model id

    def resolve(self, owner: str | None, alias: str) -> str | None:
        with self._lock:
            return self._models.get((owner, alias))

    def of(self, owner: str | None, model_id: str) -> list[str]:
        with self._lock:
            return sorted(
                alias
                for (o, alias), named in self._models.items()
                if (o, named) == (owner, model_id)
            )

    def assign(self, owner: str | None, alias: str, model_id: str) -> str | None:
        with self._lock:
            previous = self._models.get((owner, alias))
            self._models[(owner, alias)] = model_id
            return previous

    def remove(self, owner: str | None, alias: str) -> str | None:
        with self._lock:
            return self._models.pop((owner, alias), None)

    def drop(self, model_id: str) -> None:
        with self._lock:
            for key in [key for key, named in self._models.items() if named == model_id]:
                del self._models[key]


class MemoryStore(Store):
    """Everything in this process's memory; lost when it stops."""

    backend = "memory"
    durable = False

    def __init__(self, max_stored_bytes: int) -> None:
        self.lock = threading.RLock()
        self.usage = Usage(max_stored_bytes)
        self.datasets = MemoryCatalog(self.lock, self.usage, "dataset")
        self.models = MemoryCatalog(self.lock, self.usage, "model")
        self.jobs = MemoryCollection(self.lock)
        self.sweeps = MemoryCollection(self.lock)
        self.aliases = MemoryAliases(self.lock)
        self._keys: dict[str, IdempotencyKeys] = {}

    def atomic(self) -> AbstractContextManager[object]:
        return self.lock

    def idempotency(self, noun: str) -> IdempotencyKeys:
        with self.lock:
            return self._keys.setdefault(noun, IdempotencyKeys(noun))

    def close(self) -> None:
        """Nothing is held open in memory."""
