"""Storage of job dependencies: linking, and settling dependents when a job finishes.

A job enqueued with ``depends_on`` has a row per dependency in
``jobrunner_dependencies`` and waits in state ``blocked``, which no claim looks at (the
claim stays a range scan of ``available`` jobs). Every transaction that finishes a job
(an ack, a cancel, a rescue that discards, an external worker's conclusion) calls
:func:`settle` before it commits, which

- releases each blocked dependent whose dependencies are now all done (completed, or
  failed with ``on_failure = 'run'``): ``available``, or ``scheduled`` when it was
  enqueued to run later;
- cancels each blocked dependent of a job that ended ``discarded`` or ``cancelled``
  (unless it said ``on_failure = 'run'``), with an error naming that dependency, and
  settles the dependents of those in turn.

Where the database notifies (PostgreSQL), the transaction that releases dependents also
tells every node that their topics have available jobs, as an insert does.

Concurrency on PostgreSQL: the dependents are locked (in id order) before their
dependencies' states are read, in a statement of its own, so of two transactions
finishing a dependent's last two dependencies at once, the second sees the first's
commit and releases it. SQLite runs one writer at a time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, cast

from sqlalchemy import Connection, bindparam, case, select, update
from sqlalchemy.sql import Executable

from ..job import Job, JobState, iso
from .dialects import Dialect
from .notices import INSERTED, NOTIFY, payload
from .schema import JOB_COLUMNS, dependencies, jobs

_ALL = [jobs.c[name] for name in JOB_COLUMNS]
#: What the transaction running in this thread settled so far (announced after its commit).
_pending = threading.local()
#: States in which a dependency counts as failed.
FAILED = frozenset({"discarded", "cancelled"})
#: Ids per statement when looking up dependents.
_CHUNK = 64


class Statements(Protocol):
    """Runs Core statements inside the caller's transaction."""

    #: True when the database can notify other nodes (see :mod:`.notices`).
    notifies: bool

    def rows(self, statement: Executable) -> Sequence[Sequence[Any]]:
        """Execute ``statement``; its rows (empty when it returns none)."""


class OnConnection:
    """:class:`Statements` on a SQLAlchemy connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.notifies = Dialect.named(conn.dialect.name).notifies

    def rows(self, statement: Executable) -> Sequence[Sequence[Any]]:
        """Execute ``statement``; its rows (empty when it returns none)."""
        result = self.conn.execute(statement)
        return result.all() if result.returns_rows else []


class OnCursor:
    """:class:`Statements` on a raw DBAPI cursor (the hot path's transactions)."""

    _lookups: ClassVar[dict[tuple[str, int], tuple[str, list[str] | None]]] = {}

    def __init__(self, cursor: Any, dialect: Any) -> None:
        self.cursor = cursor
        self.dialect = dialect
        self.notifies = Dialect.named(dialect.name).notifies

    def rows(self, statement: Executable) -> Sequence[Sequence[Any]]:
        """Execute ``statement``; its rows (empty when it returns none)."""
        compiled: Any = cast(Any, statement).compile(dialect=self.dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.params
        order = compiled.positiontup
        self.cursor.execute(compiled.string, tuple(params[k] for k in order) if order is not None else params)
        return self.cursor.fetchall() if self.cursor.description else []

    def dependents_of(self, ids: Sequence[int]) -> list[int]:
        """Ids of jobs that depend on any of ``ids`` (one prepared statement per size)."""
        key = (self.dialect.name, len(ids))
        prepared = self._lookups.get(key)
        if prepared is None:
            statement = select(dependencies.c.job_id).where(
                dependencies.c.depends_on.in_([bindparam(f"b_id{i}") for i in range(len(ids))])
            )
            compiled: Any = statement.compile(dialect=self.dialect)
            prepared = self._lookups[key] = (compiled.string, compiled.positiontup)
        sql, order = prepared
        values = {f"b_id{i}": job_id for i, job_id in enumerate(ids)}
        self.cursor.execute(sql, tuple(values[k] for k in order) if order is not None else values)
        return [row[0] for row in self.cursor.fetchall()]


@dataclass(slots=True)
class Settled:
    """Dependents changed by a transaction: released (now available or scheduled) and
    cancelled (with the reason naming the dependency)."""

    released: list[Job] = field(default_factory=list)
    cancelled: list[tuple[Job, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.released or self.cancelled)

    def add(self, other: Settled) -> None:
        """Take in what ``other`` changed."""
        self.released.extend(other.released)
        self.cancelled.extend(other.cancelled)


def _dependents(sql: Statements, ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start:start + _CHUNK])
        if isinstance(sql, OnCursor):
            found.update(sql.dependents_of(chunk))
        else:
            found.update(r[0] for r in sql.rows(
                select(dependencies.c.job_id).where(dependencies.c.depends_on.in_(chunk))))
    return found


def verdict(edges: Iterable[tuple[int, str, str | None]]) -> tuple[str, int | None, str | None]:
    """What to do with a blocked job given its (dependency id, on_failure, dependency state)
    edges: ``("cancel", id, state)`` for the first failed dependency it must not run
    without, ``("release", None, None)`` when every dependency is done, else ``("wait", …)``.
    A dependency that no longer exists (pruned once finished) counts as done."""
    waiting = False
    for dep_id, on_failure, state in sorted(edges):
        if state in FAILED:
            if on_failure != "run":
                return "cancel", dep_id, state
        elif state is not None and state != "completed":
            waiting = True
    return ("wait", None, None) if waiting else ("release", None, None)


def settle(sql: Statements, finished: Sequence[int], now: float, decode: Callable[[Sequence[Any]], Job]) -> Settled:
    """Release or cancel the blocked dependents of the ``finished`` jobs (and of those
    cancelled in turn), inside the caller's transaction. ``now`` stamps cancellations and
    decides whether a released job is due."""
    settled = Settled()
    frontier = list(finished)
    while frontier:
        waiting = _dependents(sql, frontier)
        frontier = []
        if not waiting:
            break
        blocked = [decode(r) for r in sql.rows(
            select(*_ALL).where(jobs.c.id.in_(sorted(waiting)), jobs.c.state == JobState.BLOCKED)
            .order_by(jobs.c.id).with_for_update()
        )]
        if not blocked:
            break
        edges: dict[int, list[tuple[int, str, str | None]]] = {job.id: [] for job in blocked}
        for job_id, dep_id, on_failure, state in sql.rows(
            select(dependencies.c.job_id, dependencies.c.depends_on, dependencies.c.on_failure, jobs.c.state)
            .select_from(dependencies.outerjoin(jobs, jobs.c.id == dependencies.c.depends_on))
            .where(dependencies.c.job_id.in_(list(edges)))
        ):
            edges[job_id].append((dep_id, on_failure, state))
        release = []
        for job in blocked:
            action, dep_id, dep_state = verdict(edges[job.id])
            if action == "release":
                release.append(job.id)
            elif action == "cancel":
                reason = f"dependency {dep_id} was {dep_state}"
                cancelled = cancel_blocked(sql, job, reason, now)
                if cancelled is not None:
                    settled.cancelled.append((cancelled, reason))
                    frontier.append(job.id)
        if release:
            settled.released.extend(decode(r) for r in sql.rows(
                update(jobs).where(jobs.c.id.in_(release), jobs.c.state == JobState.BLOCKED)
                .values(state=case((jobs.c.scheduled_at > now, "scheduled"), else_="available"))
                .returning(*_ALL)
            ))
    if sql.notifies:
        # Other nodes may serve the released jobs' topics: wake them at this commit.
        for topic in sorted({job.topic for job in settled.released if job.state == JobState.AVAILABLE}):
            sql.rows(NOTIFY.params(b_payload=payload(INSERTED, topic)))
    return settled


def cancel_blocked(sql: Statements, job: Job, reason: str, now: float) -> Job | None:
    """Cancel the blocked ``job`` for ``reason`` (an ``errors`` entry says why); None if it
    was no longer blocked."""
    entry = {"attempt": job.attempt, "at": iso(now), "error": f"cancelled: {reason}", "traceback": None}
    errors = [*job.errors, entry]
    rows = sql.rows(
        update(jobs).where(jobs.c.id == job.id, jobs.c.state == JobState.BLOCKED)
        .values(state="cancelled", cancelled_at=now, errors=json.dumps(errors)).returning(jobs.c.id)
    )
    return job.evolve(state="cancelled", cancelled_at=now, errors=errors) if rows else None


def record(settled: Settled) -> Settled:
    """Remember ``settled`` for :func:`settling_end` of this thread's transaction."""
    pending: Settled | None = getattr(_pending, "settled", None)
    if pending is not None:
        pending.add(settled)
    return settled


def settling_begin() -> None:
    """A write transaction starts in this thread (each try of it starts afresh)."""
    _pending.settled = Settled()


def settling_end() -> Settled | None:
    """The transaction committed: what it released or cancelled (None: nothing)."""
    settled: Settled | None = getattr(_pending, "settled", None)
    _pending.settled = None
    return settled if settled else None


def settle_on(conn: Connection, finished: Sequence[int], now: float, decode: Callable[[Sequence[Any]], Job]) -> Settled:
    """:func:`settle` inside ``conn``'s transaction, remembered for its commit."""
    return record(settle(OnConnection(conn), finished, now, decode))


__all__ = [
    "FAILED", "OnConnection", "OnCursor", "Settled", "Statements", "cancel_blocked", "record", "settle", "settle_on",
    "settling_begin", "settling_end", "verdict",
]
