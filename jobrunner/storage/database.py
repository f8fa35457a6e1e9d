"""The database object every verb group shares: engines, transactions, busy retries.

All of it is synchronous and short; the engine reaches it from worker threads through
:class:`jobrunner.storage.client.AsyncStorage`. Every write is one short transaction; on
SQLite each takes the write lock at ``BEGIN IMMEDIATE`` so concurrent writers queue on
the busy timeout instead of deadlocking.

Two durability levels on SQLite: inserts commit with ``[database] synchronous`` (FULL
by default: an acknowledged enqueue survives a power loss); state transitions commit
with NORMAL, which survives a process crash; after a power loss the last few
transitions may be undone, and those jobs simply run again.
"""

from __future__ import annotations

import logging
import operator
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from .. import migrate as migrations
from ..config import DatabaseSettings
from ..errors import ConfigError, StorageError
from .dependencies import Settled, settling_begin, settling_end
from .dialects import Dialect, lock_for_transaction, upsert
from .sqlite import ChangeProbe, is_busy, sqlite_engine
from .sqlite_library import SqliteLibrary, same_library, sqlite_library, warn_if_unsafe

logger = logging.getLogger("jobrunner.store")

T = TypeVar("T")

BUSY_RETRIES = 4
#: Connections per engine that the hot path keeps checked out between transactions.
KEPT_CONNECTIONS = 2


class Prepared:
    """A Core statement compiled once for one dialect, run on a raw DBAPI cursor.

    The hot path (insert, ack, claim) skips SQLAlchemy's per-call machinery: the SQL
    text and parameter order are computed here once.
    """

    def __init__(self, statement: Any, dialect: Any, fields: Sequence[str] = ()) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        defaults = compiled.construct_params(_check=False)
        # Values fixed in the statement itself (state = 'executing', ...).
        self._fixed = {k: v for k, v in defaults.items() if v is not None}
        positions = compiled.positiontup
        self._positional = positions is not None
        self._names: tuple[str, ...] = tuple(positions) if positions else tuple(defaults)
        self._pick: Callable[[dict[str, Any]], Any] | None = operator.itemgetter(*positions) if positions else None
        if positions is not None and len(positions) == 1:
            single = operator.itemgetter(positions[0])
            self._pick = lambda values: (single(values),)
        #: Picks the bound values out of a record (a tuple with these ``fields``, see
        #: :meth:`params_of`): a slice when they lead the record in order, the cheapest.
        self._record: Callable[[Sequence[Any]], Any] | None = None
        if fields and set(self._names) <= set(fields):
            width = len(self._names)
            if tuple(fields[:width]) == self._names:
                self._record = operator.itemgetter(slice(0, width))
            else:
                self._record = operator.itemgetter(*(list(fields).index(name) for name in self._names))

    def params(self, values: dict[str, Any]) -> Any:
        """DBAPI parameters for ``values`` (positional or named, as the driver wants)."""
        merged = {**self._fixed, **values} if self._fixed else values
        if not self._positional:
            return merged
        return self._pick(merged) if self._pick is not None else ()

    def params_of(self, record: Sequence[Any]) -> Any:
        """DBAPI parameters picked from ``record``, a tuple with the ``fields`` given when
        this statement was prepared (the statement must bind only those, nothing fixed)."""
        assert self._record is not None
        picked = self._record(record)
        return picked if self._positional else dict(zip(self._names, picked, strict=True))


#: PostgreSQL keeps the first 63 bytes of an ``application_name``.
APPLICATION_NAME_LIMIT = 63


class Database:
    """The engines of one database and the ways to run a transaction on them.

    ``client_name`` names this process's sessions on PostgreSQL (``application_name``,
    seen in ``pg_stat_activity``) unless the URL or ``PGAPPNAME`` sets one; a runner
    passes its node id.
    """

    def __init__(self, settings: DatabaseSettings, client_name: str = "jobrunner") -> None:
        self.settings = settings
        #: The ``application_name`` jobrunner gives its PostgreSQL sessions (None: the URL's or
        #: ``PGAPPNAME``'s applies).
        self.application_name: str | None = client_name.encode()[:APPLICATION_NAME_LIMIT].decode(errors="ignore")
        try:
            url = make_url(settings.url)
        except ArgumentError as exc:
            raise ConfigError(f"database url {settings.url!r} is not a valid URL: {exc}") from None
        self.dialect = Dialect.named(url.get_backend_name())
        #: The SQLite library in use (None on PostgreSQL).
        self.sqlite: SqliteLibrary | None = None
        #: The driver's exception for "the database is busy" (raw on the hot path's DBAPI
        #: cursors, wrapped in DBAPIError elsewhere); SQLite only.
        self._busy_error: type[Exception] | None = None
        self._retried: tuple[type[Exception], ...] = (DBAPIError,)
        if self.dialect.name == "sqlite":
            self.sqlite = sqlite_library(settings.sqlite_library)
            self._busy_error = self.sqlite.module.OperationalError
            self._retried = (self._busy_error, DBAPIError)
            self.engine = sqlite_engine(url, settings.url, settings.synchronous, settings.busy_timeout, self.sqlite)
            level = "NORMAL" if settings.synchronous != "OFF" else "OFF"
            #: The engine of state transitions (SQLite: a lighter durability level).
            self.transitions = sqlite_engine(url, settings.url, level, settings.busy_timeout, self.sqlite)
        else:
            if "application_name" in url.query or os.environ.get("PGAPPNAME"):
                self.application_name = None
            connect_args = {"application_name": self.application_name} if self.application_name else {}
            try:
                self.engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
            except Exception as exc:  # noqa: BLE001 - any bad url is a configuration error
                raise ConfigError(f"database url {settings.url!r}: {exc}") from None
            self.transitions = self.engine
        self._closed = False
        #: Called (in the writing thread, after the commit) with the blocked dependents a
        #: transaction released or cancelled; the runner wakes topics and emits events.
        self.on_settled: Callable[[Settled], None] | None = None
        self._kept: dict[Engine, list[tuple[Any, Any]]] = {self.engine: [], self.transitions: []}

    def prepare(self, statement: Any, fields: Sequence[str] = ()) -> Prepared:
        """``statement`` compiled for this database (see :class:`Prepared`); ``fields``
        names the record type whose values :meth:`Prepared.params_of` binds."""
        return Prepared(statement, self.engine.dialect, fields)

    def read(self) -> Connection:
        """A connection for read-only work (SQLite: a deferred BEGIN, no write lock)."""
        return self.engine.connect().execution_options(jobrunner_read_only=True)

    def retrying(self, attempt_once: Callable[[], T]) -> T:
        """Run one transaction, retrying it while SQLite reports the database busy.

        A transaction that finds the database locked even after the busy timeout (or
        that SQLite refuses without waiting) was rolled back; it is tried again a few
        times with backoff before the error reaches the caller as StorageError.
        """
        delay = 0.01
        for attempt in range(1, BUSY_RETRIES + 2):
            try:
                return attempt_once()
            except self._retried as exc:
                orig = getattr(exc, "orig", exc)
                if self._busy_error is None or not isinstance(orig, self._busy_error) or not is_busy(orig) \
                        or attempt > BUSY_RETRIES:
                    raise StorageError(f"database {self.settings.url!r}: {orig}") from exc
                logger.info("database busy (%s); retrying the transaction in %.0f ms", orig, delay * 1000,
                            extra={"event": "db_busy_retry"})
            time.sleep(delay)
            delay = min(1.0, delay * 4)
        raise AssertionError("unreachable")

    def write(self, body: Callable[[Any], T], *, durable: bool = False) -> T:
        """Run ``body(cursor)`` on a DBAPI cursor in one write transaction; the hot path.

        ``durable`` commits at the insert durability level instead of the transitions'
        one. A few connections stay checked out between calls, which saves the pool's
        checkout and reset on every transaction. A connection whose transaction failed
        goes back to the pool instead.
        """
        engine = self.engine if durable else self.transitions
        kept = self._kept[engine]
        begin = self.dialect.begin_sql

        def once() -> T:
            settling_begin()
            try:
                proxy, cursor = kept.pop()
            except IndexError:
                proxy = engine.raw_connection()
                cursor = proxy.cursor()
            try:
                if begin:
                    cursor.execute(begin)
                try:
                    result = body(cursor)
                    proxy.commit()
                except BaseException:
                    proxy.rollback()
                    raise
            except BaseException:
                proxy.close()
                raise
            if len(kept) < KEPT_CONNECTIONS and not self._closed:
                kept.append((proxy, cursor))
            else:
                proxy.close()
            return result
        return self._settled(self.retrying(once))

    def _settled(self, result: T) -> T:
        """Announce what the transaction just committed settled; returns ``result``."""
        settled = settling_end()
        if settled is not None and self.on_settled is not None:
            self.on_settled(settled)
        return result

    def transaction(self, body: Callable[[Connection], T]) -> T:
        """Run ``body(connection)`` in one SQLAlchemy write transaction (durable level)."""
        def once() -> T:
            settling_begin()
            with self.engine.begin() as conn:
                return body(conn)
        return self._settled(self.retrying(once))

    def serialise(self, conn: Connection, key: str) -> None:
        """Make transactions that name ``key`` run one at a time (until ``conn`` commits)."""
        if not self.dialect.serial_writes:  # SQLite: the transaction already holds the write lock
            lock_for_transaction(conn, key)

    def upsert(
        self, conn: Connection, table: Table, values: Mapping[str, Any], keys: Sequence[str], updates: Sequence[str]
    ) -> None:
        """Insert ``values`` into ``table``, or where a row with the same ``keys`` exists,
        set its ``updates`` columns to the new values (one race-free statement)."""
        conn.execute(upsert(self.dialect.name, table, values, keys, updates))

    def migrate(self) -> list[migrations.Migration]:
        """Apply pending schema migrations; returns those applied now (retried while busy)."""
        return self.retrying(lambda: migrations.migrate(self.engine))

    def pending_migrations(self) -> list[migrations.Migration]:
        """Migrations not yet applied (a read: creates nothing, takes no write lock)."""
        with self.read() as conn, conn.begin():
            return migrations.pending_on(conn)

    def warn_if_unsafe(self) -> None:
        """Log a warning (once per process) when the SQLite library in use can lose a
        commit to a known SQLite bug; a running node calls it as it starts."""
        if self.sqlite is not None:
            warn_if_unsafe(self.sqlite, str(self.engine.url.database))

    def sharing_problem(self, dbapi: Any) -> str | None:
        """Why a caller's connection through the DB-API module ``dbapi`` must not work on
        this database inside this process, or None when it may."""
        if self.sqlite is None or dbapi is None or same_library(self.sqlite.module, dbapi):
            return None
        return (f"it opens the SQLite file through another library than jobrunner's {self.sqlite.describe()}, and "
                "two SQLite libraries on one file in one process release each other's locks and can corrupt it "
                "(https://sqlite.org/howtocorrupt.html); create your engine with "
                f"create_engine(url, module={self.sqlite.module.__name__}) or set [database] sqlite_library "
                "to the library your engine uses")

    def change_probe(self) -> ChangeProbe | None:
        """A cheap way to notice commits by other processes, or None where there is none."""
        if not self.dialect.file_probe:
            return None
        database = self.engine.url.database
        assert database is not None  # an SQLite database has a file: checked when it opened
        return ChangeProbe(os.path.abspath(database))

    def close(self) -> None:
        """Release every pooled connection."""
        self._closed = True
        for kept in self._kept.values():
            while kept:
                kept.pop()[0].close()
        self.engine.dispose()
        self.transitions.dispose()


__all__ = ["BUSY_RETRIES", "Database", "Prepared"]
