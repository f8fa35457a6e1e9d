"""Enqueueing inside the caller's transaction (``runner.enqueue(..., connection=conn)``).

The job rows are written on the caller's SQLAlchemy ``Connection`` or ORM ``Session``, so
they commit with the caller's own changes and vanish if those roll back. Nobody is woken
before the commit:

* on PostgreSQL the ``NOTIFY`` rides in the same transaction and is delivered by the
  server only at commit (to every node, this one included);
* on SQLite a ``Session`` wakes this process's topics from its ``after_commit`` hook; a
  plain ``Connection`` has no such hook, so the runner's commit watcher notices the commit
  within ``[database] watch_interval`` (10 ms by default), as it does for other processes.

``job_inserted`` is sent after the commit where there is a hook for it (a ``Session``);
with a plain ``Connection`` no ``job_inserted`` is sent by the enqueue.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import URL

from .errors import EnqueueError
from .job import Job
from .storage import NewJob, Storage
from .storage.database import Database

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _is_session(target: Any) -> bool:
    """True for an ORM ``Session``. The ORM is not imported for this: a caller holding a
    Session has imported it already, and it costs a fifth of a second to start."""
    orm = sys.modules.get("sqlalchemy.orm")
    return orm is not None and isinstance(target, orm.Session)


def _same_database(mine: URL, theirs: URL) -> bool:
    return (mine.get_backend_name() == theirs.get_backend_name() and mine.database == theirs.database
            and mine.host == theirs.host and (mine.port or 0) == (theirs.port or 0))


def connection_of(target: Any, db: Database) -> Connection:
    """The Core connection of ``target`` (a Connection, or a Session's current one), checked
    to be on ``db`` and able to share it with jobrunner's own connections in this process;
    EnqueueError naming what is wrong otherwise."""
    database = db.engine.url
    conn: Connection
    if _is_session(target):
        conn = target.connection()
    elif isinstance(target, Connection):
        conn = target
    else:
        raise EnqueueError(f"connection must be a SQLAlchemy Connection or Session, got {type(target).__name__}")
    if not _same_database(database, conn.engine.url):
        theirs = conn.engine.url.render_as_string(hide_password=True)
        raise EnqueueError(f"connection is on {theirs!r}, not on the runner's database "
                           f"{database.render_as_string(hide_password=True)!r}")
    problem = db.sharing_problem(conn.dialect.dbapi)
    if problem is not None:
        raise EnqueueError(f"connection cannot be used: {problem}")
    return conn


def insert_in_transaction(
    storage: Storage, target: Any, rows: Sequence[NewJob], after_commit: Callable[[list[Job]], None]
) -> list[Job]:
    """Insert ``rows`` in ``target``'s transaction; returns the jobs as stored (not yet committed).

    Where the database notifies, the notice rides in the same transaction.
    ``after_commit`` is called with the jobs once a Session's transaction commits (never
    on rollback).
    """
    conn = connection_of(target, storage.db)
    stored = storage.jobs.insert_on(conn, rows)
    if _is_session(target):
        _call_after_commit(target, lambda: after_commit(stored))
    return stored


#: Key in ``Session.info`` of the calls waiting for that session's commit.
_PENDING = "jobrunner_after_commit"


def _call_after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Call ``fn`` when ``session``'s current transaction commits; forget it if it rolls back.

    One pair of listeners per session serves every enqueue on it (listeners cannot be
    removed while the session is dispatching its own events).
    """
    pending: list[Callable[[], None]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        event.listen(session, "after_commit", _run_pending)
        event.listen(session, "after_rollback", _drop_pending)
    pending.append(fn)


def _run_pending(session: Session) -> None:
    calls = session.info.get(_PENDING, [])
    session.info[_PENDING] = []
    for fn in calls:
        fn()


def _drop_pending(session: Session) -> None:
    session.info[_PENDING] = []


__all__ = ["connection_of", "insert_in_transaction"]
