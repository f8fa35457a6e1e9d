"""The census the dashboard and ``/metrics`` share: one cached read of the whole table.

Counting jobs per topic and state reads an index of the jobs table, which costs more as
the table grows, so it is never done per request or per event: every reader asks
:class:`CensusCache` for a census no older than it needs, one read serves them all, and
a read that took ``t`` seconds is not repeated within ``t / share`` seconds whatever
they ask (by default the census takes at most 5 % of one read thread).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from .storage.records import Census

if TYPE_CHECKING:
    from .runner import Runner


class CensusCache:
    """The latest :class:`~jobrunner.storage.records.Census` of a runner's database."""

    def __init__(self, runner: Runner, *, share: float = 0.05) -> None:
        self.runner = runner
        self.share = share
        self._census: Census | None = None
        self._taken = 0.0  # monotonic time of the last read
        self._cost = 0.0   # seconds the last read took
        self._started = 0.0
        self._lock = anyio.Lock()

    @property
    def read_since(self) -> float:
        """Monotonic time at which the latest census's read began (0 before the first)."""
        return self._started

    @property
    def latest(self) -> Census | None:
        """The census last taken, however old (None before the first)."""
        return self._census

    def _fresh(self, max_age: float) -> bool:
        age = time.monotonic() - self._taken
        return self._census is not None and age < max(max_age, self._cost / self.share)

    async def get(self, max_age: float) -> Census:
        """A census taken at most ``max_age`` seconds ago (or later, when reads are slow)."""
        if self._fresh(max_age):
            assert self._census is not None
            return self._census
        async with self._lock:
            if not self._fresh(max_age):  # another caller may have just read it
                runner = self.runner
                started = time.monotonic()
                names, now = list(runner.settings.topics), runner.clock()
                self._census = await runner.in_read_thread(lambda: runner.store.insight.census(names, now))
                self._taken = time.monotonic()
                self._cost = self._taken - started
                self._started = started
            assert self._census is not None
            return self._census


__all__ = ["CensusCache"]
