"""Storage: every SQL statement jobrunner runs, behind verbs named by state transitions.

Nothing above this module knows the SQL dialect. Where dialects differ, the difference
is isolated here and exposed as a capability flag (``serial_writes``), never as a type
check elsewhere.

All methods are synchronous and short; the engine calls them from worker threads.
Every write is one short transaction; on SQLite each takes the write lock at ``BEGIN
IMMEDIATE`` so concurrent writers queue on the busy timeout instead of deadlocking.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from . import migrate as migrations
from .config import DatabaseSettings
from .dialects import lock_for_transaction, upsert
from .errors import ConfigError, StorageError
from .job import ALL_STATES, Job
from .leases import LeaseVerbs
from .limits import TopicLimits
from .maintenance import MaintenanceVerbs, TopicControl, judge_running
from .payload import decode as _decode, decode_errors
from .schema import JOB_COLUMNS, jobs, topics
from .storage.limited import LimitedClaims

_EMPTY_LIST = "[]"

logger = logging.getLogger("jobrunner.store")

T = TypeVar("T")


@dataclass(slots=True)
class Ack:
    """One finished execution to record.

    ``kind`` is one of complete, retry, discard, cancel, snooze, release. The write
    only applies while the row is still ``executing`` at the same ``attempt``: zero
    rows means the job was rescued or cancelled meanwhile, and it is not overwritten.
    """

    kind: str
    job: Job
    at: float | None = None
    result: str | None = None
    errors: str | None = None
    applied: bool = field(default=False)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What a producer asks of one claim/ack cycle besides writing its acks.

    Claim up to ``limit`` jobs of ``topic`` for ``node`` at ``now``; with ``stage``,
    first make due scheduled and retryable jobs available; with ``running`` (the
    producer's (id, attempt) executions), first read the topic's control, and cap the
    claim to the parallelism in force (scaled, else ``parallelism``) minus ``taken``;
    with ``limits``, obey the topic's limits across nodes.
    """

    topic: str
    limit: int
    node: str
    now: float
    stage: bool = False
    running: Sequence[tuple[int, int]] | None = None
    parallelism: int | None = None
    taken: int = 0
    limits: TopicLimits | None = None


@dataclass(frozen=True, slots=True)
class CycleResult:
    """What one claim/ack cycle did: the jobs claimed (priority, then FIFO order), the
    topic's control when it was read, and, when a rate limit held jobs back, the time
    its window next has room (``retry_at``)."""

    claimed: list[Job]
    control: TopicControl | None = None
    retry_at: float | None = None


def _row_to_job(row: Sequence[Any]) -> Job:
    (id_, topic, worker, args, state, priority, attempt, max_attempts, errors, result,
     inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, cancelled_at,
     attempted_by) = row
    # Positional: the field order of Job is the column order of the table (checked below).
    # Decoding never raises: one unreadable row must not fail a claim or a listing.
    return Job(
        id_, topic, worker, _decode(args, "args"), state, priority, attempt, max_attempts,
        [] if errors == _EMPTY_LIST else decode_errors(errors), None if result is None else _decode(result, "result"),
        inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, cancelled_at, attempted_by,
    )


if tuple(f.name for f in fields(Job)) != JOB_COLUMNS:  # pragma: no cover - a schema/Job mismatch
    raise ImportError("jobrunner.job.Job fields must follow the columns of jobrunner.schema.jobs")

_ALL = [jobs.c[name] for name in JOB_COLUMNS]
_EXECUTING = and_(
    jobs.c.id == bindparam("b_id"),
    jobs.c.state == "executing",
    jobs.c.attempt == bindparam("b_attempt"),
)

# One conditional UPDATE per ack kind; executed with many parameter sets at once.
_ACK_STATEMENTS = {
    "complete": update(jobs).where(_EXECUTING).values(
        state="completed", completed_at=bindparam("b_at"), result=bindparam("b_result")
    ),
    "retry": update(jobs).where(_EXECUTING).values(
        state="retryable", scheduled_at=bindparam("b_at"), errors=bindparam("b_errors")
    ),
    "discard": update(jobs).where(_EXECUTING).values(
        state="discarded", discarded_at=bindparam("b_at"), errors=bindparam("b_errors")
    ),
    "cancel": update(jobs).where(_EXECUTING).values(
        state="cancelled", cancelled_at=bindparam("b_at"), errors=bindparam("b_errors")
    ),
    "snooze": update(jobs).where(_EXECUTING).values(
        state="scheduled", scheduled_at=bindparam("b_at"), attempt=jobs.c.attempt - 1
    ),
    "release": update(jobs).where(_EXECUTING).values(state="available", attempt=jobs.c.attempt - 1),
}
ACK_KINDS = tuple(_ACK_STATEMENTS)

_claimable = (
    select(jobs.c.id)
    .where(jobs.c.topic == bindparam("b_topic"), jobs.c.state == "available")
    .order_by(jobs.c.priority, jobs.c.scheduled_at, jobs.c.id)
    .limit(bindparam("b_limit"))
)
_CLAIM = (
    update(jobs)
    .where(jobs.c.id.in_(_claimable.scalar_subquery()))
    .values(
        state="executing",
        attempt=jobs.c.attempt + 1,
        attempted_at=bindparam("b_now"),
        attempted_by=bindparam("b_node"),
    )
    .returning(*_ALL)
)
# PostgreSQL: lock the chosen rows and skip those another node is claiming. The choice is
# a materialised CTE, so it runs once and its LIMIT applies before any row is locked (a
# subquery inside IN may be re-run by the planner and then claim more than LIMIT rows).
_CLAIMED = (
    _claimable.with_for_update(skip_locked=True).cte("claimed").prefix_with("MATERIALIZED", dialect="postgresql")
)
_CLAIM_SKIP_LOCKED = (
    update(jobs)
    .where(jobs.c.id.in_(select(_CLAIMED.c.id)))
    .values(
        state="executing",
        attempt=jobs.c.attempt + 1,
        attempted_at=bindparam("b_now"),
        attempted_by=bindparam("b_node"),
    )
    .returning(*_ALL)
)

_STAGE = (
    update(jobs)
    .where(
        jobs.c.topic == bindparam("b_topic"),
        or_(jobs.c.state == "scheduled", jobs.c.state == "retryable"),
        jobs.c.scheduled_at <= bindparam("b_now"),
    )
    .values(state="available")
)
_INSERT = jobs.insert().returning(*_ALL)
_PAUSED = select(topics.c.paused, topics.c.parallelism).where(topics.c.topic == bindparam("b_topic"))
_LIVE_CHECK = select(jobs.c.id, jobs.c.attempt).where(
    jobs.c.id == bindparam("b_id"), jobs.c.state == "executing"
)


BUSY_RETRIES = 4
#: Connections per engine that the hot path keeps checked out between transactions.
_KEPT_CONNECTIONS = 2


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _enable_wal(cursor: Any, database: str, timeout: float) -> None:
    """Switch the file to WAL mode, waiting out other openers.

    Changing the journal mode needs an exclusive lock and SQLite answers "database is
    locked" at once (without its busy handler) while another connection is opening
    the same fresh file, so retry with a short backoff for up to ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode and str(mode[0]).lower() == "wal":
                return
            mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            if time.monotonic() >= deadline:
                raise StorageError(f"database {database!r}: still locked after {timeout:g}s: {exc}") from None
            time.sleep(delay)
            delay = min(0.05, delay * 2)
            continue
        if mode and str(mode[0]).lower() == "wal":
            return
        raise StorageError(f"database {database!r}: could not enable WAL mode (got {mode and mode[0]})")


class _StaleAcks(Exception):
    """Internal: a batch of acks touched fewer rows than expected; redo it checking each."""


class _Prepared:
    """A Core statement compiled once for one dialect, run on a raw DBAPI cursor.

    The hot path (insert, ack, claim) skips SQLAlchemy's per-call machinery: the SQL
    text and parameter order are computed here once.
    """

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        defaults = compiled.construct_params(_check=False)
        # Values fixed in the statement itself (state = 'executing', ...).
        self._fixed = {k: v for k, v in defaults.items() if v is not None}
        positions = compiled.positiontup
        self._positional = positions is not None
        self._pick: Callable[[dict[str, Any]], Any] | None = operator.itemgetter(*positions) if positions else None
        if positions is not None and len(positions) == 1:
            single = operator.itemgetter(positions[0])
            self._pick = lambda values: (single(values),)

    def params(self, values: dict[str, Any]) -> Any:
        """DBAPI parameters for ``values`` (positional or named, as the driver wants)."""
        merged = {**self._fixed, **values} if self._fixed else values
        if not self._positional:
            return merged
        return self._pick(merged) if self._pick is not None else ()


class ChangeProbe:
    """Notices commits to an SQLite file by looking at its write-ahead log.

    Every commit in WAL mode writes to ``<file>-wal``, changing its size or
    modification time; ``os.stat`` costs about a microsecond and takes no lock, where
    ``PRAGMA data_version`` costs tens of microseconds of file locking. A change missed
    here (two commits of the same size within one clock tick) is still found by the
    topic's poll.
    """

    def __init__(self, path: str) -> None:
        self._paths = (path + "-wal", path)

    def version(self) -> tuple[int, ...]:
        """A value that changes when someone commits."""
        marks: list[int] = []
        for path in self._paths:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                marks.extend((0, 0, 0))
            else:
                marks.extend((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(marks)

    def close(self) -> None:
        """Nothing to release (kept for probes that hold a connection)."""


_INSERT_COLUMNS = (
    "topic", "worker", "args", "state", "priority", "attempt", "max_attempts", "errors",
    "inserted_at", "scheduled_at",
)


class Store(MaintenanceVerbs, LeaseVerbs):
    """The jobs table, reached through SQLAlchemy engines.

    Verbs: :meth:`migrate`, :meth:`insert_jobs`, :meth:`ack_and_claim` (stage due
    jobs, record finished executions and claim new ones in one transaction),
    :meth:`ack_control_and_claim` (the same, with the topic's control read first),
    :meth:`stage_due`, :meth:`get_job`, :meth:`list_jobs`, :meth:`stats`,
    :meth:`count`; off the hot path (see :mod:`jobrunner.maintenance`):
    :meth:`heartbeat`, :meth:`rescue_orphans`, :meth:`cancel_job`, :meth:`retry_jobs`,
    :meth:`set_paused`, :meth:`control`, :meth:`prune`.

    Two durability levels on SQLite: inserts commit with ``[database] synchronous``
    (FULL by default: an acknowledged enqueue survives a power loss); state
    transitions commit with NORMAL, which survives a process crash; after a power
    loss the last few transitions may be undone, and those jobs simply run again.
    """

    _row_to_job = staticmethod(_row_to_job)

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        try:
            url = make_url(settings.url)
        except ArgumentError as exc:
            raise ConfigError(f"database url {settings.url!r} is not a valid URL: {exc}") from None
        self.dialect = url.get_backend_name()
        #: True when the database takes one writer at a time (SQLite): callers
        #: serialise their own writes instead of queueing on the lock.
        self.serial_writes = self.dialect == "sqlite"
        #: True when ids of rows inserted in one transaction are consecutive, so a bulk
        #: insert needs no RETURNING (SQLite AUTOINCREMENT under the write lock).
        self._sequential_ids = self.dialect == "sqlite"
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(url, settings.synchronous)
            self._transitions = self._sqlite_engine(url, "NORMAL" if settings.synchronous != "OFF" else "OFF")
            self._begin_sql: str | None = "BEGIN IMMEDIATE"
            claim = _CLAIM
        else:
            try:
                self.engine = create_engine(url, pool_pre_ping=True)
            except Exception as exc:  # noqa: BLE001 - any bad url is a configuration error
                raise ConfigError(f"database url {settings.url!r}: {exc}") from None
            self._transitions = self.engine
            self._begin_sql = None
            claim = _CLAIM_SKIP_LOCKED
        self._closed = False
        self._kept: dict[Engine, list[tuple[Any, Any]]] = {self.engine: [], self._transitions: []}
        dialect = self.engine.dialect
        self._claim = _Prepared(claim, dialect)
        self._stage = _Prepared(_STAGE, dialect)
        self._paused = _Prepared(_PAUSED, dialect)
        #: Prepared "which of these n ids are cancelled" statements, by n.
        self._cancelled_among: dict[int, _Prepared] = {}
        self._acks = {kind: _Prepared(stmt, dialect) for kind, stmt in _ACK_STATEMENTS.items()}
        self._insert_returning = _Prepared(_INSERT.values(dict.fromkeys(_INSERT_COLUMNS)), dialect)
        self._insert_plain = _Prepared(jobs.insert().values(dict.fromkeys(_INSERT_COLUMNS)), dialect)
        self._limited = LimitedClaims(
            lambda statement: _Prepared(statement, dialect), self.serial_writes, claim, _row_to_job, _ALL
        )

    # ------------------------------------------------------------ set-up

    def _sqlite_engine(self, url: Any, synchronous: str) -> Engine:
        database = url.database
        if not database or database == ":memory:" or url.query.get("mode") == "memory":
            raise ConfigError(
                f"database url {self.settings.url!r}: jobrunner needs an SQLite file "
                "(an in-memory database is private to one connection)"
            )
        directory = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(directory):
            raise StorageError(f"database {database!r}: directory {directory!r} does not exist")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": self.settings.busy_timeout},
            pool_size=8,
            max_overflow=16,
        )
        busy_ms = int(self.settings.busy_timeout * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            # Take transaction control from the sqlite3 module: we issue BEGIN ourselves.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            _enable_wal(cursor, database, self.settings.busy_timeout)
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the lock up front; read-only work asks for a deferred BEGIN.
            if conn.get_execution_options().get("jobrunner_read_only"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _read(self) -> Connection:
        conn = self.engine.connect()
        return conn.execution_options(jobrunner_read_only=True)

    def _retrying(self, attempt_once: Callable[[], T]) -> T:
        """Run one transaction, retrying it while SQLite reports the database busy.

        A transaction that finds the database locked even after the busy timeout (or
        that SQLite refuses without waiting) was rolled back; it is tried again a few
        times with backoff before the error reaches the caller as StorageError.
        """
        delay = 0.01
        for attempt in range(1, BUSY_RETRIES + 2):
            try:
                return attempt_once()
            except (sqlite3.OperationalError, DBAPIError) as exc:
                orig = getattr(exc, "orig", exc)
                if not isinstance(orig, sqlite3.OperationalError) or not _is_busy(orig) or attempt > BUSY_RETRIES:
                    raise StorageError(f"database {self.settings.url!r}: {orig}") from exc
                logger.info("database busy (%s); retrying the transaction in %.0f ms", orig, delay * 1000,
                            extra={"event": "db_busy_retry"})
            time.sleep(delay)
            delay = min(1.0, delay * 4)
        raise AssertionError("unreachable")

    def _write(self, engine: Engine, body: Callable[[Any], T]) -> T:
        """Run ``body(cursor)`` on a DBAPI cursor in one write transaction; the hot path.

        A few connections stay checked out between calls (``_kept``), which saves the
        pool's checkout and reset on every transaction. A connection whose transaction
        failed goes back to the pool instead.
        """
        kept = self._kept[engine]

        def once() -> T:
            try:
                proxy, cursor = kept.pop()
            except IndexError:
                proxy = engine.raw_connection()
                cursor = proxy.cursor()
            try:
                if self._begin_sql:
                    cursor.execute(self._begin_sql)
                try:
                    result = body(cursor)
                    proxy.commit()
                except BaseException:
                    proxy.rollback()
                    raise
            except BaseException:
                proxy.close()
                raise
            if len(kept) < _KEPT_CONNECTIONS and not self._closed:
                kept.append((proxy, cursor))
            else:
                proxy.close()
            return result
        return self._retrying(once)

    def _transaction(self, body: Callable[[Connection], T]) -> T:
        """Run ``body(connection)`` in one SQLAlchemy write transaction (durable level)."""
        def once() -> T:
            with self.engine.begin() as conn:
                return body(conn)
        return self._retrying(once)

    def _ack_statement(self, kind: str) -> Any:
        return _ACK_STATEMENTS[kind]

    def _serialise(self, conn: Connection, key: str) -> None:
        if not self.serial_writes:  # SQLite: the transaction already holds the write lock
            lock_for_transaction(conn, key)

    def _upsert(
        self, conn: Connection, table: Table, values: Mapping[str, Any], keys: Sequence[str], updates: Sequence[str]
    ) -> None:
        conn.execute(upsert(self.dialect, table, values, keys, updates))

    def migrate(self) -> list[migrations.Migration]:
        """Apply pending schema migrations; returns those applied now (retried while busy)."""
        return self._retrying(lambda: migrations.migrate(self.engine))

    def pending_migrations(self) -> list[migrations.Migration]:
        """Migrations not yet applied (a read: creates nothing, takes no write lock)."""
        with self._read() as conn, conn.begin():
            return migrations.pending_on(conn)

    def change_probe(self) -> ChangeProbe | None:
        """A cheap way to notice commits by other processes, or None where there is none."""
        if self.dialect != "sqlite":
            return None
        database = self.engine.url.database
        assert database is not None  # an SQLite store has a file: checked when it opened
        return ChangeProbe(os.path.abspath(database))

    def close(self) -> None:
        """Release every pooled connection."""
        self._closed = True
        for kept in self._kept.values():
            while kept:
                kept.pop()[0].close()
        self.engine.dispose()
        self._transitions.dispose()

    # ------------------------------------------------------------ writes

    def insert_jobs(self, rows: Sequence[dict[str, Any]]) -> list[Job]:
        """Insert rows (column → value, JSON columns already encoded) in one transaction.

        Every row has the keys of ``_INSERT_COLUMNS``; an optional ``decoded_args``
        key holds the arguments already decoded (saves decoding them again). Returns
        the stored jobs in the order given.
        """
        if not rows:
            return []
        if len(rows) == 1 or not self._sequential_ids:
            def insert_returning(cursor: Any) -> list[Job]:
                stored = []
                for row in rows:
                    cursor.execute(self._insert_returning.sql, self._insert_returning.params(row))
                    stored.append(_row_to_job(cursor.fetchone()))
                return stored
            return self._write(self.engine, insert_returning)

        def insert_many(cursor: Any) -> int:
            cursor.executemany(self._insert_plain.sql, [self._insert_plain.params(r) for r in rows])
            last_id: int = cursor.execute("SELECT last_insert_rowid()").fetchone()[0]
            return last_id
        first = self._write(self.engine, insert_many) - len(rows) + 1
        # Positional arguments in Job's field order (checked against the columns at import).
        return [
            Job.of(first + i, r["topic"], r["worker"],
                r["decoded_args"] if "decoded_args" in r else json.loads(r["args"]),
                r["state"], r["priority"], r["attempt"], r["max_attempts"], [], None,
                r["inserted_at"], r["scheduled_at"])
            for i, r in enumerate(rows)
        ]

    def ack_and_claim(
        self,
        acks: Sequence[Ack],
        topic: str | None = None,
        limit: int = 0,
        node: str = "",
        now: float = 0.0,
        stage: bool = False,
    ) -> list[Job]:
        """Record finished executions and claim up to ``limit`` jobs of ``topic``, atomically.

        With ``stage``, scheduled and retryable jobs of ``topic`` that are due become
        available first. Each ack's ``applied`` is set to whether its row was still
        executing at that attempt. Claimed jobs become ``executing`` with ``attempt``
        + 1, stamped with ``now`` and ``node``; they are returned in priority, then
        FIFO, order.
        """
        if topic is None:
            return self.cycle(acks, None).claimed
        return self.cycle(acks, ClaimRequest(topic, limit, node, now, stage)).claimed

    def ack_control_and_claim(
        self,
        acks: Sequence[Ack],
        topic: str,
        limit: int,
        node: str,
        now: float,
        stage: bool,
        running: Iterable[tuple[int, int]],
    ) -> tuple[list[Job], TopicControl]:
        """:meth:`ack_and_claim`, reading the topic's control first in the same transaction.

        The control says whether ``topic`` is paused (then nothing is staged or
        claimed) and which ``running`` (id, attempt) jobs were cancelled or lost meanwhile (see
        :meth:`control`). A producer that would both check its control and claim saves
        a round trip this way.
        """
        result = self.cycle(acks, ClaimRequest(topic, limit, node, now, stage, list(running)))
        assert result.control is not None
        return result.claimed, result.control

    def cycle(self, acks: Sequence[Ack], request: ClaimRequest | None) -> CycleResult:
        """Record finished executions, then serve ``request``, in one transaction.

        With ``request.running``, the topic's control is read first: a paused topic
        stages and claims nothing, and the claim is capped to the parallelism in force
        (the one the topic was scaled to, else ``request.parallelism``) minus
        ``request.taken``. With ``request.limits``, the claim takes the topic's claim lock
        and claims only what the limits across nodes let start (:mod:`jobrunner.storage.limited`).
        """
        try:
            return self._ack_and_claim(acks, request, checked=False)
        except _StaleAcks:
            return self._ack_and_claim(acks, request, checked=True)

    def _ack_and_claim(self, acks: Sequence[Ack], request: ClaimRequest | None, checked: bool) -> CycleResult:
        def body(cursor: Any) -> CycleResult:
            if acks:
                self._apply_acks(cursor, acks, checked)
            if request is None:
                return CycleResult([])
            topic, limit, now = request.topic, request.limit, request.now
            if request.limits is not None:
                # Before the control read and the staging: every claimer of the topic
                # takes this lock first, so none waits on rows another one holds.
                self._limited.serialise(cursor, topic)
            control = None
            if request.running is not None:
                control = self._read_control(cursor, topic, request.running, request.node)
                if control.paused:
                    return CycleResult([], control)
                if request.parallelism is not None:
                    in_force = request.parallelism if control.parallelism is None else control.parallelism
                    limit = min(limit, in_force - request.taken)
            if request.stage:
                cursor.execute(self._stage.sql, self._stage.params({"b_topic": topic, "b_now": now}))
            if limit <= 0:
                return CycleResult([], control)
            if request.limits is not None:
                claimed, retry_at = self._limited.claim(cursor, topic, request.limits, limit, now, request.node)
                return CycleResult(claimed, control, retry_at)
            cursor.execute(
                self._claim.sql,
                self._claim.params({"b_topic": topic, "b_limit": limit, "b_now": now, "b_node": request.node}),
            )
            return CycleResult([_row_to_job(r) for r in cursor.fetchall()], control)
        result = self._write(self._transitions, body)
        result.claimed.sort(key=lambda j: (j.priority, j.scheduled_at, j.id))
        return result

    def _read_control(
        self, cursor: Any, topic: str, running: Sequence[tuple[int, int]], node: str
    ) -> TopicControl:
        """:meth:`control`, inside the caller's transaction (prepared statements, raw cursor)."""
        cursor.execute(self._paused.sql, self._paused.params({"b_topic": topic}))
        row = cursor.fetchone()
        rows: list[Any] = []
        if running:
            check = self._cancelled_among.get(len(running))
            if check is None:
                ids: list[BindParameter[Any]] = [bindparam(f"b_id{i}") for i in range(len(running))]
                statement = select(jobs.c.id, jobs.c.state, jobs.c.attempt, jobs.c.attempted_by).where(
                    jobs.c.id.in_(ids)
                )
                check = self._cancelled_among[len(running)] = _Prepared(statement, self.engine.dialect)
            cursor.execute(check.sql, check.params({f"b_id{i}": job_id for i, (job_id, _) in enumerate(running)}))
            rows = cursor.fetchall()
        cancelled, lost = judge_running(running, node, rows)
        return TopicControl(bool(row and row[0]), cancelled, lost, None if row is None else row[1])

    def stage_due(self, topic: str, now: float) -> int:
        """Make scheduled and retryable jobs of ``topic`` due by ``now`` available."""
        def body(cursor: Any) -> int:
            cursor.execute(self._stage.sql, self._stage.params({"b_topic": topic, "b_now": now}))
            staged: int = cursor.rowcount
            return staged
        return self._write(self._transitions, body)

    def _apply_acks(self, cursor: Any, acks: Sequence[Ack], checked: bool) -> None:
        live: set[tuple[int, int]] | None = None
        if checked:
            live = set()
            check = _Prepared(_LIVE_CHECK, self.engine.dialect)
            for ack in acks:
                cursor.execute(check.sql, check.params({"b_id": ack.job.id}))
                row = cursor.fetchone()
                if row is not None:
                    live.add((row[0], row[1]))
        by_kind: dict[str, list[Any]] = {}
        for ack in acks:
            ack.applied = live is None or (ack.job.id, ack.job.attempt) in live
            if not ack.applied:
                continue
            job = ack.job
            # Each kind's statement takes the subset it binds; the other keys are ignored.
            params = {"b_id": job.id, "b_attempt": job.attempt, "b_at": ack.at, "b_result": ack.result,
                      "b_errors": ack.errors}
            by_kind.setdefault(ack.kind, []).append(self._acks[ack.kind].params(params))
        for kind, params_list in by_kind.items():
            cursor.executemany(self._acks[kind].sql, params_list)
            if cursor.rowcount != len(params_list):
                if checked:
                    raise StorageError(f"ack of {kind} touched {cursor.rowcount} of {len(params_list)} rows")
                raise _StaleAcks()

    # ------------------------------------------------------------ reads

    def get_job(self, job_id: int) -> Job | None:
        """The job with that id, or None."""
        with self._read() as conn, conn.begin():
            row = conn.execute(select(*_ALL).where(jobs.c.id == job_id)).first()
        return None if row is None else _row_to_job(row)

    def list_jobs(
        self,
        topic: str | None = None,
        state: str | None = None,
        limit: int = 100,
        worker: str | None = None,
        newest_first: bool = True,
    ) -> list[Job]:
        """Jobs filtered by topic, state and worker, newest first by default."""
        query = select(*_ALL)
        if topic is not None:
            query = query.where(jobs.c.topic == topic)
        if state is not None:
            query = query.where(jobs.c.state == state)
        if worker is not None:
            query = query.where(jobs.c.worker == worker)
        query = query.order_by(jobs.c.id.desc() if newest_first else jobs.c.id.asc()).limit(limit)
        with self._read() as conn, conn.begin():
            return [_row_to_job(r) for r in conn.execute(query)]

    def stats(self, topics: Iterable[str] = ()) -> dict[str, dict[str, int]]:
        """Job counts per topic and state; every state is present for every topic named."""
        counts: dict[str, dict[str, int]] = {t: dict.fromkeys(ALL_STATES, 0) for t in topics}
        query = select(jobs.c.topic, jobs.c.state, func.count()).group_by(jobs.c.topic, jobs.c.state)
        with self._read() as conn, conn.begin():
            for topic, state, count in conn.execute(query):
                counts.setdefault(topic, dict.fromkeys(ALL_STATES, 0))[state] = count
        return counts

    def count(self, topic: str | None = None, states: Iterable[str] | None = None) -> int:
        """How many jobs match ``topic`` and ``states``."""
        query = select(func.count()).select_from(jobs)
        if topic is not None:
            query = query.where(jobs.c.topic == topic)
        if states is not None:
            query = query.where(jobs.c.state.in_(list(states)))
        with self._read() as conn, conn.begin():
            return int(conn.execute(query).scalar_one())


__all__ = ["ACK_KINDS", "Ack", "StorageError", "Store"]
