"""Storage verbs off the hot path: node heartbeats and rescue, cancel, retry, pause, prune.

These run a few times a minute (or on an operator's command), so they use SQLAlchemy
Core connections; every write is one short transaction, and every transition of a job
is conditional on the state it is expected to leave. Each verb reports only the rows it
actually changed.

Concurrency (PostgreSQL, where these truly overlap): verbs that change many jobs lock
them in id order, or skip rows locked by others (rescue, prune), so no two of them
deadlock; registrations (heartbeats, pauses) are upserts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, and_, case, delete, or_, select, update

from .access import StoreAccess
from .job import FINAL_STATES, Job, iso
from .schema import JOB_COLUMNS, jobs, leases, nodes, topics

T = TypeVar("T")

_ALL = [jobs.c[name] for name in JOB_COLUMNS]
#: States a job can be cancelled from.
CANCELLABLE = ("scheduled", "available", "executing", "retryable")
#: States a job can be retried from.
RETRYABLE_FROM = ("discarded", "cancelled")
_FINISHED_AT = {"completed": jobs.c.completed_at, "cancelled": jobs.c.cancelled_at, "discarded": jobs.c.discarded_at}


@dataclass(frozen=True, slots=True)
class TopicControl:
    """What a producer must obey right now: pause; running jobs cancelled elsewhere;
    running jobs it no longer owns (rescued, retried or claimed again meanwhile); and the
    parallelism the topic was scaled to (None: the configured one)."""

    paused: bool
    cancelled: frozenset[int]
    lost: frozenset[int] = frozenset()
    parallelism: int | None = None


def judge_running(
    running: Sequence[tuple[int, int]], node: str, rows: Iterable[Sequence[Any]]
) -> tuple[frozenset[int], frozenset[int]]:
    """Split our running (id, attempt) pairs by their rows (id, state, attempt, attempted_by)
    into those cancelled and those no longer ours."""
    mine = dict(running)
    seen = {row[0]: row for row in rows}
    cancelled, lost = set(), set()
    for job_id, attempt in mine.items():
        row = seen.get(job_id)
        if row is not None and row[1] == "cancelled":
            cancelled.add(job_id)
        elif row is None or not (row[1] == "executing" and row[2] == attempt and row[3] == node):
            lost.add(job_id)
    return frozenset(cancelled), frozenset(lost)


class MaintenanceVerbs(StoreAccess):
    """Mixed into :class:`jobrunner.store.Store`."""

    # ------------------------------------------------------------ nodes

    def heartbeat(self, node: str, now: float) -> None:
        """Record that ``node`` is alive at ``now`` (registering it the first time)."""
        self._transaction(lambda conn: self._upsert(
            conn, nodes, {"node": node, "started_at": now, "heartbeat_at": now}, ["node"], ["heartbeat_at"]
        ))

    def remove_node(self, node: str) -> None:
        """Forget ``node`` (it stopped cleanly)."""
        self._transaction(lambda conn: conn.execute(delete(nodes).where(nodes.c.node == node)))

    def live_nodes(self, alive_since: float) -> list[str]:
        """Nodes whose last heartbeat is at or after ``alive_since``."""
        with self._read() as conn, conn.begin():
            return list(conn.scalars(select(nodes.c.node).where(nodes.c.heartbeat_at >= alive_since)))

    def rescue_orphans(self, now: float, alive_since: float) -> list[Job]:
        """Put back the jobs left ``executing`` by nodes silent since before ``alive_since``.

        Each rescued job keeps its counted attempt and gains an ``errors`` entry saying
        its node died; it becomes ``available`` again, or ``discarded`` when that was its
        last attempt. Dead nodes' rows are deleted. Returns the rescued jobs as they are now.
        """
        def body(conn: Connection) -> list[Job]:
            live = select(nodes.c.node).where(nodes.c.heartbeat_at >= alive_since)
            orphans = conn.execute(
                select(*_ALL).where(
                    jobs.c.state == "executing",
                    or_(jobs.c.attempted_by.is_(None), jobs.c.attempted_by.not_in(live.scalar_subquery())),
                    # Jobs held by external workers are governed by their lease instead.
                    jobs.c.id.not_in(select(leases.c.job_id).scalar_subquery()),
                )
                .order_by(jobs.c.id)
                # A row locked right now is being written (acked, cancelled): next pass.
                .with_for_update(skip_locked=True)
            ).all()
            rescued = []
            for row in orphans:
                job = self._row_to_job(row)
                reason = f"node {job.attempted_by} died while the job was executing (no heartbeat)"
                moved = self._put_back(conn, job, now, reason)
                if moved is not None:
                    rescued.append(moved)
            conn.execute(delete(nodes).where(nodes.c.heartbeat_at < alive_since))
            return rescued
        return self._transaction(body)

    # ------------------------------------------------------------ operator actions

    def cancel_job(
        self, job_id: int, now: float, reason: str = "cancelled by request"
    ) -> tuple[Job | None, bool]:
        """Cancel a job that has not finished.

        Returns the job as it is afterwards (None: no such job) and whether this call
        cancelled it (False: it had already finished). A job that is ``executing`` is
        marked cancelled here; the node running it notices within its poll interval
        and cancels ``perform``.
        """
        def body(conn: Connection) -> tuple[Job | None, bool]:
            # Locked as read, so the state judged here is the state the update leaves.
            row = conn.execute(select(*_ALL).where(jobs.c.id == job_id).with_for_update()).first()
            if row is None:
                return None, False
            job = self._row_to_job(row)
            if job.state not in CANCELLABLE:
                return job, False
            entry = {"attempt": job.attempt, "at": iso(now), "error": f"cancelled: {reason}", "traceback": None}
            changed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == job.state, jobs.c.attempt == job.attempt)
                .values(state="cancelled", cancelled_at=now, errors=json.dumps([*job.errors, entry]))
                .returning(*_ALL)
            ).first()
            if changed is None:  # pragma: no cover - the row lock makes this unreachable
                return job, False
            return self._row_to_job(changed), True
        return self._transaction(body)

    def retry_jobs(
        self,
        now: float,
        ids: Iterable[int] | None = None,
        topic: str | None = None,
        states: Iterable[str] = RETRYABLE_FROM,
    ) -> list[int]:
        """Make discarded or cancelled jobs ``available`` again; returns the ids retried.

        Select them by id, or in bulk by topic and state. A job that used all its
        attempts gets one more (``max_attempts`` raised to ``attempt`` + 1).
        """
        wanted = [s for s in states if s in RETRYABLE_FROM]
        conditions: list[ColumnElement[bool]] = [jobs.c.state.in_(wanted)]
        if ids is not None:
            conditions.append(jobs.c.id.in_(list(ids)))
        if topic is not None:
            conditions.append(jobs.c.topic == topic)

        # Lock the rows in id order (no deadlock with another bulk action), then change
        # those still retryable, reporting exactly the ones changed.
        locked = (
            select(jobs.c.id).where(*conditions).order_by(jobs.c.id).with_for_update()
            .cte("retried").prefix_with("MATERIALIZED", dialect="postgresql")
        )
        statement = (
            update(jobs)
            .where(jobs.c.id.in_(select(locked.c.id)), jobs.c.state.in_(wanted))
            .values(
                state="available", scheduled_at=now, completed_at=None, discarded_at=None, cancelled_at=None,
                max_attempts=case(
                    (jobs.c.max_attempts > jobs.c.attempt, jobs.c.max_attempts), else_=jobs.c.attempt + 1
                ),
            )
            .returning(jobs.c.id)
        )
        return sorted(self._transaction(lambda conn: list(conn.scalars(statement))))

    def set_paused(self, topic: str, paused: bool, now: float) -> None:
        """Pause (or resume) claiming for ``topic`` on every node."""
        values = {"topic": topic, "paused": int(paused), "updated_at": now}
        self._transaction(lambda conn: self._upsert(conn, topics, values, ["topic"], ["paused", "updated_at"]))

    def set_parallelism(self, topic: str, parallelism: int | None, now: float) -> None:
        """Scale ``topic`` to ``parallelism`` on every node (None: back to the configured value)."""
        values = {"topic": topic, "parallelism": parallelism, "updated_at": now}
        self._transaction(lambda conn: self._upsert(conn, topics, values, ["topic"], ["parallelism", "updated_at"]))

    def scaled_parallelism(self, topic: str) -> int | None:
        """The parallelism ``topic`` was scaled to, None when it was not (or was reset)."""
        with self._read() as conn, conn.begin():
            value = conn.scalar(select(topics.c.parallelism).where(topics.c.topic == topic))
        return None if value is None else int(value)

    def paused_topics(self) -> set[str]:
        """Topics currently paused."""
        with self._read() as conn, conn.begin():
            return set(conn.scalars(select(topics.c.topic).where(topics.c.paused != 0)))

    def control(self, topic: str, running: Iterable[tuple[int, int]], node: str = "") -> TopicControl:
        """Whether ``topic`` is paused, and which ``running`` (id, attempt) jobs of ``node``
        were cancelled or are no longer its own."""
        pairs = list(running)
        with self._read() as conn, conn.begin():
            row = conn.execute(select(topics.c.paused, topics.c.parallelism).where(topics.c.topic == topic)).first()
            rows = conn.execute(
                select(jobs.c.id, jobs.c.state, jobs.c.attempt, jobs.c.attempted_by)
                .where(jobs.c.id.in_([job_id for job_id, _ in pairs]))
            ).all() if pairs else []
        cancelled, lost = judge_running(pairs, node, rows)
        return TopicControl(bool(row and row[0]), cancelled, lost, None if row is None else row[1])

    def page_jobs(
        self, topic: str | None, state: str | None, limit: int, before_id: int | None = None
    ) -> tuple[list[Job], int | None]:
        """One page of jobs, newest first, and the cursor of the next page (None: last page)."""
        query = select(*_ALL).order_by(jobs.c.id.desc()).limit(limit + 1)
        if topic is not None:
            query = query.where(jobs.c.topic == topic)
        if state is not None:
            query = query.where(jobs.c.state == state)
        if before_id is not None:
            query = query.where(jobs.c.id < before_id)
        with self._read() as conn, conn.begin():
            found = [self._row_to_job(r) for r in conn.execute(query)]
        if len(found) > limit:
            return found[:limit], found[limit - 1].id
        return found, None

    def prune(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` completed, cancelled or discarded jobs finished before ``before``.

        A job is deleted only if it is still final when deleted: the DELETE checks the
        state itself, and rows another transaction is changing (a retry) are skipped.
        """
        def body(conn: Connection) -> int:
            deleted = 0
            for state in sorted(FINAL_STATES):
                if deleted >= limit:
                    break
                final = and_(jobs.c.state == state, _FINISHED_AT[state] < before)
                # Rows locked by others are skipped, so pruning never waits on (or deadlocks
                # with) another transaction; the outer condition re-checks each row as deleted.
                oldest = select(jobs.c.id).where(final).limit(limit - deleted).with_for_update(skip_locked=True)
                deleted += conn.execute(delete(jobs).where(jobs.c.id.in_(oldest.scalar_subquery()), final)).rowcount
            return deleted
        return self._transaction(body)
