"""The typed async storage API: every verb the engine, HTTP layer and testing kit use.

Each method hops to a storage thread (:mod:`.lanes`), runs one storage verb there and
returns its typed result. The hop is written once (:meth:`AsyncStorage._hop`). Writes
queue on one lane (one thread at a time on SQLite, which takes one writer anyway: waiting here is cheaper
than waiting on its lock); reads have threads of their own, so a flood of user queries
never delays the claim/ack path or the heartbeat, and never waits behind writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from ..job import Job
from ..limits import TopicLimits
from .lanes import Lane
from .records import Ack, ClaimRequest, CycleResult, Lease, NewJob, TopicControl

if TYPE_CHECKING:
    from . import Storage

P = ParamSpec("P")
T = TypeVar("T")

#: Threads serving read-only user queries (HTTP listings, stats) at once.
READ_THREADS = 4
#: Threads writing at once where the database takes concurrent writers (PostgreSQL).
WRITE_THREADS = 8


class AsyncStorage:
    """Async access to a :class:`~jobrunner.storage.Storage`, one named method per verb."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        serial = storage.db.dialect.serial_writes
        self._writes = Lane("writer", 1 if serial else WRITE_THREADS)
        self._reads = Lane("reader", READ_THREADS)

    async def _hop(self, read: bool, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in a storage thread: the one hop from the event loop to the database."""
        def call() -> T:
            return fn(*args, **kwargs)
        return await (self._reads if read else self._writes).run(call)

    async def run_blocking(self, fn: Callable[[], T]) -> T:
        """Run blocking work that writes through the storage (the schema check, an
        enqueue and its announcement) in the writers' thread."""
        return await self._hop(False, fn)

    async def read_blocking(self, fn: Callable[[], T]) -> T:
        """Run blocking work that only reads (a listing and its encoding) in a reader thread."""
        return await self._hop(True, fn)

    # ------------------------------------------------------------ jobs and the cycle

    async def insert(self, rows: Sequence[NewJob]) -> list[Job]:
        """Insert ``rows`` in one transaction (see :meth:`.jobs.JobVerbs.insert`)."""
        return await self._hop(False, self.storage.jobs.insert, rows)

    async def cycle(self, acks: Sequence[Ack] = (), request: ClaimRequest | None = None) -> CycleResult:
        """Write ``acks`` and serve ``request`` in one transaction (see :meth:`.jobs.JobVerbs.cycle`)."""
        return await self._hop(False, self.storage.jobs.cycle, acks, request)

    async def stage_due(self, topic: str, now: float) -> int:
        """Make due scheduled and retryable jobs of ``topic`` available."""
        return await self._hop(False, self.storage.jobs.stage_due, topic, now)

    async def get_job(self, job_id: int) -> Job | None:
        """The job with that id, or None."""
        return await self._hop(True, self.storage.jobs.get, job_id)

    async def stats(self, topics: Iterable[str] = ()) -> dict[str, dict[str, int]]:
        """Job counts per topic and state."""
        return await self._hop(True, self.storage.jobs.stats, topics)

    # ------------------------------------------------------------ operator actions

    async def control(self, topic: str, running: Sequence[tuple[int, int]], node: str) -> TopicControl:
        """Pause state of ``topic`` and the fate of ``node``'s ``running`` executions."""
        return await self._hop(False, self.storage.operator.control, topic, running, node)

    async def prune(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` final jobs finished before ``before``."""
        return await self._hop(False, self.storage.operator.prune, before, limit)

    # ------------------------------------------------------------ nodes

    async def register_node(self, node: str, now: float, topics: Iterable[str]) -> None:
        """Record that ``node`` is alive at ``now`` and serves ``topics``."""
        await self._hop(False, self.storage.nodes.register, node, now, topics)

    async def heartbeat(self, node: str, now: float) -> None:
        """Record that ``node`` is alive at ``now``."""
        await self._hop(False, self.storage.nodes.heartbeat, node, now)

    async def remove_node(self, node: str) -> None:
        """Forget ``node`` (it stopped cleanly)."""
        await self._hop(False, self.storage.nodes.remove, node)

    async def rescue_orphans(self, now: float, alive_since: float) -> list[Job]:
        """Put back the jobs of nodes silent since before ``alive_since``."""
        return await self._hop(False, self.storage.nodes.rescue_orphans, now, alive_since)

    # ------------------------------------------------------------ leases

    async def lease_job(
        self, topic: str, parallelism: int, holder: str, seconds: float, now: float,
        limits: TopicLimits | None = None,
    ) -> Lease | None:
        """Claim the next due job of ``topic`` for an external worker (within ``limits``)."""
        return await self._hop(False, self.storage.leases.claim, topic, parallelism, holder, seconds, now, limits)

    async def get_lease(self, job_id: int) -> Lease | None:
        """The live lease on ``job_id``, or None."""
        return await self._hop(False, self.storage.leases.get, job_id)

    async def extend_lease(self, job_id: int, token: str, seconds: float, now: float) -> float | None:
        """Extend the lease on ``job_id`` held under ``token``; its new expiry, or None."""
        return await self._hop(False, self.storage.leases.extend, job_id, token, seconds, now)

    async def set_progress(self, job_id: int, attempt: int, progress: float) -> bool:
        """Record the progress of a job while it executes at ``attempt`` (False: it no longer does)."""
        return await self._hop(False, self.storage.scheduling.set_progress, job_id, attempt, progress)

    async def conclude_lease(self, ack: Ack, token: str) -> bool:
        """Write a leased job's outcome and release its lease, in one transaction."""
        return await self._hop(False, self.storage.leases.conclude, ack, token)

    async def expire_leases(self, now: float) -> list[Job]:
        """Put back every job whose lease ran out before ``now``."""
        return await self._hop(False, self.storage.leases.expire, now)


__all__ = ["READ_THREADS", "AsyncStorage"]
