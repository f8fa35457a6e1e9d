"""Claims of topics with limits across nodes: ``global_parallelism`` and ``rate_limit``.

Such a claim is one decision per topic at a time on every node: it takes the topic's
claim lock (the transaction's write lock on SQLite, an advisory lock on PostgreSQL,
the same one external-worker leases take), then counts what the limits depend on — the
topic's executing jobs, its starts within the rate window — and claims only what fits.
Rate-limited claims add one row per start to ``jobrunner_starts`` and forget the rows
older than the period, so counting the window reads a few index entries. A log of its
own rather than the jobs' ``attempted_at``: a retry overwrites that, and two starts of
one job in a window would count once.

Without a partition the count is a number and the claim is the producers' one statement
with a smaller LIMIT. With one, jobs are chosen in claim order (priority, then FIFO),
skipping those whose partition is full, and claimed by id.

Topics without limits never come here: their claim takes no lock and counts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..job import Job
from ..limits import Capacity, TopicLimits, partition_key
from ..payload import decode
from . import statements as sql
from .database import Database, Prepared
from .rows import row_to_job

#: Available jobs read per batch while choosing jobs of partitions that are not full.
CANDIDATE_BATCH = 200


class LimitedClaims:
    """Serialise, count and claim for topics with limits (runs inside the caller's transaction)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = None if db.dialect.serial_writes else db.prepare(sql.CLAIM_LOCK)
        self._claim = db.prepare(sql.claim(db.dialect))
        self._executing = db.prepare(sql.RUNNING_COUNT)
        self._executing_args = db.prepare(sql.EXECUTING_ARGS)
        self._forget = db.prepare(sql.FORGET_STARTS)
        self._started = db.prepare(sql.STARTED_COUNTS)
        self._record = db.prepare(sql.RECORD_START)
        self._first = db.prepare(sql.candidates(after=False))
        self._next = db.prepare(sql.candidates(after=True))
        #: Prepared "claim these n ids" statements, by n.
        self._claim_ids: dict[int, Prepared] = {}

    def serialise(self, cursor: Any, topic: str) -> None:
        """Hold the claim lock of ``topic`` until the transaction ends (a no-op where the
        transaction already excludes every other writer)."""
        if self._lock is not None:
            cursor.execute(self._lock.sql, self._lock.params({"b_key": f"claim:{topic}"}))

    def claim(
        self, cursor: Any, topic: str, limits: TopicLimits, limit: int, now: float, node: str
    ) -> tuple[list[Job], float | None]:
        """Claim up to ``limit`` jobs of ``topic`` within ``limits`` (the lock is held).

        Returns the jobs and, when the rate limit held some back, the time the window
        next has room (a claimer may look again then); None otherwise.
        """
        capacity, oldest = self._count(cursor, topic, limits, limit, now)
        if limits.partitioned:
            jobs = self._claim_partitioned(cursor, topic, capacity, now, node)
        else:
            room = capacity.unpartitioned_room()
            jobs = self._claim_first(cursor, topic, room, now, node) if room > 0 else []
        rate = limits.rate_limit
        if rate is not None and jobs:
            cursor.executemany(self._record.sql, [self._record.params(
                {"b_topic": topic, "b_partition": partition_key(job.args, rate.partition), "b_now": now}
            ) for job in jobs])
        if rate is None or not capacity.rate_bound:
            return jobs, None
        # Some may have been held back: the window has room again when its oldest start leaves it.
        first = now if jobs and (oldest is None or now < oldest) else oldest
        return jobs, None if first is None else first + rate.period

    def _count(
        self, cursor: Any, topic: str, limits: TopicLimits, limit: int, now: float
    ) -> tuple[Capacity, float | None]:
        executing: dict[str, int] = {}
        started: dict[str, int] = {}
        oldest: float | None = None
        concurrency, rate = limits.global_parallelism, limits.rate_limit
        if concurrency is not None and concurrency.partition is None:
            cursor.execute(self._executing.sql, self._executing.params({"b_topic": topic}))
            executing[""] = cursor.fetchone()[0]
        elif concurrency is not None:
            cursor.execute(self._executing_args.sql, self._executing_args.params({"b_topic": topic}))
            for (args,) in cursor.fetchall():
                key = partition_key(decode(args, "args"), concurrency.partition)
                executing[key] = executing.get(key, 0) + 1
        if rate is not None:
            window_start = now - rate.period
            cursor.execute(self._forget.sql, self._forget.params({"b_topic": topic, "b_before": window_start}))
            cursor.execute(self._started.sql, self._started.params({"b_topic": topic, "b_after": window_start}))
            for key, count, first in cursor.fetchall():
                started[key] = count
                oldest = first if oldest is None else min(oldest, first)
        return Capacity(limits, limit, executing, started), oldest

    def _claim_first(self, cursor: Any, topic: str, room: int, now: float, node: str) -> list[Job]:
        cursor.execute(self._claim.sql, self._claim.params(
            {"b_topic": topic, "b_limit": room, "b_now": now, "b_node": node}
        ))
        return [row_to_job(r) for r in cursor.fetchall()]

    def _claim_partitioned(self, cursor: Any, topic: str, capacity: Capacity, now: float, node: str) -> list[Job]:
        chosen: list[int] = []
        after: Sequence[Any] | None = None
        while capacity.total > 0:
            if after is None:
                cursor.execute(self._first.sql, self._first.params({"b_topic": topic, "b_limit": CANDIDATE_BATCH}))
            else:
                priority, scheduled_at, last_id = after
                cursor.execute(self._next.sql, self._next.params({
                    "b_topic": topic, "b_limit": CANDIDATE_BATCH, "b_priority": priority,
                    "b_scheduled_at": scheduled_at, "b_id": last_id,
                }))
            batch = cursor.fetchall()
            for job_id, args, *_ in batch:
                if capacity.take(decode(args, "args")):
                    chosen.append(job_id)
                    if capacity.total <= 0:
                        break
            if len(batch) < CANDIDATE_BATCH:
                break
            last_id, _, priority, scheduled_at = batch[-1]
            after = (priority, scheduled_at, last_id)
        if not chosen:
            return []
        statement = self._claim_ids.get(len(chosen))
        if statement is None:
            statement = self._claim_ids[len(chosen)] = self.db.prepare(sql.claim_ids(len(chosen)))
        cursor.execute(statement.sql, statement.params(
            {"b_now": now, "b_node": node, **{f"b_id{i}": job_id for i, job_id in enumerate(chosen)}}
        ))
        return [row_to_job(r) for r in cursor.fetchall()]


__all__ = ["CANDIDATE_BATCH", "LimitedClaims"]
