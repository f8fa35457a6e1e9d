"""Storage reads for looking at the runner: the dashboard, ``/metrics`` and ``top``.

Every statement here is a read, answered from the indexes the claim path already has
(``topic, state, …``) or the partial indexes on finish times, so looking costs the
runner little. It belongs with the storage layer and moves there with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from .job import ALL_STATES
from .storage import Storage
from .storage.operator_statements import filter_jobs
from .storage.schema import jobs, nodes, topics

#: The columns of a job's summary (a row of the dashboard's jobs table): no args,
#: result or errors, which can be large.
SUMMARY_COLUMNS = ("id", "topic", "worker", "state", "priority", "attempt", "max_attempts", "inserted_at",
                   "scheduled_at", "attempted_at", "completed_at", "discarded_at", "cancelled_at", "attempted_by")


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One row of the nodes table: a runner process and its last heartbeat."""

    node: str
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class Census:
    """What the table says at ``taken_at``: jobs per topic and state, paused topics, nodes."""

    counts: dict[str, dict[str, int]]
    paused: frozenset[str]
    nodes: tuple[NodeRow, ...]
    taken_at: float


def _counts(conn: Connection, names: Iterable[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {t: dict.fromkeys(ALL_STATES, 0) for t in names}
    query = select(jobs.c.topic, jobs.c.state, func.count()).group_by(jobs.c.topic, jobs.c.state)
    for topic, state, count in conn.execute(query):
        counts.setdefault(topic, dict.fromkeys(ALL_STATES, 0))[state] = int(count)
    return counts


def take_census(store: Storage, names: Iterable[str], now: float) -> Census:
    """Counts per topic and state (every state for every topic in ``names``), paused
    topics and every node row, read in one transaction."""
    with store.db.read() as conn, conn.begin():
        counts = _counts(conn, names)
        paused = frozenset(conn.scalars(select(topics.c.topic).where(topics.c.paused != 0)))
        rows = conn.execute(select(nodes.c.node, nodes.c.started_at, nodes.c.heartbeat_at).order_by(nodes.c.node))
        found = tuple(NodeRow(str(n), float(s), float(h)) for n, s, h in rows)
    return Census(counts, paused, found, now)


def recent_outcomes(store: Storage, since: float) -> dict[str, dict[str, int]]:
    """Per topic, jobs that finished since ``since``: ``completed``, ``discarded``,
    ``cancelled`` (each from its partial index on the finish time), and ``failed``: jobs
    now waiting to retry whose failed attempt started since then."""
    found: dict[str, dict[str, int]] = {}
    finished = {"completed": jobs.c.completed_at, "discarded": jobs.c.discarded_at,
                "cancelled": jobs.c.cancelled_at, "retryable": jobs.c.attempted_at}
    with store.db.read() as conn, conn.begin():
        for state, column in finished.items():
            query = (select(jobs.c.topic, func.count()).where(jobs.c.state == state, column >= since)
                     .group_by(jobs.c.topic))
            for topic, count in conn.execute(query):
                key = "failed" if state == "retryable" else state
                found.setdefault(topic, {})[key] = int(count)
    return found


def job_summaries(
    store: Storage,
    *,
    topic: str | None = None,
    state: str | None = None,
    worker: str | None = None,
    limit: int = 50,
    after: int | None = None,
    oldest_first: bool = False,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of job summaries (:data:`SUMMARY_COLUMNS`, times as epoch seconds) in
    insertion order (newest first unless ``oldest_first``), and the cursor of the next
    page (pass it as ``after``; None on the last page)."""
    columns = [jobs.c[name] for name in SUMMARY_COLUMNS]
    query = filter_jobs(select(*columns), topic, state, worker).limit(limit + 1)
    query = query.order_by(jobs.c.id.asc() if oldest_first else jobs.c.id.desc())
    if after is not None:
        query = query.where(jobs.c.id > after if oldest_first else jobs.c.id < after)
    with store.db.read() as conn, conn.begin():
        rows = [dict(zip(SUMMARY_COLUMNS, row, strict=True)) for row in conn.execute(query)]
    if len(rows) > limit:
        return rows[:limit], int(rows[limit - 1]["id"])
    return rows, None


__all__ = ["SUMMARY_COLUMNS", "Census", "NodeRow", "job_summaries", "recent_outcomes", "take_census"]
