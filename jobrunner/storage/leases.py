"""Jobs worked outside the runner: claim with a lease, extend, conclude, expire.

A leased job is ``executing`` (``attempted_by`` = the holder) with a row in
``jobrunner_leases`` that carries a random token. Every claim hands out a new token;
concluding or extending the lease must present it, so a worker whose lease ran out (and
whose job was claimed again) or a client that never claimed the job changes nothing.
A lease that runs out puts its job back in the queue.

A lease claim stages and claims with the producers' own statements; concluding a
leased job writes its ack and releases the lease in one transaction.

Lock order: a transaction that touches both tables locks the job row before the lease
row, so no two of these verbs can deadlock on PostgreSQL.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, delete, select, update

from ..job import Job
from ..limits import TopicLimits
from . import statements as sql
from .database import Database
from .dependencies import settle_on
from .jobs import FINISHING
from .limited import LimitedClaims
from .nodes import put_back
from .records import Ack, Lease
from .rows import row_to_job
from .schema import leases


def new_token() -> str:
    """A fresh, unguessable lease token."""
    return secrets.token_urlsafe(18)


class LeaseVerbs:
    """Claim, extend, conclude and expire the leases of external workers."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._claim = sql.claim(db.dialect)
        self._limited = LimitedClaims(db)

    def claim(
        self, topic: str, parallelism: int, holder: str, seconds: float, now: float,
        limits: TopicLimits | None = None,
    ) -> Lease | None:
        """Claim the next due job of ``topic`` for ``holder`` for ``seconds``.

        None when the topic is paused, nothing is available, ``parallelism`` jobs of
        the topic are already executing (or as many as it was scaled to), or ``limits``
        (the topic's limits across nodes) let nothing start now. Scheduled and
        retryable jobs that are due are made available first. Claims of one topic are
        serialised (the count of executing jobs and the claim are one decision), on
        every node, under the same lock as producers' claims of a limited topic.
        """
        def body(conn: Connection) -> Lease | None:
            self.db.serialise(conn, f"claim:{topic}")
            control = conn.execute(sql.PAUSED, {"b_topic": topic}).first()
            if control is not None and control[0]:
                return None
            in_force = parallelism if control is None or control[1] is None else control[1]
            conn.execute(sql.STAGE, {"b_topic": topic, "b_now": now})
            if (conn.scalar(sql.RUNNING_COUNT, {"b_topic": topic}) or 0) >= in_force:
                return None
            if limits is not None:
                # The limited claim runs on the DBAPI cursor, inside this transaction.
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                claimed, _ = self._limited.claim(cursor, topic, limits, 1, now, holder)
                if not claimed:
                    return None
                job = claimed[0]
            else:
                row = conn.execute(
                    self._claim, {"b_topic": topic, "b_limit": 1, "b_now": now, "b_node": holder}
                ).first()
                if row is None:
                    return None
                job = row_to_job(row)
            lease = Lease(job, holder, now + seconds, new_token())
            conn.execute(delete(leases).where(leases.c.job_id == job.id))
            conn.execute(leases.insert().values(
                job_id=job.id, attempt=job.attempt, holder=holder, expires_at=lease.expires_at, token=lease.token
            ))
            return lease
        return self.db.transaction(body)

    def get(self, job_id: int) -> Lease | None:
        """The live lease on ``job_id`` (its job still executing at that attempt), or None."""
        with self.db.read() as conn, conn.begin():
            row = conn.execute(sql.live_lease(job_id)).first()
        if row is None:
            return None
        return Lease(row_to_job(row[3:]), row[0], row[1], row[2])

    def extend(self, job_id: int, token: str, seconds: float, now: float) -> float | None:
        """Push the live lease on ``job_id`` held under ``token`` to ``now`` + ``seconds``.

        Returns the new expiry; None (and nothing changed) when there is no such lease:
        unknown job, wrong token, job concluded, or lease already expired.
        """
        if not token:
            return None
        expires = now + seconds

        def body(conn: Connection) -> float | None:
            moved = conn.execute(
                update(leases)
                .where(leases.c.job_id == job_id, leases.c.token == token, leases.c.expires_at >= now, sql.LIVE_JOB)
                .values(expires_at=expires)
            )
            return expires if moved.rowcount else None
        return self.db.transaction(body)

    def conclude(self, ack: Ack, token: str) -> bool:
        """Write the outcome ``ack`` of a leased job and release its lease, in one transaction.

        Applies only while the job is ``executing`` at ``ack.job.attempt`` under a lease
        whose token is ``token``; otherwise nothing changes. Returns whether it applied.
        """
        if not token:
            return False

        def body(conn: Connection) -> bool:
            job = ack.job
            written = conn.execute(sql.conclude_lease(ack.transition, token), {
                "b_id": job.id, "b_attempt": job.attempt, "b_at": ack.at, "b_result": ack.result,
                "b_errors": ack.errors,
            })
            if not written.rowcount:
                return False
            conn.execute(delete(leases).where(leases.c.job_id == job.id))
            if ack.transition in FINISHING:
                settle_on(conn, [job.id], ack.at or 0.0, row_to_job)
            return True
        return self.db.transaction(body)

    def expire(self, now: float) -> list[Job]:
        """Put back every job whose lease ran out before ``now``.

        Like a rescue: the attempt stays counted, an ``errors`` entry says the lease
        expired, the job becomes ``available`` (``discarded`` after its last attempt).
        Leases whose job already left ``executing`` are just deleted. A lease extended
        or concluded meanwhile is left alone.
        """
        def body(conn: Connection) -> list[Job]:
            expired = conn.execute(
                select(leases.c.job_id, leases.c.attempt, leases.c.holder)
                .where(leases.c.expires_at < now)
                .order_by(leases.c.job_id)
            ).all()
            returned = []
            for job_id, attempt, holder in expired:
                # Job row first (the lock order), then the lease, re-checked as it is deleted.
                row = conn.execute(sql.executing_at(job_id, attempt)).first()
                gone = conn.execute(
                    delete(leases).where(leases.c.job_id == job_id, leases.c.attempt == attempt,
                                         leases.c.expires_at < now)
                )
                if row is None or not gone.rowcount:
                    continue
                reason = f"lease of {holder} expired before the job was concluded"
                moved = put_back(conn, row_to_job(row), now, reason)
                if moved is not None:
                    returned.append(moved)
            return returned
        return self.db.transaction(body)

    def leased_job_ids(self) -> set[int]:
        """Ids of jobs that hold a lease (so node rescue leaves them to lease expiry)."""
        with self.db.read() as conn, conn.begin():
            return set(conn.scalars(select(leases.c.job_id)))


__all__ = ["LeaseVerbs", "new_token"]
