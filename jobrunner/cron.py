"""Periodic jobs: the schedules a daemon runs, and the loop that inserts their jobs.

Schedules come from ``[[cron]]`` entries of the configuration and from the ``cron``
attribute of Worker classes in ``[runner] modules``. Every daemon runs the loop; none
is a leader. At each slot every daemon tries to insert the slot's job, and the
database keeps exactly one (see :mod:`jobrunner.storage.cron`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from .config import Settings
from .enqueue import build_row
from .errors import ConfigError, EnqueueError, UnknownWorkerError
from .job import Job
from .schedule import Cron, local_iso
from .storage import Storage
from .storage.cron import CronPlan
from .storage.records import NewJob
from .worker import Worker
from .worker_lookup import registered_workers, resolve_worker, worker_path

logger = logging.getLogger("jobrunner.cron")

T = TypeVar("T")

#: Longest sleep between two looks at the clock (seconds): a clock set forward or
#: back is noticed within this.
MAX_SLEEP = 60.0
#: Seconds before a schedule whose insert failed (database unreachable) is tried again.
RETRY_AFTER = 1.0


def _where(settings: Settings, index: int, entry: Cron) -> str:
    return f"{settings.source}: [[cron]] #{index + 1} ({entry.name or entry.worker})"


def _resolved(settings: Settings, where: str, entry: Cron, worker: type[Worker]) -> Cron:
    """``entry`` for ``worker``, checked: its topic runs here and its arguments enqueue."""
    topic = settings.topics.get(worker.topic or "")
    if topic is None or topic.external:
        why = "is not configured" if topic is None else "is external (its jobs are not run by Python workers)"
        raise ConfigError(f"{where}: key 'worker': the topic {worker.topic!r} of {worker_path(worker)} {why}")
    try:
        build_row(settings, worker, dict(entry.args), None, 0.0)
    except EnqueueError as exc:
        raise ConfigError(f"{where}: key 'args': {exc}") from None
    return dataclasses.replace(entry, worker=worker_path(worker))


def _in_modules(worker: type[Worker], modules: Sequence[str]) -> bool:
    return any(worker.__module__ == m or worker.__module__.startswith(f"{m}.") for m in modules)


def schedules(settings: Settings) -> list[Cron]:
    """Every schedule of ``settings``: the ``[[cron]]`` entries, then the ``cron`` of Worker
    classes in ``[runner] modules`` (import them first).

    Raises ConfigError naming the entry and key: an unknown worker, a worker whose topic
    is not configured here, arguments the worker refuses, two schedules of one name.
    """
    found: list[Cron] = []
    for index, entry in enumerate(settings.cron):
        where = _where(settings, index, entry)
        try:
            worker = resolve_worker(entry.worker or "")
        except UnknownWorkerError as exc:
            raise ConfigError(f"{where}: key 'worker': {exc}") from None
        found.append(_resolved(settings, where, entry, worker))
    for worker in registered_workers():
        if worker.cron_schedules and _in_modules(worker, settings.runner.modules):
            where = f"{worker_path(worker)}.cron"
            found.extend(_resolved(settings, where, entry, worker) for entry in worker.cron_schedules)
    names: set[str] = set()
    for entry in found:
        if entry.key in names:
            raise ConfigError(f"{settings.source}: two cron schedules are named {entry.key!r}: give each a "
                              "distinct name ([[cron]] key 'name', or Cron(..., name=...))")
        names.add(entry.key)
    return found


class CronScheduler:
    """Inserts each schedule's jobs as its slots come due, for as long as it runs.

    ``announce(schedule, jobs)`` is called after each insert (the runner emits
    ``job_inserted`` with ``schedule=`` and wakes the topic).
    """

    def __init__(
        self,
        entries: Sequence[Cron],
        settings: Settings,
        store: Storage,
        in_thread: Callable[[Callable[[], Any]], Awaitable[Any]],
        clock: Callable[[], float],
        announce: Callable[[str, list[Job]], None],
    ) -> None:
        self.entries = list(entries)
        self.settings = settings
        self.store = store
        self.in_thread = in_thread
        self.clock = clock
        self.announce = announce
        #: When this scheduler first looked (slots before it are never missed ones).
        self.since: float | None = None
        self._due_at: dict[str, float] = {}

    async def run(self) -> None:
        """Insert due slots until cancelled (missed ones first, as each schedule's policy says)."""
        while True:
            wake = await self.fire_due(self.clock())
            # A little past the slot, so the clock reads at least the slot when we wake.
            await anyio.sleep(min(max(wake - self.clock(), 0.0) + 0.001, MAX_SLEEP))

    async def fire_due(self, now: float) -> float:
        """Insert the jobs of every schedule with a slot due by ``now``; returns when the
        next slot of any schedule comes due (POSIX seconds)."""
        if self.since is None:
            self.since = now  # slots before the first look are not this daemon's to catch up
        for entry in self.entries:
            if self._due_at.get(entry.key, -math.inf) <= now:
                self._due_at[entry.key] = await self._fire(entry, self.since, now)
        return min(self._due_at.values(), default=math.inf)

    async def _fire(self, entry: Cron, since: float, now: float) -> float:
        """Insert ``entry``'s due slots; returns when to look at it again."""
        try:
            plan = self._plan(entry, since, now)
            inserted = await self.in_thread(lambda: self.store.cron.insert_jobs(entry.key, plan))
        except Exception as exc:  # noqa: BLE001 - a failed insert is retried; the runner goes on
            logger.error("cron schedule %r: inserting its job failed: %s", entry.key, exc,
                         extra={"event": "cron_error"})
            return now + RETRY_AFTER
        if inserted:
            self.announce(entry.key, [job for _, job in inserted])
        following = entry.next_after(now)
        return following[0] if following else math.inf

    def _plan(self, entry: Cron, since: float, now: float) -> CronPlan:
        def plan(last: int | None) -> list[tuple[int, NewJob]]:
            worker = entry.worker or ""
            return [(slot, build_row(self.settings, worker, dict(entry.args), {"scheduled_at": slot}, now))
                    for slot in entry.due(last, since, now)]
        return plan


def describe(entries: Sequence[Cron], store: Storage, now: float, count: int = 3) -> list[dict[str, Any]]:
    """What ``python -m jobrunner cron`` shows of each schedule: its settings, its next
    ``count`` slots (ISO 8601 in its time zone) and the last job it inserted."""
    last = store.cron.last_jobs(entry.key for entry in entries)
    described = []
    for entry in entries:
        stored = last.get(entry.key)
        job = stored[1] if stored else None
        described.append({
            "name": entry.key, "worker": entry.worker, "schedule": entry.schedule, "timezone": entry.timezone,
            "missed": entry.missed, "args": dict(entry.args),
            "next": [local_iso(slot, entry.zone) for slot in entry.next_after(now, count)],
            "last": None if stored is None else {
                "slot": local_iso(stored[0], entry.zone), "job_id": job.id if job else None,
                "state": job.state if job else None,
            },
        })
    return described


__all__ = ["MAX_SLEEP", "RETRY_AFTER", "CronScheduler", "describe", "schedules"]
