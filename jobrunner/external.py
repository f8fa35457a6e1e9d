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
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

from . import events
from .config import Settings, TopicSettings
from .errors import ExternalJobError, LeaseError
from .job import Job, Unreadable
from .outcomes import Outcome, OutcomeKind, plan
from .payload import PayloadError
from .storage import AsyncStorage, Lease


class ExternalTopics:
    """Serves the jobs of ``external = true`` topics to outside workers.

    A claim that finds nothing waits in its topic's line and costs nothing until woken:
    :meth:`notify` (an insert, a concluded or expired lease, a commit by another process,
    and each topic's poll tick while claims wait) wakes the first waiting claim only, and
    a claim that gets a job wakes the next one, since more may be due. So a wake-up costs
    one lease attempt, however many claims wait.
    """

    def __init__(self, settings: Settings, storage: AsyncStorage, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.storage = storage
        self.clock = clock
        self.topics: dict[str, TopicSettings] = {n: t for n, t in settings.topics.items() if t.external}
        #: Per topic: the waiting claims in arrival order, and a count of wake-ups so a
        #: claim that was looking while one came knows to look again.
        self._waiting: dict[str, deque[anyio.Event]] = {name: deque() for name in self.topics}
        self._wakeups: dict[str, int] = dict.fromkeys(self.topics, 0)
        #: Set when the runner stops: waiting claims answer "no job" and event streams end.
        self.stopping = anyio.Event()

    def stop(self) -> None:
        """Release every waiting claim (the runner is stopping)."""
        self.stopping.set()
        for waiting in self._waiting.values():
            while waiting:
                waiting.popleft().set()

    def topic(self, name: str) -> TopicSettings | None:
        """The settings of external topic ``name``, or None."""
        return self.topics.get(name)

    def notify(self, topic: str | None = None) -> None:
        """Something of ``topic`` (every external topic when None) may be claimable: wake
        its first waiting claim."""
        for name in [topic] if topic is not None else list(self._waiting):
            if name in self._wakeups:
                self._wakeups[name] += 1
                self._wake_next(name)

    def _wake_next(self, topic: str) -> None:
        waiting = self._waiting[topic]
        if waiting:
            waiting.popleft().set()

    def _leave(self, topic: str, turn: anyio.Event) -> None:
        """A claim stops waiting: out of the line, or, when it was just woken, the
        wake-up goes to the next claim instead of being lost."""
        if turn.is_set():
            self._wake_next(topic)
        else:
            self._waiting[topic].remove(turn)

    async def _discard_unreadable(self, leased: Lease, settings: TopicSettings) -> None:
        """A leased job whose stored arguments cannot be read never reaches a worker: discard it."""
        reason = "its arguments cannot be read; not retried"
        outcome = Outcome(OutcomeKind.UNRUNNABLE, error=PayloadError(leased.job.args), reason=reason)
        finished = plan(leased.job, outcome, settings, self.clock())
        if await self.storage.conclude_lease(finished.ack, leased.token):
            finished.emit()

    async def claim(self, topic: str, holder: str, wait: float, lease: float | None = None) -> Lease | None:
        """The next due job of ``topic`` leased to ``holder``, waiting up to ``wait`` seconds."""
        settings = self.topics[topic]
        seconds = lease if lease is not None else self.settings.http.lease
        deadline = anyio.current_time() + wait
        woken = False
        while not self.stopping.is_set():
            seen = self._wakeups[topic]
            leased = await self.storage.lease_job(
                topic, settings.parallelism, holder, seconds, self.clock(), settings.limits
            )
            if leased is not None and isinstance(leased.job.args, Unreadable):
                await self._discard_unreadable(leased, settings)
                continue
            if leased is not None:
                events.emit(events.job_started, topic, job=leased.job)
                self._wake_next(topic)  # more may be due: the next claim in line looks too
                return leased
            if self._wakeups[topic] != seen:
                continue  # woken while looking: look again
            remaining = deadline - anyio.current_time()
            if remaining <= 0 or self.stopping.is_set():
                return None
            turn = anyio.Event()
            # A claim woken for nothing keeps its place at the head of the line.
            (self._waiting[topic].appendleft if woken else self._waiting[topic].append)(turn)
            try:
                with anyio.move_on_after(remaining):
                    await turn.wait()
            except BaseException:  # cancelled (the client went away)
                self._leave(topic, turn)
                raise
            if not turn.is_set():
                self._leave(topic, turn)
                return None
            woken = True
        return None

    async def complete(self, job_id: int, token: str, result: Any) -> Job:
        """Conclude a job leased under ``token`` as completed with ``result`` (JSON)."""
        return await self._conclude(job_id, token, Outcome(OutcomeKind.COMPLETED, result=result))

    async def fail(self, job_id: int, token: str, error: str) -> Job:
        """Conclude a job leased under ``token`` as failed: retry after the topic's backoff, or discard."""
        failed = Outcome(OutcomeKind.FAILED, error=ExternalJobError(error), traceback=None)
        return await self._conclude(job_id, token, failed)

    async def extend(self, job_id: int, token: str, seconds: float) -> float:
        """Extend the live lease held under ``token`` to now + ``seconds``; returns the new expiry."""
        expires = await self.storage.extend_lease(job_id, token, seconds, self.clock())
        if expires is None:
            raise _lost(job_id, await self.storage.get_lease(job_id), token)
        return expires

    async def _conclude(self, job_id: int, token: str, outcome: Outcome) -> Job:
        lease = await self.storage.get_lease(job_id)
        if lease is None or lease.job.topic not in self.topics or not _same(lease.token, token):
            raise _lost(job_id, lease, token)
        now = self.clock()
        # The attempt lasted from the claim (attempted_at) to this conclusion.
        started = lease.job.attempted_at
        duration = max(0.0, now - started) if started is not None else 0.0
        finished = plan(lease.job, outcome, self.topics[lease.job.topic], now, duration=duration)
        # Fenced by the token: the outcome and the lease's release are one transaction.
        if not await self.storage.conclude_lease(finished.ack, token):
            raise _lost(job_id, None, token)
        finished.emit()
        self.notify(lease.job.topic)
        return finished.snapshot

    async def run(self) -> None:
        """Until cancelled: return jobs whose lease ran out, and once per poll interval of
        each topic let one waiting claim look for jobs that became due."""
        if not self.topics:
            return
        interval = min(t.poll_interval for t in self.topics.values())
        next_look = dict.fromkeys(self.topics, 0.0)
        while True:
            expired = await self.storage.expire_leases(self.clock())
            for job in expired:
                events.emit(events.job_rescued, job.topic, job=job)
            now = anyio.current_time()
            for name, settings in self.topics.items():
                if any(job.topic == name for job in expired) or (self._waiting[name] and now >= next_look[name]):
                    next_look[name] = now + settings.poll_interval
                    self.notify(name)
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
