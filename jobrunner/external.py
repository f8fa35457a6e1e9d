"""Jobs of external topics, worked by programs outside the runner (through the HTTP API).

A worker claims a job (waiting, bounded, until one is due), receives it with a lease
and the lease's token, and concludes it as completed or failed, or extends the lease
while it works, presenting that token each time. The topic's parallelism, priority
order and backoff apply as for in-process workers; a lease that runs out puts the job
back in the queue, and the old token is then worthless.
"""

from __future__ import annotations

import hmac
import time
from typing import Any, Awaitable, Callable

import anyio

from . import events
from .config import Settings, TopicSettings
from .errors import JobrunnerError
from .executor import Outcome, plan
from .job import Job
from .leases import Lease
from .store import Store

RunDb = Callable[..., Awaitable[Any]]


class LeaseError(JobrunnerError):
    """The job holds no live lease under the token presented (never claimed, already
    concluded, its lease expired, or it was claimed again by another worker)."""


class ExternalJobError(Exception):
    """The failure an external worker reported for a job."""


class ExternalTopics:
    """Serves the jobs of ``external = true`` topics to outside workers."""

    def __init__(self, settings: Settings, store: Store, run_db: RunDb, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.run_db = run_db
        self.clock = clock
        self.topics: dict[str, TopicSettings] = {n: t for n, t in settings.topics.items() if t.external}
        self._arrivals: dict[str, anyio.Event] = {name: anyio.Event() for name in self.topics}
        #: Set when the runner stops: waiting claims answer "no job" and event streams end.
        self.stopping = anyio.Event()

    def stop(self) -> None:
        """Release every waiting claim (the runner is stopping)."""
        self.stopping.set()
        self.notify()

    def topic(self, name: str) -> TopicSettings | None:
        """The settings of external topic ``name``, or None."""
        return self.topics.get(name)

    def notify(self, topic: str | None = None) -> None:
        """Wake claims waiting on ``topic`` (every external topic when None)."""
        for name in [topic] if topic is not None else list(self._arrivals):
            event = self._arrivals.get(name)
            if event is not None:
                self._arrivals[name] = anyio.Event()
                event.set()

    async def claim(self, topic: str, holder: str, wait: float, lease: float | None = None) -> Lease | None:
        """The next due job of ``topic`` leased to ``holder``, waiting up to ``wait`` seconds."""
        settings = self.topics[topic]
        seconds = lease if lease is not None else self.settings.http.lease
        deadline = anyio.current_time() + wait
        while not self.stopping.is_set():
            arrival = self._arrivals[topic]  # taken before looking, so no wake-up is missed
            leased: Lease | None = await self.run_db(
                self.store.lease_job, topic, settings.parallelism, holder, seconds, self.clock()
            )
            if leased is not None:
                events.emit(events.job_started, topic, job=leased.job)
                return leased
            remaining = deadline - anyio.current_time()
            if remaining <= 0 or self.stopping.is_set():
                return None
            # Due scheduled jobs and freed slots are noticed at least every poll interval.
            with anyio.move_on_after(min(remaining, settings.poll_interval)):
                await arrival.wait()
        return None

    async def complete(self, job_id: int, token: str, result: Any) -> Job:
        """Conclude a job leased under ``token`` as completed with ``result`` (JSON)."""
        return await self._conclude(job_id, token, Outcome("completed", result=result))

    async def fail(self, job_id: int, token: str, error: str) -> Job:
        """Conclude a job leased under ``token`` as failed: retry after the topic's backoff, or discard."""
        return await self._conclude(job_id, token, Outcome("failed", error=ExternalJobError(error), traceback=None))

    async def extend(self, job_id: int, token: str, seconds: float) -> float:
        """Extend the live lease held under ``token`` to now + ``seconds``; returns the new expiry."""
        expires = await self.run_db(self.store.extend_lease, job_id, token, seconds, self.clock())
        if expires is None:
            raise _lost(job_id, await self.run_db(self.store.get_lease, job_id), token)
        return expires

    async def _conclude(self, job_id: int, token: str, outcome: Outcome) -> Job:
        lease: Lease | None = await self.run_db(self.store.get_lease, job_id)
        if lease is None or lease.job.topic not in self.topics or not _same(lease.token, token):
            raise _lost(job_id, lease, token)
        now = self.clock()
        # The attempt lasted from the claim (attempted_at) to this conclusion.
        started = lease.job.attempted_at
        duration = max(0.0, now - started) if started is not None else 0.0
        finished = plan(lease.job, outcome, self.topics[lease.job.topic], now, duration=duration)
        # Fenced by the token: the outcome and the lease's release are one transaction.
        if not await self.run_db(self.store.conclude_lease, finished.ack, token):
            raise _lost(job_id, None, token)
        finished.emit()
        self.notify(lease.job.topic)
        return finished.snapshot

    async def run(self) -> None:
        """Until cancelled: return jobs whose lease ran out, and wake waiting claims."""
        if not self.topics:
            return
        interval = min(t.poll_interval for t in self.topics.values())
        while True:
            expired: list[Job] = await self.run_db(self.store.expire_leases, self.clock())
            for job in expired:
                events.emit(events.job_rescued, job.topic, job=job)
            self.notify()
            await anyio.sleep(interval)


def _same(held: str, presented: str) -> bool:
    return bool(held) and hmac.compare_digest(held.encode(), presented.encode())


def _lost(job_id: int, lease: Lease | None, token: str) -> LeaseError:
    """The error for a conclusion or extension that found no lease of the caller's."""
    if lease is None:
        return LeaseError(f"job {job_id} holds no live lease (never claimed, already concluded, or its lease "
                          "expired): nothing was changed")
    if _same(lease.token, token):
        return LeaseError(f"the lease on job {job_id} has expired: nothing was changed")
    return LeaseError(f"job {job_id} is leased under another lease token (your lease expired and the job was "
                      "claimed again, or you never claimed it): nothing was changed")


__all__ = ["ExternalJobError", "ExternalTopics", "LeaseError"]
