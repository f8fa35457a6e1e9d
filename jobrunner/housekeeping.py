"""Periodic work of a running node: heartbeat, rescue of dead nodes' jobs, pruning."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from . import events
from .config import RunnerSettings
from .heartbeat import Heartbeat
from .job import Job
from .storage import AsyncStorage

logger = logging.getLogger("jobrunner.housekeeping")


class Housekeeper:
    """Keeps this node's heartbeat fresh, rescues orphaned jobs and prunes old ones.

    Every ``heartbeat_interval``: write the heartbeat, then put back the jobs left
    ``executing`` by nodes silent for ``rescue_after`` (events ``job_rescued``). Every
    ``prune_interval``: delete finished jobs older than ``prune_after`` in batches of
    ``prune_limit``. A failure is logged and retried next round; it never stops the runner.
    """

    def __init__(
        self,
        storage: AsyncStorage,
        settings: RunnerSettings,
        node: str,
        on_rescued: Callable[[list[Job]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.node = node
        self.on_rescued = on_rescued
        self.clock = clock

    async def register(self, topics: Iterable[str]) -> None:
        """First heartbeat, naming the ``topics`` this node serves: a node is known alive
        before it claims anything."""
        await self.storage.register_node(self.node, self.clock(), topics)

    async def unregister(self) -> None:
        """Forget this node (clean stop)."""
        await self.storage.remove_node(self.node)

    async def run(self) -> None:
        """Loop until cancelled (the heartbeat itself is written by a thread, see :mod:`.heartbeat`)."""
        heartbeat = Heartbeat(self._beat, self.settings.heartbeat_interval, self.settings.rescue_after / 2)
        heartbeat.start()
        try:
            await self._loop(heartbeat)
        finally:
            await heartbeat.stop()

    def _beat(self) -> None:
        # The heartbeat thread's own write: it must not wait behind the event loop.
        self.storage.storage.nodes.heartbeat(self.node, self.clock())

    async def _loop(self, heartbeat: Heartbeat) -> None:
        next_beat = next_prune = 0.0
        while True:
            now = time.monotonic()
            heartbeat.loop_alive()
            if now >= next_beat:
                next_beat = now + self.settings.heartbeat_interval
                await self._guarded("rescue", self.rescue)
            if self.settings.prune_after > 0 and now >= next_prune:
                next_prune = now + self.settings.prune_interval
                await self._guarded("prune", self.prune)
            await anyio.sleep(max(0.0, min(next_beat, next_prune if self.settings.prune_after > 0 else math.inf)
                                  - time.monotonic()))

    async def _guarded(self, what: str, step: Callable[[], Awaitable[Any]]) -> None:
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - a failed round must not stop housekeeping
            logger.error("%s failed: %s: %s; retrying next round", what, type(exc).__name__, exc,
                         extra={"event": f"{what}_failed"})

    async def rescue(self) -> list[Job]:
        """One rescue pass: put back the jobs of nodes silent for ``rescue_after``."""
        now = self.clock()
        rescued = await self.storage.rescue_orphans(now, now - self.settings.rescue_after)
        for job in rescued:
            events.emit(events.job_rescued, job.topic, job=job)
        if rescued:
            self.on_rescued(rescued)
        return rescued

    async def prune(self) -> int:
        """Delete old finished jobs, one bounded batch per transaction; returns how many."""
        before = self.clock() - self.settings.prune_after
        total = 0
        while True:
            deleted = await self.storage.prune(before, self.settings.prune_limit)
            total += deleted
            if deleted < self.settings.prune_limit:
                break
        if total:
            logger.info("pruned %d finished jobs older than %gs", total, self.settings.prune_after,
                        extra={"event": "jobs_pruned"})
        return total
