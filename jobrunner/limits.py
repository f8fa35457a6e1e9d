"""Limits across every node: a topic's global parallelism and its rate limit.

``[topics.X] global_parallelism`` caps the jobs of the topic executing at once on all
nodes together; ``rate_limit`` caps how many start in any window of ``period`` seconds.
Either may be split by a partition, the value of one top-level key of the job's args
(``partition = "args.account_id"``): the cap then holds for each value separately. Jobs
over a limit stay ``available`` (no attempt is used) until the limit lets them start.

The storage layer enforces both when it claims (see ``jobrunner.storage``); this module
holds the settings, the partition key of a job, and the arithmetic of what may start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The form of a partition: ``args.`` then the name of one top-level key of the args.
PARTITION_FORM = re.compile(r"args\.([A-Za-z0-9_\-]+)")


@dataclass(frozen=True, slots=True)
class GlobalParallelism:
    """At most ``allowed`` jobs of the topic executing at once across every node (per
    value of ``partition``, the args key named, when it is set)."""

    allowed: int
    partition: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``allowed`` jobs of the topic start in any window of ``period`` seconds,
    across every node (per value of ``partition``, the args key named, when it is set)."""

    allowed: int
    period: float
    partition: str | None = None


@dataclass(frozen=True, slots=True)
class TopicLimits:
    """The limits a claim of one topic obeys (both optional; at least one set)."""

    global_parallelism: GlobalParallelism | None = None
    rate_limit: RateLimit | None = None

    @property
    def partitioned(self) -> bool:
        """True when some limit counts per partition (claims then choose job by job)."""
        return any(limit is not None and limit.partition is not None
                   for limit in (self.global_parallelism, self.rate_limit))


def partition_key(args: Any, key: str | None) -> str:
    """The partition of a job with ``args`` under a limit keyed by ``key`` ('' when the
    limit has no partition). Jobs without that key (or whose args are not an object)
    share one partition, ``null``. The value's JSON text, so ``1`` and ``"1"`` differ."""
    if key is None:
        return ""
    value = args.get(key) if isinstance(args, Mapping) else None
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class Capacity:
    """How many more jobs may start now: overall (``total``) and per partition.

    Built from what the database counted under the topic's claim lock: jobs executing
    (per concurrency partition) and jobs started within the rate window (per rate
    partition). :meth:`take` books one job and says whether it fits; ``rate_bound``
    becomes True when the rate limit (not the others) kept some job from starting.
    """

    limits: TopicLimits
    total: int
    executing: dict[str, int]
    started: dict[str, int]
    rate_bound: bool = False

    def take(self, args: Any) -> bool:
        """Book one job with ``args`` if every limit lets it start now; True when booked."""
        if self.total <= 0:
            return False
        concurrency, rate = self.limits.global_parallelism, self.limits.rate_limit
        if concurrency is not None:
            ckey = partition_key(args, concurrency.partition)
            if self.executing.get(ckey, 0) >= concurrency.allowed:
                return False
        if rate is not None:
            rkey = partition_key(args, rate.partition)
            if self.started.get(rkey, 0) >= rate.allowed:
                self.rate_bound = True
                return False
            self.started[rkey] = self.started.get(rkey, 0) + 1
        if concurrency is not None:
            self.executing[ckey] = self.executing.get(ckey, 0) + 1
        self.total -= 1
        return True

    def unpartitioned_room(self) -> int:
        """With no partition, how many jobs may start now (the least room of any limit)."""
        room = self.total
        if self.limits.global_parallelism is not None:
            room = min(room, self.limits.global_parallelism.allowed - self.executing.get("", 0))
        if self.limits.rate_limit is not None:
            rate_room = self.limits.rate_limit.allowed - self.started.get("", 0)
            self.rate_bound = rate_room < room
            room = min(room, rate_room)
        return max(0, room)


__all__ = ["PARTITION_FORM", "Capacity", "GlobalParallelism", "RateLimit", "TopicLimits", "partition_key"]
