"""Jobs of external topics, worked by programs outside the runner (through the HTTP API).

A worker claims a job (waiting, bounded, until one is due), receives it with a lease,
and concludes it as completed or failed, or extends the lease while it works. The
topic's parallelism, priority order and backoff apply as for in-process workers; a
lease that runs out puts the job back in the queue.
"""

from __future__ import annotations

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
    """The job holds no live lease (unknown, already concluded, or its lease expired)."""


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

    async def complete(self, job_id: int, result: Any) -> Job:
        """Conclude a leased job as completed with ``result`` (JSON)."""
        return await self._conclude(job_id, Outcome("completed", result=result))

    async def fail(self, job_id: int, error: str) -> Job:
        """Conclude a leased job as failed: retry after the topic's backoff, or discard."""
        return await self._conclude(job_id, Outcome("failed", error=ExternalJobError(error), traceback=None))

    async def extend(self, job_id: int, seconds: float) -> float:
        """Extend a live lease to now + ``seconds``; returns the new expiry."""
        expires = await self.run_db(self.store.extend_lease, job_id, seconds, self.clock())
        if expires is None:
            raise LeaseError(f"job {job_id} holds no live lease")
        return expires

    async def _conclude(self, job_id: int, outcome: Outcome) -> Job:
        lease: Lease | None = await self.run_db(self.store.get_lease, job_id)
        if lease is None or lease.job.topic not in self.topics:
            raise LeaseError(f"job {job_id} holds no live lease")
        now = self.clock()
        # The attempt lasted from the claim (attempted_at) to this conclusion.
        started = lease.job.attempted_at
        duration = max(0.0, now - started) if started is not None else 0.0
        finished = plan(lease.job, outcome, self.topics[lease.job.topic], now, duration=duration)
        await self.run_db(self.store.ack_and_claim, [finished.ack])
        if not finished.ack.applied:
            raise LeaseError(f"job {job_id} holds no live lease")
        await self.run_db(self.store.release_lease, job_id)
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


__all__ = ["ExternalJobError", "ExternalTopics", "LeaseError"]
