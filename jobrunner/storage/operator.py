"""Operator actions: cancel, retry, pause and resume, prune, and the control a producer obeys.

These run a few times a minute (or on an operator's command), so they use SQLAlchemy
Core connections; every write is one short transaction, and every transition of a job
is conditional on the state it is expected to leave. Each verb reports only the rows it
actually changed.

Concurrency (PostgreSQL, where these truly overlap): verbs that change many jobs lock
them in id order, or skip rows locked by others (prune), so no two of them deadlock;
pauses are upserts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import ColumnElement, Connection

from ..job import Job, iso
from . import operator_statements as ops, statements as sql
from .database import Database
from .notices import CONTROL, INSERTED, NoticeVerbs
from .records import TopicControl, judge_running
from .rows import row_to_job
from .scheduling import SchedulingVerbs
from .schema import jobs, topics

CANCELLABLE = ops.CANCELLABLE
RETRYABLE_FROM = ops.RETRYABLE_FROM


class OperatorVerbs:
    """What an operator (or the embedding API) does to jobs and topics."""

    def __init__(self, db: Database, notices: NoticeVerbs, scheduling: SchedulingVerbs) -> None:
        self.db = db
        self.notices = notices
        self._scheduling = scheduling

    def cancel(self, job_id: int, now: float, reason: str = "cancelled by request") -> tuple[Job | None, bool]:
        """Cancel a job that has not finished.

        Returns the job as it is afterwards (None: no such job) and whether this call
        cancelled it (False: it had already finished). A job that is ``executing`` is
        marked cancelled here; the node running it notices within its poll interval
        and cancels ``perform``.
        """
        def body(conn: Connection) -> tuple[Job | None, bool]:
            # Locked as read, so the state judged here is the state the update leaves.
            row = conn.execute(ops.job_by_id(job_id).with_for_update()).first()
            if row is None:
                return None, False
            job = row_to_job(row)
            if job.state not in CANCELLABLE:
                return job, False
            entry = {"attempt": job.attempt, "at": iso(now), "error": f"cancelled: {reason}", "traceback": None}
            changed = conn.execute(ops.cancel(job, now, json.dumps([*job.errors, entry]))).first()
            if changed is None:  # pragma: no cover - the row lock makes this unreachable
                return job, False
            self._scheduling.settle(conn, [job_id], now)
            self.notices.send(conn, CONTROL, [job.topic])  # its node interrupts it at once
            return row_to_job(changed), True
        return self.db.transaction(body)

    def retry(
        self, now: float, ids: Iterable[int] | None = None, topic: str | None = None,
        states: Iterable[str] = RETRYABLE_FROM,
    ) -> list[int]:
        """Make discarded or cancelled jobs ``available`` again; returns the ids retried.

        Select them by id, or in bulk by topic and state. A job that used all its
        attempts gets one more (``max_attempts`` raised to ``attempt`` + 1).
        """
        wanted = [s for s in states if s in RETRYABLE_FROM]
        conditions: list[ColumnElement[bool]] = []
        if ids is not None:
            conditions.append(jobs.c.id.in_(list(ids)))
        if topic is not None:
            conditions.append(jobs.c.topic == topic)
        statement = ops.retry(now, wanted, conditions)

        def body(conn: Connection) -> list[int]:
            rows = conn.execute(statement).all()
            retried = sorted(job_id for job_id, _ in rows)
            self._scheduling.block_again(conn, retried)
            self.notices.send(conn, INSERTED, {topic for _, topic in rows})
            return retried
        return self.db.transaction(body)

    def set_paused(self, topic: str, paused: bool, now: float) -> None:
        """Pause (or resume) claiming for ``topic`` on every node."""
        values = {"topic": topic, "paused": int(paused), "updated_at": now}

        def body(conn: Connection) -> None:
            self.db.upsert(conn, topics, values, ["topic"], ["paused", "updated_at"])
            self.notices.send(conn, CONTROL, [topic])
        self.db.transaction(body)

    def set_parallelism(self, topic: str, parallelism: int | None, now: float) -> None:
        """Scale ``topic`` to ``parallelism`` on every node (None: back to the configured value)."""
        values = {"topic": topic, "parallelism": parallelism, "updated_at": now}

        def body(conn: Connection) -> None:
            self.db.upsert(conn, topics, values, ["topic"], ["parallelism", "updated_at"])
            self.notices.send(conn, CONTROL, [topic])  # other nodes read their control at once
        self.db.transaction(body)

    def scaled_parallelism(self, topic: str) -> int | None:
        """The parallelism ``topic`` was scaled to; None when it was not (or was reset)."""
        with self.db.read() as conn, conn.begin():
            value = conn.scalar(sql.SCALED, {"b_topic": topic})
        return None if value is None else int(value)

    def paused_topics(self) -> set[str]:
        """Topics currently paused."""
        with self.db.read() as conn, conn.begin():
            return set(conn.scalars(ops.PAUSED_TOPICS))

    def control(self, topic: str, running: Iterable[tuple[int, int]], node: str = "") -> TopicControl:
        """Whether ``topic`` is paused, and which ``running`` (id, attempt) jobs of ``node``
        were cancelled or are no longer its own."""
        pairs = list(running)
        with self.db.read() as conn, conn.begin():
            row = conn.execute(sql.PAUSED, {"b_topic": topic}).first()
            rows = conn.execute(
                sql.running_rows(len(pairs)), {f"b_id{i}": job_id for i, (job_id, _) in enumerate(pairs)}
            ).all() if pairs else []
        cancelled, lost = judge_running(pairs, node, rows)
        return TopicControl(bool(row and row[0]), cancelled, lost, None if row is None else row[1])

    def prune(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` completed, cancelled or discarded jobs finished before ``before``.

        A job is deleted only if it is still final when deleted: the DELETE checks the
        state itself, and rows another transaction is changing (a retry) are skipped.
        """
        def body(conn: Connection) -> int:
            deleted = 0
            for state in ops.PRUNABLE:
                if deleted >= limit:
                    break
                gone = list(conn.scalars(ops.prune(state, before, limit - deleted)))
                self._scheduling.unlink(conn, gone)
                deleted += len(gone)
            return deleted
        return self.db.transaction(body)


__all__ = ["CANCELLABLE", "RETRYABLE_FROM", "OperatorVerbs"]
