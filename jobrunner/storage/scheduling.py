"""Storage verbs of unique jobs, dependencies and progress.

:meth:`SchedulingVerbs.insert_linked` inserts jobs that are unique or depend on others
in one transaction: for a unique job it first looks for a matching job under a lock of
its ``unique_key`` (SQLite: the write lock every write transaction takes at ``BEGIN
IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock of the key), so concurrent
enqueues in any number of processes insert one job. Dependencies are read locked
(``FOR SHARE NOWAIT``) so a dependency finishing meanwhile either commits first (and
is seen finished) or waits for the link to exist (and settles it); a dependency locked
right now makes the whole insert retry shortly, never wait, so no cycle of waits can form
with the transactions that finish jobs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import DBAPIError

from ..errors import EnqueueError
from ..job import Job, JobState, iso
from ..unique import Unique
from .database import Database
from .dependencies import settle_on, verdict
from .notices import INSERTED, NoticeVerbs
from .records import NewJob
from .rows import ALL as _ALL, INSERT_COLUMNS, row_to_job
from .schema import dependencies, jobs

#: How often an insert whose dependencies are locked right now is tried again.
LOCKED_RETRIES = 50
_LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True, slots=True)
class Link:
    """One end of a dependency as ``show`` displays it: the other job's id, its state
    (None: pruned) and, for a dependency, what its failure does (``cancel`` or ``run``)."""

    id: int
    state: str | None
    on_failure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        data: dict[str, Any] = {"id": self.id, "state": self.state}
        if self.on_failure is not None:
            data["on_failure"] = self.on_failure
        return data


def _locked(exc: BaseException | None) -> bool:
    """True for PostgreSQL's "lock not available" (a NOWAIT lock met a held one)."""
    while exc is not None:
        if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            return True
        exc = exc.__cause__
    return False


class SchedulingVerbs:
    """Unique and linked inserts, dependency upkeep, links and progress."""

    def __init__(self, db: Database, notices: NoticeVerbs) -> None:
        self.db = db
        self.notices = notices

    def settle(self, conn: Connection, finished: Sequence[int], now: float) -> None:
        """Release or cancel the blocked dependents of ``finished`` jobs in ``conn``'s transaction."""
        settle_on(conn, finished, now, row_to_job)

    def insert_linked(self, rows: Sequence[NewJob]) -> list[Job]:
        """Insert rows of which some are unique or have dependencies, in one transaction.

        A row may carry, besides its columns: ``unique`` (a :class:`Unique`: a matching
        job found is returned with ``duplicate`` set, nothing is inserted), ``depends_on``
        (ids of stored jobs), ``depends_on_rows`` (indexes of earlier rows of this call)
        and ``on_failure``. Unknown dependency ids raise EnqueueError and store nothing.
        """
        delay = 0.001
        for _ in range(LOCKED_RETRIES):
            try:
                return self.db.transaction(lambda conn: self.insert_linked_on(conn, rows))
            except Exception as exc:
                if not _locked(exc):
                    raise
            time.sleep(delay)
            delay = min(0.05, delay * 2)
        return self.db.transaction(lambda conn: self.insert_linked_on(conn, rows))

    def insert_linked_on(self, conn: Connection, rows: Sequence[NewJob]) -> list[Job]:
        """:meth:`insert_linked` in ``conn``'s open transaction (no retry: a dependency
        locked right now raises); notices of the jobs made available ride along."""
        stored = self._insert_linked(conn, rows)
        made_available = {j.topic for j in stored if j.state == JobState.AVAILABLE and not j.duplicate}
        self.notices.send(conn, INSERTED, made_available)
        return stored

    def _insert_linked(self, conn: Connection, rows: Sequence[NewJob]) -> list[Job]:
        for key in sorted({r.unique_key for r in rows if r.unique is not None and r.unique_key is not None}):
            self.db.serialise(conn, f"unique:{key}")
        wanted = sorted({i for r in rows for i in r.depends_on})
        states: dict[int, str] = {}
        if wanted:
            states = dict(conn.execute(
                select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(wanted)).order_by(jobs.c.id)
                .with_for_update(read=True, nowait=True)
            ).all())
            missing = [str(i) for i in wanted if i not in states]
            if missing:
                raise EnqueueError(f"depends_on names unknown job id(s): {', '.join(missing)} "
                                   "(never enqueued, or pruned)")
        stored: list[Job] = []
        for row in rows:
            unique: Unique | None = row.unique
            if unique is not None and row.unique_key is not None:
                found = self._duplicate(conn, row.unique_key, unique, row.inserted_at)
                if found is not None:
                    stored.append(found)
                    continue
            deps = {i: states[i] for i in row.depends_on}
            for index in row.depends_on_rows:
                deps[stored[index].id] = stored[index].state
            stored.append(self._insert_one(conn, row, deps))
        return stored

    def _duplicate(self, conn: Connection, key: str, unique: Unique, now: float) -> Job | None:
        query = select(*_ALL).where(jobs.c.unique_key == key, jobs.c.state.in_(unique.states))
        since = unique.since(now)
        if since is not None:
            query = query.where(jobs.c.inserted_at > since)
        # Locked like a dependency: a later row of this call may depend on it.
        row = conn.execute(query.order_by(jobs.c.id.desc()).limit(1).with_for_update(read=True, nowait=True)).first()
        return None if row is None else row_to_job(row).evolve(duplicate=True)

    def _insert_one(self, conn: Connection, row: NewJob, deps: dict[int, str]) -> Job:
        values: dict[str, Any] = {name: getattr(row, name) for name in INSERT_COLUMNS}
        on_failure = row.on_failure
        if deps:
            action, dep_id, dep_state = verdict((d, on_failure, s) for d, s in deps.items())
            if action == "wait":
                values["state"] = JobState.BLOCKED.value
            elif action == "cancel":
                now = row.inserted_at
                entry = {"attempt": 0, "at": iso(now), "error": f"cancelled: dependency {dep_id} was {dep_state}",
                         "traceback": None}
                values.update(state=JobState.CANCELLED.value, cancelled_at=now, errors=json.dumps([entry]))
        job = row_to_job(conn.execute(jobs.insert().values(values).returning(*_ALL)).one())
        if deps:
            conn.execute(dependencies.insert(), [
                {"job_id": job.id, "depends_on": dep_id, "on_failure": on_failure} for dep_id in sorted(deps)
            ])
        return job

    def block_again(self, conn: Connection, ids: Sequence[int]) -> None:
        """Jobs among ``ids`` just retried whose dependencies are not all done wait again
        (``blocked``) until the transaction that finishes the last of them."""
        if not ids:
            return
        edges: dict[int, list[tuple[int, str, str | None]]] = {}
        for job_id, dep_id, on_failure, state in conn.execute(
            select(dependencies.c.job_id, dependencies.c.depends_on, dependencies.c.on_failure, jobs.c.state)
            .select_from(dependencies.outerjoin(jobs, jobs.c.id == dependencies.c.depends_on))
            .where(dependencies.c.job_id.in_(list(ids)))
        ):
            edges.setdefault(job_id, []).append((dep_id, on_failure, state))
        waiting = [job_id for job_id, found in edges.items() if verdict(found)[0] != "release"]
        if waiting:
            conn.execute(update(jobs).where(jobs.c.id.in_(waiting), jobs.c.state == JobState.AVAILABLE)
                         .values(state=JobState.BLOCKED))

    def unlink(self, conn: Connection, ids: Sequence[int]) -> None:
        """Forget the dependencies of the deleted jobs ``ids`` (their dependents keep
        their links: a pruned dependency had finished and counts as done)."""
        if ids:
            conn.execute(delete(dependencies).where(dependencies.c.job_id.in_(list(ids))))

    def job_links(self, job_id: int) -> tuple[list[Link], list[Link]]:
        """The dependencies and the dependents of ``job_id``, in id order."""
        with self.db.read() as conn, conn.begin():
            before = conn.execute(
                select(dependencies.c.depends_on, jobs.c.state, dependencies.c.on_failure)
                .select_from(dependencies.outerjoin(jobs, jobs.c.id == dependencies.c.depends_on))
                .where(dependencies.c.job_id == job_id).order_by(dependencies.c.depends_on)
            ).all()
            after = conn.execute(
                select(dependencies.c.job_id, jobs.c.state)
                .select_from(dependencies.outerjoin(jobs, jobs.c.id == dependencies.c.job_id))
                .where(dependencies.c.depends_on == job_id).order_by(dependencies.c.job_id)
            ).all()
        return [Link(*r) for r in before], [Link(*r) for r in after]

    def set_progress(self, job_id: int, attempt: int, progress: float) -> bool:
        """Record the ``progress`` (0..1) of ``job_id`` while it executes at ``attempt``;
        False (nothing written) when it no longer does."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == JobState.EXECUTING, jobs.c.attempt == attempt)
            .values(progress=progress)
        )
        return bool(self.db.transaction(lambda conn: conn.execute(statement).rowcount))


__all__ = ["Link", "SchedulingVerbs"]
