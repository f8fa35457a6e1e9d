"""The part of :class:`~jobrunner.runner.Runner` that concerns enqueueing: ``enqueue`` and
``enqueue_many`` (also inside the caller's transaction), their async forms, and
``store_rows``, which inserts, announces and wakes the topics that can start the jobs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import events
from .config import Settings
from .enqueue import WorkerDefaults, build_row, job_defaults
from .job import Job, JobState
from .storage import NewJob
from .txenqueue import insert_in_transaction
from .worker import Worker

if TYPE_CHECKING:
    from .storage import Storage

T = TypeVar("T")

#: One item of :meth:`Runner.enqueue_many`: (worker, args) or (worker, args, options).
EnqueueItem = tuple[type[Worker] | str, Any] | tuple[type[Worker] | str, Any, Mapping[str, Any]]


class Enqueuing:
    """Mixed into the Runner, which provides the attributes and methods declared here."""

    settings: Settings
    clock: Callable[[], float]

    @property
    def _storage(self) -> Storage:  # pragma: no cover - the Runner's
        raise NotImplementedError

    def _wake(self, topic: str) -> None:  # pragma: no cover - the Runner's
        raise NotImplementedError

    async def in_thread(self, fn: Callable[[], T]) -> T:  # pragma: no cover - the Runner's
        """Run ``fn`` in the storage writers' thread."""
        raise NotImplementedError

    def enqueue(
        self,
        worker: type[Worker] | str,
        args: Any = None,
        *,
        priority: int | str | None = None,
        delay: float | None = None,
        scheduled_at: Any = None,
        max_attempts: int | None = None,
        topic: str | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        unique: Mapping[str, Any] | bool | None = None,
        depends_on: Iterable[Job | int] | None = None,
        on_dependency_failure: str | None = None,
        connection: Any = None,
    ) -> Job:
        """Store one job and return it. Raises EnqueueError, storing nothing, on bad input.

        ``priority`` is 0 (highest) .. 9 or ``"critical"``, ``"high"``, ``"normal"``,
        ``"low"``. ``topic`` names a topic declared ``external = true`` to enqueue for
        its external workers (``worker`` is then any name they understand); for a
        Worker class it must be the worker's own topic.

        ``tags`` (strings) and ``meta`` (a JSON object) travel with the job.
        ``unique={"period": 300}`` (optional ``keys``, ``states``; default: the worker's
        ``unique``; False: not unique) returns a matching job inserted within the period
        instead of inserting (``job.duplicate`` is then True). ``depends_on`` (jobs or
        ids) keeps the job ``blocked`` until every one of them completed; when one ends
        discarded or cancelled the job is cancelled, unless ``on_dependency_failure``
        is ``"run"``. Unknown dependency ids raise EnqueueError.

        ``connection`` (a SQLAlchemy ``Connection`` or ORM ``Session`` on this runner's
        database) inserts the job inside the caller's transaction: it exists once that
        commits, not at all if it rolls back, and nothing is woken before the commit
        (see :mod:`jobrunner.txenqueue`).
        """
        options = _given({"priority": priority, "delay": delay, "scheduled_at": scheduled_at,
                          "max_attempts": max_attempts, "topic": topic, "tags": tags, "meta": meta,
                          "depends_on": depends_on, "on_dependency_failure": on_dependency_failure,
                          "unique": unique})
        rows = [build_row(self.settings, worker, args, options, self.clock())]
        if connection is not None:
            return self._insert_on(connection, rows)[0]
        return self.store_rows(rows)[0]

    def enqueue_many(self, items: Iterable[EnqueueItem], *, connection: Any = None) -> list[Job]:
        """Store many jobs in one transaction; all or none. Returns them in the order given.

        Each item is ``(worker, args)`` or ``(worker, args, options)``; options are the
        keyword arguments of :meth:`enqueue` (``priority``, ``delay``, ``scheduled_at``,
        ``max_attempts``, ``topic``, ``tags``, ``meta``, ``unique``, ``depends_on``,
        ``on_dependency_failure``). For jobs that depend on each other, see
        :class:`jobrunner.Workflow`. ``connection``: as for :meth:`enqueue`.
        """
        if connection is not None:
            return self._insert_on(connection, self._rows(items))
        return self.store_rows(self._rows(items))

    def _insert_on(self, connection: Any, rows: list[NewJob]) -> list[Job]:
        """Insert in the caller's transaction (:mod:`jobrunner.txenqueue`)."""
        return insert_in_transaction(self._storage, connection, rows, self._announce_committed)

    def _announce_committed(self, stored: list[Job]) -> None:
        """Jobs were committed (by :meth:`store_rows` or the caller's transaction): announce
        them, wake their topics."""
        if events.wanted(events.job_inserted):
            for job in stored:
                events.emit(events.job_inserted, job.topic, job=job, duplicate=job.duplicate)
        for topic in {job.topic for job in stored if job.state == JobState.AVAILABLE and not job.duplicate}:
            self._wake(topic)

    async def enqueue_async(
        self,
        worker: type[Worker] | str,
        args: Any = None,
        *,
        priority: int | str | None = None,
        delay: float | None = None,
        scheduled_at: Any = None,
        max_attempts: int | None = None,
        topic: str | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        unique: Mapping[str, Any] | bool | None = None,
        depends_on: Iterable[Job | int] | None = None,
        on_dependency_failure: str | None = None,
    ) -> Job:
        """Like :meth:`enqueue`, without blocking the event loop."""
        options = _given({"priority": priority, "delay": delay, "scheduled_at": scheduled_at,
                          "max_attempts": max_attempts, "topic": topic, "tags": tags, "meta": meta,
                          "depends_on": depends_on, "on_dependency_failure": on_dependency_failure,
                          "unique": unique})
        row = build_row(self.settings, worker, args, options, self.clock())
        return (await self.in_thread(lambda: self.store_rows([row])))[0]

    async def enqueue_many_async(self, items: Iterable[EnqueueItem]) -> list[Job]:
        """Like :meth:`enqueue_many`, without blocking the event loop."""
        rows = self._rows(items)
        return await self.in_thread(lambda: self.store_rows(rows))

    def _rows(self, items: Iterable[EnqueueItem]) -> list[NewJob]:
        now = self.clock()
        rows = []
        resolved: dict[tuple[Any, Any], WorkerDefaults] = {}
        for item in items:
            worker, args, *rest = item
            options = rest[0] if rest else None
            topic = options.get("topic") if isinstance(options, Mapping) else None
            defaults = resolved.get((worker, topic))
            if defaults is None:
                defaults = resolved[(worker, topic)] = job_defaults(self.settings, worker, topic)
            rows.append(build_row(self.settings, worker, args, options, now, defaults))
        return rows

    def store_rows(self, rows: Sequence[NewJob]) -> list[Job]:
        """Insert rows made by :func:`jobrunner.enqueue.build_row` in one transaction,
        announce them, and wake the topics that can start them now."""
        stored = self._storage.jobs.insert(rows)
        self._announce_committed(stored)
        return stored


def _given(options: dict[str, Any]) -> dict[str, Any] | None:
    """The options given (None is "not given" for every one): a call with none takes
    :func:`~jobrunner.enqueue.build_row`'s short way."""
    given = {name: value for name, value in options.items() if value is not None}
    return given or None


__all__ = ["EnqueueItem", "Enqueuing"]
