"""Cron schedules: expressions parsed by cronsim, time zones, and the slots that are due.

An expression has 5 fields (minute hour day-of-month month day-of-week), or 6 with
seconds first, or is one of the nicknames ``@yearly`` (``@annually``), ``@monthly``,
``@weekly``, ``@daily`` (``@midnight``) and ``@hourly``. Slots are computed in the
schedule's time zone with cronsim, which follows Debian cron across DST changes: a
job at a fixed local time that falls in the hour skipped in spring runs right after
the change, and one in the hour repeated in autumn runs once; expressions that run
every hour or more often simply follow real time.

A slot is identified by its instant (POSIX seconds, a whole number), so two runs at
"02:00" on an autumn night are two slots and one run is never counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import ScheduleError

#: What to do with slots that came due while no daemon ran (see :func:`Cron.due`).
MISSED_POLICIES = ("skip", "latest", "all")
#: ``missed = "all"`` inserts at most this many missed slots of one schedule (the newest).
CATCH_UP_LIMIT = 1000
#: A slot found later than this (seconds) counts as missed (``missed = "skip"`` drops it).
ON_TIME = 60.0

NICKNAMES: Mapping[str, str] = MappingProxyType({
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
})


def parse_expression(text: str) -> str:
    """The 5- or 6-field expression ``text`` stands for; ScheduleError when cronsim refuses it."""
    if not isinstance(text, str) or not text.strip():
        raise ScheduleError(f"a cron expression is a non-empty string, got {text!r}")
    expression = NICKNAMES.get(text.strip().lower(), text.strip())
    if expression.startswith("@"):
        raise ScheduleError(f"unknown nickname {text!r} (known: {', '.join(NICKNAMES)})")
    if len(expression.split()) not in (5, 6):
        raise ScheduleError(f"bad cron expression {text!r}: 5 fields, or 6 with seconds first")
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ScheduleError(f"bad cron expression {text!r}: {exc}") from None
    return expression


def parse_timezone(name: str) -> tzinfo:
    """The zone named ``name`` (an IANA name such as ``Europe/Paris``, or ``UTC``)."""
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"a time zone is an IANA name such as 'Europe/Paris', got {name!r}")
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r} (an IANA name such as 'Europe/Paris')") from None


@dataclass(frozen=True, slots=True)
class Cron:
    """A periodic job: ``schedule`` in ``timezone``, inserting ``worker`` with ``args``.

    On a Worker class, ``cron = "*/5 * * * *"``, ``cron = Cron("0 9 * * MON", args={...},
    timezone="Europe/Paris", missed="latest")`` or a list of them (``worker`` is then the
    class). ``name`` identifies the schedule in the database (default: worker and
    expression, e.g. ``"topics.demo.PrintMessage */5 * * * *"``); ``missed`` says what
    to do with slots that came due while no daemon ran (``skip``, ``latest``, ``all``).
    """

    schedule: str
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    timezone: str = "UTC"
    missed: str = "skip"
    name: str | None = None
    worker: str | None = None
    expression: str = field(init=False, repr=False, compare=False)
    zone: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expression", parse_expression(self.schedule))
        object.__setattr__(self, "zone", parse_timezone(self.timezone))
        if self.missed not in MISSED_POLICIES:
            raise ScheduleError(f"missed must be one of {', '.join(MISSED_POLICIES)}, got {self.missed!r}")
        if not isinstance(self.args, Mapping):
            raise ScheduleError(f"args must be a table (a mapping), got {type(self.args).__name__}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise ScheduleError(f"name must be a non-empty string, got {self.name!r}")

    @property
    def key(self) -> str:
        """The schedule's name in the database: ``name``, else worker and expression."""
        return self.name or f"{self.worker} {self.schedule}"

    def _local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, tz=self.zone)

    def next_after(self, ts: float, count: int = 1) -> list[int]:
        """The ``count`` slots strictly after ``ts`` (POSIX seconds)."""
        found: list[int] = []
        for when in CronSim(self.expression, self._local(math.floor(ts))):
            found.append(int(when.timestamp()))
            if len(found) == count:
                break
        return found

    def due(self, last: int | None, since: float, now: float) -> list[int]:
        """The slots to insert now, oldest first.

        Due are the slots after ``last`` (the newest slot stored, None for a schedule
        never run, then after ``since``: slots before this daemon started are not
        missed) up to ``now``. The newest due slot is on time when it is at most
        ``ON_TIME`` seconds old; every other one was missed. ``skip`` inserts only an
        on-time slot, ``latest`` the newest due slot however late, ``all`` every due
        slot up to the newest ``CATCH_UP_LIMIT``.
        """
        floor = last if last is not None else math.floor(since)
        slots = self._between(floor, now)
        if not slots:
            return []
        if self.missed == "all":
            return slots
        newest = slots[-1]
        if self.missed == "skip" and now - newest > ON_TIME:
            return []
        return [newest]

    def _between(self, floor: float, now: float) -> list[int]:
        """Slots in (floor, now], at most the newest CATCH_UP_LIMIT."""
        slots: list[int] = []
        for when in CronSim(self.expression, self._local(math.floor(floor))):
            slot = int(when.timestamp())
            if slot > now:
                return slots
            slots.append(slot)
            if len(slots) > CATCH_UP_LIMIT:
                break
        # Too many: restart the scan just before the newest CATCH_UP_LIMIT slots.
        newest = _back(self.expression, self._local(now), CATCH_UP_LIMIT + 1)
        return [s for s in self._forward(newest, now) if s > floor][-CATCH_UP_LIMIT:]

    def _forward(self, start: int, now: float) -> list[int]:
        slots = []
        for when in CronSim(self.expression, self._local(start)):
            slot = int(when.timestamp())
            if slot > now:
                break
            slots.append(slot)
        return slots


def _back(expression: str, now: datetime, count: int) -> int:
    """The instant of the ``count``-th newest slot at or before ``now`` (a scan start)."""
    reverse = CronSim(expression, now.replace(microsecond=0) + timedelta(microseconds=1), reverse=True)
    when = now
    for _ in range(count):
        when = next(reverse)
    return int(when.timestamp())


def local_iso(ts: float, zone: tzinfo) -> str:
    """``ts`` as ISO 8601 in ``zone`` (with its UTC offset)."""
    return datetime.fromtimestamp(ts, tz=zone).isoformat()


__all__ = ["CATCH_UP_LIMIT", "MISSED_POLICIES", "NICKNAMES", "ON_TIME", "Cron", "ScheduleError",
           "local_iso", "parse_expression", "parse_timezone"]
