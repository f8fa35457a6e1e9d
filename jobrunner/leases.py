"""Storage verbs for jobs worked outside the runner: claim with a lease, extend, expire.

A leased job is ``executing`` (``attempted_by`` = the holder) with a row in
``jobrunner_leases``. Outcomes are written with the ordinary conditional acks; a lease
that runs out puts its job back in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, delete, func, select, update

from .access import StoreAccess
from .job import Job
from .schema import JOB_COLUMNS, jobs, leases, topics

T = TypeVar("T")

_ALL = [jobs.c[name] for name in JOB_COLUMNS]


@dataclass(frozen=True, slots=True)
class Lease:
    """A job held by an external worker until ``expires_at``."""

    job: Job
    holder: str
    expires_at: float


class LeaseVerbs(StoreAccess):
    """Mixed into :class:`jobrunner.store.Store`."""

    def lease_job(
        self, topic: str, parallelism: int, holder: str, seconds: float, now: float
    ) -> Lease | None:
        """Claim the next due job of ``topic`` for ``holder`` for ``seconds``.

        None when nothing is available or ``parallelism`` jobs of the topic are already
        executing. Scheduled and retryable jobs that are due are made available first.
        """
        def body(conn: Connection) -> Lease | None:
            if conn.scalar(select(topics.c.paused).where(topics.c.topic == topic)):
                return None
            conn.execute(
                update(jobs)
                .where(jobs.c.topic == topic, jobs.c.state.in_(("scheduled", "retryable")),
                       jobs.c.scheduled_at <= now)
                .values(state="available")
            )
            running = conn.scalar(
                select(func.count()).select_from(jobs).where(jobs.c.topic == topic, jobs.c.state == "executing")
            )
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
            expires = now + seconds
            conn.execute(delete(leases).where(leases.c.job_id == job.id))
            conn.execute(leases.insert().values(job_id=job.id, attempt=job.attempt, holder=holder, expires_at=expires))
            return Lease(job, holder, expires)
        return self._transaction(body)

    def get_lease(self, job_id: int) -> Lease | None:
        """The live lease on ``job_id`` (its job still executing at that attempt), or None."""
        with self._read() as conn, conn.begin():
            row = conn.execute(
                select(leases.c.holder, leases.c.expires_at, *_ALL)
                .join(jobs, jobs.c.id == leases.c.job_id)
                .where(leases.c.job_id == job_id, jobs.c.state == "executing",
                       jobs.c.attempt == leases.c.attempt)
            ).first()
        if row is None:
            return None
        return Lease(self._row_to_job(row[2:]), row[0], row[1])

    def extend_lease(self, job_id: int, seconds: float, now: float) -> float | None:
        """Push a live lease's expiry to ``now`` + ``seconds``; None when there is none."""
        def body(conn: Connection) -> float | None:
            live = conn.execute(
                select(leases.c.job_id)
                .join(jobs, jobs.c.id == leases.c.job_id)
                .where(leases.c.job_id == job_id, jobs.c.state == "executing",
                       jobs.c.attempt == leases.c.attempt, leases.c.expires_at >= now)
            ).first()
            if live is None:
                return None
            conn.execute(update(leases).where(leases.c.job_id == job_id).values(expires_at=now + seconds))
            return now + seconds
        return self._transaction(body)

    def release_lease(self, job_id: int) -> None:
        """Forget the lease on ``job_id`` (its outcome was written)."""
        self._transaction(lambda conn: conn.execute(delete(leases).where(leases.c.job_id == job_id)))

    def expire_leases(self, now: float) -> list[Job]:
        """Put back every job whose lease ran out before ``now``.

        Like a rescue: the attempt stays counted, an ``errors`` entry says the lease
        expired, the job becomes ``available`` (``discarded`` after its last attempt).
        Leases whose job already left ``executing`` are just deleted.
        """
        def body(conn: Connection) -> list[Job]:
            expired = conn.execute(
                select(leases.c.job_id, leases.c.attempt, leases.c.holder).where(leases.c.expires_at < now)
            ).all()
            put_back = []
            for job_id, attempt, holder in expired:
                row = conn.execute(
                    select(*_ALL).where(jobs.c.id == job_id, jobs.c.state == "executing", jobs.c.attempt == attempt)
                ).first()
                conn.execute(delete(leases).where(leases.c.job_id == job_id))
                if row is None:
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
