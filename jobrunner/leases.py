"""Storage verbs for jobs worked outside the runner: claim with a lease, extend, conclude, expire.

A leased job is ``executing`` (``attempted_by`` = the holder) with a row in
``jobrunner_leases`` that carries a random token. Every claim hands out a new token;
concluding or extending the lease must present it, so a worker whose lease ran out (and
whose job was claimed again) or a client that never claimed the job changes nothing.
A lease that runs out puts its job back in the queue.

Lock order: a transaction that touches both tables locks the job row before the lease
row, so no two of these verbs can deadlock on PostgreSQL.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection, delete, exists, func, select, update

from .access import StoreAccess
from .job import Job
from .schema import JOB_COLUMNS, jobs, leases, topics

if TYPE_CHECKING:
    from .store import Ack

T = TypeVar("T")

_ALL = [jobs.c[name] for name in JOB_COLUMNS]
#: The lease row of the job being updated, still at the job's attempt.
_CURRENT_LEASE = exists().where(leases.c.job_id == jobs.c.id, leases.c.attempt == jobs.c.attempt)


@dataclass(frozen=True, slots=True)
class Lease:
    """A job held by an external worker until ``expires_at``; ``token`` proves it holds it."""

    job: Job
    holder: str
    expires_at: float
    token: str


def new_token() -> str:
    """A fresh, unguessable lease token."""
    return secrets.token_urlsafe(18)


class LeaseVerbs(StoreAccess):
    """Mixed into :class:`jobrunner.store.Store`."""

    def lease_job(
        self, topic: str, parallelism: int, holder: str, seconds: float, now: float
    ) -> Lease | None:
        """Claim the next due job of ``topic`` for ``holder`` for ``seconds``.

        None when the topic is paused, nothing is available, or ``parallelism`` jobs of
        the topic are already executing. Scheduled and retryable jobs that are due are
        made available first. Claims of one topic are serialised (the count of executing
        jobs and the claim are one decision), on every node.
        """
        def body(conn: Connection) -> Lease | None:
            self._serialise(conn, f"lease:{topic}")
            if conn.scalar(select(topics.c.paused).where(topics.c.topic == topic)):
                return None
            conn.execute(
                update(jobs)
                .where(jobs.c.topic == topic, jobs.c.state.in_(("scheduled", "retryable")),
                       jobs.c.scheduled_at <= now)
                .values(state="available")
            )
            running = conn.execute(
                select(func.count()).select_from(jobs).where(jobs.c.topic == topic, jobs.c.state == "executing")
            ).scalar_one()
            if running >= parallelism:
                return None
            next_id = conn.scalar(
                select(jobs.c.id)
                .where(jobs.c.topic == topic, jobs.c.state == "available")
                .order_by(jobs.c.priority, jobs.c.scheduled_at, jobs.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if next_id is None:
                return None
            row = conn.execute(
                update(jobs)
                .where(jobs.c.id == next_id, jobs.c.state == "available")
                .values(state="executing", attempt=jobs.c.attempt + 1, attempted_at=now, attempted_by=holder)
                .returning(*_ALL)
            ).first()
            if row is None:
                return None
            job = self._row_to_job(row)
            lease = Lease(job, holder, now + seconds, new_token())
            conn.execute(delete(leases).where(leases.c.job_id == job.id))
            conn.execute(leases.insert().values(
                job_id=job.id, attempt=job.attempt, holder=holder, expires_at=lease.expires_at, token=lease.token
            ))
            return lease
        return self._transaction(body)

    def get_lease(self, job_id: int) -> Lease | None:
        """The live lease on ``job_id`` (its job still executing at that attempt), or None."""
        with self._read() as conn, conn.begin():
            row = conn.execute(
                select(leases.c.holder, leases.c.expires_at, leases.c.token, *_ALL)
                .join(jobs, jobs.c.id == leases.c.job_id)
                .where(leases.c.job_id == job_id, jobs.c.state == "executing",
                       jobs.c.attempt == leases.c.attempt)
            ).first()
        if row is None:
            return None
        return Lease(self._row_to_job(row[3:]), row[0], row[1], row[2])

    def extend_lease(self, job_id: int, token: str, seconds: float, now: float) -> float | None:
        """Push the live lease on ``job_id`` held under ``token`` to ``now`` + ``seconds``.

        Returns the new expiry; None (and nothing changed) when there is no such lease:
        unknown job, wrong token, job concluded, or lease already expired.
        """
        if not token:
            return None
        live_job = exists().where(
            jobs.c.id == leases.c.job_id, jobs.c.state == "executing", jobs.c.attempt == leases.c.attempt
        )
        expires = now + seconds
        def body(conn: Connection) -> float | None:
            moved = conn.execute(
                update(leases)
                .where(leases.c.job_id == job_id, leases.c.token == token, leases.c.expires_at >= now, live_job)
                .values(expires_at=expires)
            )
            return expires if moved.rowcount else None
        return self._transaction(body)

    def conclude_lease(self, ack: Ack, token: str) -> bool:
        """Write the outcome ``ack`` of a leased job and release its lease, in one transaction.

        Applies only while the job is ``executing`` at ``ack.job.attempt`` under a lease
        whose token is ``token``; otherwise nothing changes. Sets and returns
        ``ack.applied``.
        """
        def body(conn: Connection) -> bool:
            fenced = self._ack_statement(ack.kind).where(_CURRENT_LEASE.where(leases.c.token == token))
            job = ack.job
            written = conn.execute(fenced, {"b_id": job.id, "b_attempt": job.attempt, "b_at": ack.at,
                                            "b_result": ack.result, "b_errors": ack.errors})
            if not written.rowcount:
                return False
            conn.execute(delete(leases).where(leases.c.job_id == job.id))
            if ack.kind in ("complete", "discard", "cancel"):
                self._settle_on(conn, [job.id], ack.at or 0.0)
            return True
        ack.applied = bool(token) and self._transaction(body)
        return ack.applied

    def expire_leases(self, now: float) -> list[Job]:
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
            put_back = []
            for job_id, attempt, holder in expired:
                # Job row first (the lock order), then the lease, re-checked as it is deleted.
                row = conn.execute(
                    select(*_ALL)
                    .where(jobs.c.id == job_id, jobs.c.state == "executing", jobs.c.attempt == attempt)
                    .with_for_update()
                ).first()
                gone = conn.execute(
                    delete(leases).where(leases.c.job_id == job_id, leases.c.attempt == attempt,
                                         leases.c.expires_at < now)
                )
                if row is None or not gone.rowcount:
                    continue
                reason = f"lease of {holder} expired before the job was concluded"
                moved = self._put_back(conn, self._row_to_job(row), now, reason)
                if moved is not None:
                    put_back.append(moved)
            return put_back
        return self._transaction(body)

    def leased_job_ids(self) -> set[int]:
        """Ids of jobs that hold a lease (so node rescue leaves them to lease expiry)."""
        with self._read() as conn, conn.begin():
            return set(conn.scalars(select(leases.c.job_id)))
