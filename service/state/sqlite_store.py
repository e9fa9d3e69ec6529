"""The durable store: everything in one SQLite file (`scratchnet.db` in SCRATCHNET_DATA_DIR).

    blobs             id, sha256, data        the content of a dataset or model, as .npz bytes
    datasets, models  seq, id, record, nbytes, blob_id -> blobs.id
    work              seq, id, kind (job | sweep), status, record (without history points)
    work_points       work_id, series, position, point    appended as they are recorded
    work_snapshots    work_id, position, epoch, data      a finished job's kept parameter
                                                          snapshots (position: its index;
                                                          data: .npz), written as it finishes
    idempotency_keys  noun, key, fingerprint, resource_id
    model_aliases     owner ('' without keys), alias, model_id -> models.id
    alembic_version   the schema's revision

SQLAlchemy Core on one connection, in WAL mode with foreign keys on; `atomic()` is one
transaction. Records are JSON written by pydantic from the record dataclasses (floats round trip
exactly); contents are `.npz` bytes read with `allow_pickle=False`, checked against their
sha256 when loaded. `seq` keeps insertion order, as lists show it.

Memory. Start-up reads every dataset, model and work record (a few hundred bytes each) but no
content: a content is loaded when asked for and kept in an LRU cache of at most `cache_bytes`.
Work records stay in memory and are written through on every change.

Failures. A write the disk refuses (full, read-only) raises InsufficientStorage (507) and
changes nothing, in the file or in memory; reads go on. A job's or sweep's progress that cannot
be written stays in memory and is written with its next change. A row that cannot be read at
start-up is logged and skipped; a content whose checksum does not match is a 409 naming it.

Schema. On start, Alembic upgrades an older file to this version's schema; a file written by a
newer version is refused with a message naming both revisions.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from engine import serialize
from engine.datasets import Dataset, split
from engine.errors import EngineError
from engine.training import REGRESSION_KEYS, HistoryPoint, ParameterSnapshot
from service.errors import Conflict, InsufficientStorage
from service.state import records
from service.state.idempotency import IdempotencyKeys
from service.state.store import Catalog, Collection, MemoryAliases, Store, Usage

logger = logging.getLogger("service.store")

DATABASE_FILE = "scratchnet.db"

metadata = sa.MetaData()
blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


def _catalog_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("nbytes", sa.Integer, nullable=False),
        sa.Column("blob_id", sa.Integer, sa.ForeignKey("blobs.id"), nullable=False),
    )


datasets_table = _catalog_table("datasets")
models_table = _catalog_table("models")
work_table = sa.Table(
    "work",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("record", sa.Text, nullable=False),
)
points_table = sa.Table(
    "work_points",
    metadata,
    sa.Column("work_id", sa.String(64), primary_key=True),
    sa.Column("series", sa.String(16), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("point", sa.Text, nullable=False),
)
POINT = TypeAdapter(HistoryPoint)
snapshots_table = sa.Table(
    "work_snapshots",
    metadata,
    sa.Column("work_id", sa.String(64)),
    sa.Column("position", sa.Integer),  # the snapshot's index
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # .npz: W0, b0, W1, b1, ...
    sa.PrimaryKeyConstraint("work_id", "position"),
)
keys_table = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("noun", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("resource_id", sa.String(64), nullable=False),
)

aliases_table = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("owner", sa.String(64), primary_key=True),  # '' for a service without keys
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column(
        "model_id",
        sa.String(64),
        sa.ForeignKey("models.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
)

R = TypeVar("R", bound=records.WorkRecord)
CR = TypeVar("CR", bound=records.DatasetRecord | records.ModelRecord)
C = TypeVar("C", bound=records.DatasetContent | records.ModelContent)
T = TypeVar("T")

# History points as the rows of one float64 array: None (no test split, or the other task's
# metric) is NaN, which a recorded value never is. Models stored before regression have the
# first six columns only.
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "learning_rate",
    *REGRESSION_KEYS,
)


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("service.state") / "migrations"))
    config.attributes["connection"] = connection
    return config


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def encode_dataset(content: records.DatasetContent) -> bytes:
    return _npz(X=content.dataset.X, y=content.dataset.y)


def decode_dataset(record: records.DatasetRecord, data: bytes) -> records.DatasetContent:
    """The points, and the split made again from the record's options (deterministic: the
    same arrays, bit for bit, as when the dataset was created)."""
    arrays = _arrays(data)
    dataset = Dataset(
        arrays["X"],
        arrays["y"],
        record.classes,
        record.feature_names,
        record.task,
        record.target_names,
    )
    return records.DatasetContent(
        dataset,
        split(
            dataset,
            test_fraction=record.test_fraction,
            standardize=record.standardize,
            seed=record.seed,
        ),
    )


def encode_snapshot(snapshot: ParameterSnapshot) -> bytes:
    layers = zip(snapshot.weights, snapshot.biases, strict=True)
    return _npz(
        **{f"{kind}{i}": a for i, (W, b) in enumerate(layers) for kind, a in (("W", W), ("b", b))}
    )


def decode_snapshot(index: int, epoch: int, data: bytes) -> ParameterSnapshot:
    arrays = _arrays(data)
    layers = range(len(arrays) // 2)
    return ParameterSnapshot(
        index, epoch, [arrays[f"W{i}"] for i in layers], [arrays[f"b{i}"] for i in layers]
    )


def encode_model(content: records.ModelContent) -> bytes:
    rows = [
        [np.nan if getattr(p, name) is None else getattr(p, name) for name in HISTORY_COLUMNS]
        for p in content.history
    ]
    history = np.array(rows, dtype=np.float64).reshape(len(rows), len(HISTORY_COLUMNS))
    model = np.frombuffer(serialize.model_to_npz(content.model), dtype=np.uint8)
    return _npz(model=model, history=history)


def decode_model(record: records.ModelRecord, data: bytes) -> records.ModelContent:
    arrays = _arrays(data)
    model = serialize.model_from_npz(arrays["model"].tobytes())
    history = []
    for row in arrays["history"].tolist():
        epoch, train_loss, *optional = row  # older models: six columns
        values = {
            name: None if np.isnan(value) else value
            for name, value in zip(HISTORY_COLUMNS[2:], optional, strict=False)
        }
        learning_rate = values.pop("learning_rate")
        point = HistoryPoint(int(epoch), train_loss, **values, learning_rate=learning_rate)  # type: ignore[arg-type]
        history.append(point)
    return records.ModelContent(model, tuple(history))


def _refused(exc: OperationalError) -> InsufficientStorage:
    reason = str(exc.orig) if exc.orig is not None else "the write failed"
    logger.error("the database refused a write: %s", reason)
    return InsufficientStorage(
        f"the data directory refused the write ({reason}); nothing was changed. Free disk "
        "space or make the data directory writable; stored datasets and models can still be "
        "read"
    )


@dataclass(eq=False)
class SQLiteCatalog(Catalog[CR, C], Generic[CR, C]):
    """Records in memory (loaded at start-up), contents on disk and in an LRU cache."""

    _store: SQLiteStore
    _table: sa.Table
    _noun: str
    _adapter: TypeAdapter[CR]
    _encode: Callable[[C], bytes]
    _decode: Callable[[CR, bytes], C]
    _records: dict[str, CR] = field(default_factory=dict, init=False)
    _cache: OrderedDict[str, C] = field(default_factory=OrderedDict, init=False)
    _cached_bytes: int = field(default=0, init=False)

    def load(self, connection: sa.Connection) -> None:
        rows = connection.execute(
            sa.select(self._table.c.id, self._table.c.record).order_by(self._table.c.seq)
        )
        for record_id, text in rows:
            try:
                record = self._adapter.validate_json(text)
            except ValidationError as exc:
                logger.error(
                    "skipping %s %s: its record cannot be read: %s", self._noun, record_id, exc
                )
                continue
            self._records[record.id] = record
            self._store.usage.used += record.nbytes

    def add(self, record: CR, content: C) -> None:
        data = self._encode(content)
        usage = self._store.usage
        with self._store.atomic() as connection:
            usage.claim(self._noun, record.nbytes)
            try:
                blob_id = connection.execute(
                    blobs.insert().values(sha256=hashlib.sha256(data).hexdigest(), data=data)
                ).inserted_primary_key
                assert blob_id is not None
                connection.execute(
                    self._table.insert().values(
                        id=record.id,
                        record=self._adapter.dump_json(record).decode(),
                        nbytes=record.nbytes,
                        blob_id=blob_id[0],
                    )
                )
            except BaseException as exc:
                usage.release(record.nbytes)
                if isinstance(exc, OperationalError):
                    raise _refused(exc) from None
                raise
            self._records[record.id] = record

            def undo() -> None:
                if self._forget(record.id) is not None:
                    usage.release(record.nbytes)

            self._store.on_rollback(undo)
        self._remember(record.id, content)

    def get(self, record_id: str) -> CR | None:
        with self._store.lock:
            return self._records.get(record_id)

    def content(self, record_id: str) -> C | None:
        with self._store.lock:
            record = self._records.get(record_id)
            if record is None:
                return None
            cached = self._cache.get(record_id)
            if cached is not None:
                self._cache.move_to_end(record_id)
                return cached
            with self._store.atomic() as connection:
                row = connection.execute(
                    sa.select(blobs.c.sha256, blobs.c.data)
                    .join(self._table, self._table.c.blob_id == blobs.c.id)
                    .where(self._table.c.id == record_id)
                ).first()
            content = self._decoded(record, row)
            self._remember(record_id, content)
            return content

    def _decoded(self, record: CR, row: Any) -> C:
        damaged = Conflict(
            f"the stored content of {self._noun} {record.id} is damaged (it does not match "
            f"its checksum); delete the {self._noun} and create it again"
        )
        if row is None or hashlib.sha256(row.data).hexdigest() != row.sha256:
            logger.error("%s %s: stored content does not match its sha256", self._noun, record.id)
            raise damaged
        try:
            return self._decode(record, row.data)
        except (EngineError, ValueError, KeyError, OSError) as exc:
            logger.error("%s %s: stored content cannot be read: %s", self._noun, record.id, exc)
            raise damaged from None

    def _remember(self, record_id: str, content: C) -> None:
        size = content.nbytes
        limit = self._store.cache_bytes
        with self._store.lock:
            if size > limit or record_id not in self._records:
                return
            if record_id not in self._cache:
                self._cache[record_id] = content
                self._cached_bytes += size
            while self._cached_bytes > limit:
                _evicted_id, evicted = self._cache.popitem(last=False)
                self._cached_bytes -= evicted.nbytes

    def _forget(self, record_id: str) -> CR | None:
        record = self._records.pop(record_id, None)
        content = self._cache.pop(record_id, None)
        if content is not None:
            self._cached_bytes -= content.nbytes
        return record

    def remove(self, record_id: str) -> CR | None:
        with self._store.atomic() as connection:
            if record_id not in self._records:
                return None
            blob_id = connection.execute(
                sa.select(self._table.c.blob_id).where(self._table.c.id == record_id)
            ).scalar_one()
            try:
                connection.execute(self._table.delete().where(self._table.c.id == record_id))
                connection.execute(blobs.delete().where(blobs.c.id == blob_id))
            except OperationalError as exc:
                raise _refused(exc) from None
            record = self._forget(record_id)
            assert record is not None
            self._store.usage.release(record.nbytes)

            def undo() -> None:
                self._records[record.id] = record
                self._store.usage.used += record.nbytes

            self._store.on_rollback(undo)
            return record

    def select(self, keep: Callable[[CR], bool] | None = None) -> list[CR]:
        with self._store.lock:
            return [r for r in self._records.values() if keep is None or keep(r)]

    def __len__(self) -> int:
        with self._store.lock:
            return len(self._records)


class SQLiteWork(Collection[R], Generic[R]):
    """Jobs or sweeps: in memory, every change written through to the `work` table; history
    points are appended to `work_points` as they come (a record's row never repeats them)."""

    def __init__(self, store: SQLiteStore, kind: str, adapter: TypeAdapter[R]) -> None:
        self._store = store
        self._kind = kind
        self._adapter = adapter
        self._items: dict[str, R] = {}
        self._unsaved: set[str] = set()
        # (work id, series) -> (the list object written, how many of its points are written)
        self._written: dict[tuple[str, str], tuple[int, int]] = {}
        # work id -> the (index, epoch) of its snapshots written
        self._snapshots_written: dict[str, frozenset[tuple[int, int]]] = {}

    def load(self, connection: sa.Connection) -> None:
        rows = connection.execute(
            sa.select(work_table.c.id, work_table.c.record)
            .where(work_table.c.kind == self._kind)
            .order_by(work_table.c.seq)
        )
        loaded: dict[str, R] = {}
        for record_id, text in rows:
            try:
                loaded[record_id] = self._adapter.validate_json(text)
            except ValidationError as exc:
                logger.error(
                    "skipping %s %s: its record cannot be read: %s", self._kind, record_id, exc
                )
        points: dict[str, dict[str, list[HistoryPoint]]] = {}
        for work_id, series, text in connection.execute(
            sa.select(points_table.c.work_id, points_table.c.series, points_table.c.point)
            .where(points_table.c.work_id.in_(list(loaded)))
            .order_by(points_table.c.work_id, points_table.c.series, points_table.c.position)
        ):
            try:
                point = POINT.validate_json(text)
            except ValidationError as exc:
                logger.error(
                    "%s %s: skipping a history point that cannot be read: %s",
                    self._kind,
                    work_id,
                    exc,
                )
                continue
            points.setdefault(work_id, {}).setdefault(series, []).append(point)
        snapshots: dict[str, list[ParameterSnapshot]] = {}
        for work_id, index, epoch, data in connection.execute(
            sa.select(
                snapshots_table.c.work_id,
                snapshots_table.c.position,
                snapshots_table.c.epoch,
                snapshots_table.c.data,
            )
            .where(snapshots_table.c.work_id.in_(list(loaded)))
            .order_by(snapshots_table.c.work_id, snapshots_table.c.position)
        ):
            try:
                snapshot = decode_snapshot(index, epoch, data)
            except (ValueError, KeyError, OSError) as exc:
                logger.error(
                    "%s %s: skipping a snapshot that cannot be read: %s", self._kind, work_id, exc
                )
                continue
            snapshots.setdefault(work_id, []).append(snapshot)
        for record_id, record in loaded.items():
            live = record.with_histories(points.get(record_id, {}))
            live = live.with_parameter_snapshots(snapshots.get(record_id, []))
            self._items[record_id] = live
            self._mark_written(live)
            self._snapshots_written[record_id] = _snapshot_keys(live)

    def _mark_written(self, record: R) -> None:
        for series, history in record.histories().items():
            self._written[(record.id, series)] = (id(history), len(history))

    def _write_snapshots(self, connection: sa.Connection, record: R) -> None:
        """A finished record's snapshots: insert those not written yet, delete those thinned
        out since. Unfinished work's stay in memory: work interrupted by a restart runs again
        from its start, without them (writing them as they come measured +12% CPU on the
        tutorial job; once at the end, one insert of at most 100 rows)."""
        if not record.finished:
            return
        kept = {snapshot.index: snapshot for snapshot in record.parameter_snapshots()}
        written = self._snapshots_written.get(record.id, frozenset())
        current = _snapshot_keys(record)
        gone = [index for index, epoch in written - current]
        if gone:
            connection.execute(
                snapshots_table.delete().where(
                    (snapshots_table.c.work_id == record.id) & snapshots_table.c.position.in_(gone)
                )
            )
        new = sorted(current - written)
        if new:
            connection.execute(
                snapshots_table.insert(),
                [
                    {
                        "work_id": record.id,
                        "position": index,
                        "epoch": epoch,
                        "data": encode_snapshot(kept[index]),
                    }
                    for index, epoch in new
                ],
            )
        self._store.after_commit(lambda: self._snapshots_written.__setitem__(record.id, current))

    def _write(self, connection: sa.Connection, record: R) -> None:
        """The record's row, and the history points not written yet."""
        values = {
            "status": record.status,
            "record": self._adapter.dump_json(record.with_histories({})).decode(),
        }
        updated = connection.execute(
            work_table.update().where(work_table.c.id == record.id).values(**values)
        )
        if updated.rowcount == 0:
            connection.execute(work_table.insert().values(id=record.id, kind=self._kind, **values))
        for series, history in record.histories().items():
            list_id, count = self._written.get((record.id, series), (id(history), 0))
            if list_id != id(history) or count > len(history):  # replaced: write it anew
                connection.execute(
                    points_table.delete().where(
                        (points_table.c.work_id == record.id) & (points_table.c.series == series)
                    )
                )
                count = 0
            if count < len(history):
                connection.execute(
                    points_table.insert(),
                    [
                        {
                            "work_id": record.id,
                            "series": series,
                            "position": position,
                            "point": POINT.dump_json(point).decode(),
                        }
                        for position, point in enumerate(history[count:], start=count)
                    ],
                )
        self._write_snapshots(connection, record)
        self._store.after_commit(lambda: self._mark_written(record))

    def add(self, record: R) -> None:
        with self._store.atomic() as connection:
            self._write(connection, record)
            self._items[record.id] = record

            def undo() -> None:
                self._items.pop(record.id, None)

            self._store.on_rollback(undo)

    def get(self, record_id: str) -> R | None:
        with self._store.lock:
            record = self._items.get(record_id)
            return None if record is None else record.snapshot()

    def read(self, record_id: str, view: Callable[[R], T]) -> T | None:
        with self._store.lock:
            record = self._items.get(record_id)
            return None if record is None else view(record)

    def update(self, record_id: str, change: Callable[[R], T]) -> T | None:
        with self._store.lock:
            record = self._items.get(record_id)
            if record is None:
                return None
            result = change(record)
            self._save(record)
            return result

    def _save(self, record: R) -> None:
        """Write the record; one that cannot be written now stays in memory, written later."""
        try:
            with self._store.atomic() as connection:
                self._write(connection, record)
            self._unsaved.discard(record.id)
        except (InsufficientStorage, OperationalError):
            if record.id not in self._unsaved:
                logger.error(
                    "%s %s: its changes are kept in memory until they can be written",
                    self._kind,
                    record.id,
                )
            self._unsaved.add(record.id)

    def remove(self, record_id: str) -> R | None:
        with self._store.atomic() as connection:
            connection.execute(work_table.delete().where(work_table.c.id == record_id))
            connection.execute(points_table.delete().where(points_table.c.work_id == record_id))
            connection.execute(
                snapshots_table.delete().where(snapshots_table.c.work_id == record_id)
            )
            record = self._items.pop(record_id, None)
            if record is not None:

                def undo() -> None:
                    self._items[record_id] = record

                self._store.on_rollback(undo)
            return record

    def select(self, keep: Callable[[R], bool] | None = None) -> list[R]:
        with self._store.lock:
            return [r.snapshot() for r in self._items.values() if keep is None or keep(r)]

    def count(self, keep: Callable[[R], bool]) -> int:
        with self._store.lock:
            return sum(1 for r in self._items.values() if keep(r))

    def __len__(self) -> int:
        with self._store.lock:
            return len(self._items)


def _snapshot_keys(record: records.WorkRecord) -> frozenset[tuple[int, int]]:
    return frozenset((s.index, s.epoch) for s in record.parameter_snapshots())


class SQLiteAliases(MemoryAliases):
    """The aliases in memory, each change written through in its own transaction (or the
    caller's) and undone in memory if that transaction rolls back."""

    def __init__(self, store: SQLiteStore) -> None:
        super().__init__(store.lock)
        self._store = store

    def load(self, connection: sa.Connection) -> None:
        rows = connection.execute(
            sa.select(aliases_table.c.owner, aliases_table.c.alias, aliases_table.c.model_id)
        )
        for owner, alias, model_id in rows:
            super().assign(owner or None, alias, model_id)

    def assign(self, owner: str | None, alias: str, model_id: str) -> str | None:
        with self._store.atomic() as connection:
            connection.execute(
                aliases_table.insert()
                .prefix_with("OR REPLACE")
                .values(owner=owner or "", alias=alias, model_id=model_id)
            )
            previous = super().assign(owner, alias, model_id)
            self._store.on_rollback(lambda: self._restore(owner, alias, previous))
            return previous

    def remove(self, owner: str | None, alias: str) -> str | None:
        with self._store.atomic() as connection:
            connection.execute(
                aliases_table.delete().where(
                    (aliases_table.c.owner == (owner or "")) & (aliases_table.c.alias == alias)
                )
            )
            previous = super().remove(owner, alias)
            self._store.on_rollback(lambda: self._restore(owner, alias, previous))
            return previous

    def drop(self, model_id: str) -> None:
        with self._store.atomic() as connection:
            connection.execute(aliases_table.delete().where(aliases_table.c.model_id == model_id))
            owned = [key for key, named in self._models.items() if named == model_id]
            super().drop(model_id)
            self._store.on_rollback(lambda: self._models.update(dict.fromkeys(owned, model_id)))

    def _restore(self, owner: str | None, alias: str, model_id: str | None) -> None:
        if model_id is None:
            self._models.pop((owner, alias), None)
        else:
            self._models[(owner, alias)] = model_id


class SQLiteStore(Store):
    backend = "sqlite"
    durable = True

    def __init__(self, data_dir: Path, max_stored_bytes: int, *, cache_bytes: int) -> None:
        self.path = data_dir / DATABASE_FILE
        self.cache_bytes = cache_bytes
        self.usage = Usage(max_stored_bytes)
        self.lock = threading.RLock()
        self._depth = 0
        self._undo: list[Callable[[], None]] = []
        self._done: list[Callable[[], None]] = []
        self._engine = sa.create_engine(
            f"sqlite:///{self.path}",
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
        )
        sa.event.listen(self._engine, "connect", _configure_connection)
        self.connection = self._engine.connect()
        migrate(self.connection)
        self.datasets = SQLiteCatalog(
            self,
            datasets_table,
            "dataset",
            TypeAdapter(records.DatasetRecord),
            encode_dataset,
            decode_dataset,
        )
        self.models = SQLiteCatalog(
            self,
            models_table,
            "model",
            TypeAdapter(records.ModelRecord),
            encode_model,
            decode_model,
        )
        self.jobs = SQLiteWork(self, "job", TypeAdapter(records.JobRecord))
        self.sweeps = SQLiteWork(self, "sweep", TypeAdapter(records.SweepRecord))
        self.aliases = SQLiteAliases(self)
        self._keys: dict[str, IdempotencyKeys] = {}
        with self.connection.begin():
            for part in (self.datasets, self.models, self.jobs, self.sweeps, self.aliases):
                part.load(self.connection)
            for noun, key, fingerprint, resource_id in self.connection.execute(
                sa.select(
                    keys_table.c.noun,
                    keys_table.c.key,
                    keys_table.c.fingerprint,
                    keys_table.c.resource_id,
                )
            ):
                self.idempotency(noun).restore(key, fingerprint, resource_id)
        logger.info(
            "store %s: %d datasets, %d models, %d jobs, %d sweeps (%d bytes)",
            DATABASE_FILE,
            len(self.datasets),
            len(self.models),
            len(self.jobs),
            len(self.sweeps),
            self.usage.used,
        )

    @contextmanager
    def atomic(self) -> Iterator[sa.Connection]:
        """One transaction (nested calls join it); a refused write is InsufficientStorage."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.connection
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            self._undo, self._done = [], []
            transaction = self.connection.begin()
            try:
                yield self.connection
                transaction.commit()
                for done in self._done:
                    done()
            except BaseException as exc:
                if transaction.is_active:
                    transaction.rollback()
                for undo in reversed(self._undo):
                    undo()
                if isinstance(exc, OperationalError):
                    raise _refused(exc) from None
                raise
            finally:
                self._depth = 0
                self._undo, self._done = [], []

    def after_commit(self, done: Callable[[], None]) -> None:
        """Note in memory what the transaction wrote, once it is committed."""
        self._done.append(done)

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Undo a change to memory if the transaction it belongs to is rolled back."""
        self._undo.append(undo)

    def idempotency(self, noun: str) -> IdempotencyKeys:
        with self.lock:
            if noun not in self._keys:

                def write(key: str, fingerprint: str, resource_id: str) -> None:
                    with self.atomic() as connection:
                        connection.execute(
                            keys_table.insert()
                            .prefix_with("OR REPLACE")
                            .values(
                                noun=noun, key=key, fingerprint=fingerprint, resource_id=resource_id
                            )
                        )

                self._keys[noun] = IdempotencyKeys(noun, on_record=write)
            return self._keys[noun]

    def close(self) -> None:
        with self.lock:
            self.connection.close()
            self._engine.dispose()


def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: a crashed process loses nothing
    cursor.close()


class NewerDatabase(RuntimeError):
    """The file was written by a newer scratchnet."""


def migrate(connection: sa.Connection) -> None:
    """Upgrade the schema to this version's head; refuse a newer file."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin list, at every start
    config = alembic_config(connection)
    script = ScriptDirectory.from_config(config)
    current = MigrationContext.configure(connection).get_current_revision()
    connection.rollback()  # end the read's transaction
    head = script.get_current_head()
    known = {revision.revision for revision in script.walk_revisions()}
    if current is not None and current not in known:
        raise NewerDatabase(
            f"the database in the data directory has schema revision {current}, written by a "
            f"newer scratchnet; this version knows revisions up to {head}. Run the newer "
            "version, or start with another SCRATCHNET_DATA_DIR"
        )
    if current != head:
        logger.info("upgrading the database schema from %s to %s", current or "nothing", head)
        command.upgrade(config, "head")
        connection.commit()
