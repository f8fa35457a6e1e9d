"""Reads for looking at the runner: the dashboard, ``/metrics`` and ``top``.

Every statement here is a read, answered from the indexes the claim path already has
(``topic, state, …``) or the partial indexes on finish times, so looking costs the
runner little.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection

from ..job import ALL_STATES, JobState
from . import operator_statements as ops
from .database import Database
from .records import Census, NodeRow


def counts_by_state(conn: Connection, names: Iterable[str]) -> dict[str, dict[str, int]]:
    """Job counts per topic and state, read on ``conn``; every state is present for every
    topic that has jobs and every topic in ``names``."""
    counts: dict[str, dict[str, int]] = {t: dict.fromkeys(ALL_STATES, 0) for t in names}
    for topic, state, count in conn.execute(ops.COUNTS):
        counts.setdefault(topic, dict.fromkeys(ALL_STATES, 0))[state] = int(count)
    return counts


class InsightVerbs:
    """The census, the outcomes of the last minute and pages of job summaries."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def census(self, names: Iterable[str], now: float) -> Census:
        """Counts per topic and state (every state for every topic in ``names``), paused
        topics and every node row, read in one transaction; ``now`` is its ``taken_at``."""
        with self.db.read() as conn, conn.begin():
            counts = counts_by_state(conn, names)
            paused = frozenset(conn.scalars(ops.PAUSED_TOPICS))
            found = tuple(NodeRow(str(n), float(s), float(h)) for n, s, h in conn.execute(ops.NODE_ROWS))
        return Census(counts, paused, found, now)

    def recent_outcomes(self, since: float) -> dict[str, dict[str, int]]:
        """Per topic, jobs that finished since ``since``: ``completed``, ``discarded``,
        ``cancelled``, and ``failed``: jobs now waiting to retry whose failed attempt
        started since then."""
        found: dict[str, dict[str, int]] = {}
        with self.db.read() as conn, conn.begin():
            for state in ops.OUTCOME_STATES:
                key = "failed" if state == JobState.RETRYABLE else str(state)
                for topic, count in conn.execute(ops.reached_since(state, since)):
                    found.setdefault(topic, {})[key] = int(count)
        return found

    def job_summaries(
        self,
        *,
        topic: str | None = None,
        state: str | None = None,
        worker: str | None = None,
        limit: int = 50,
        after: int | None = None,
        oldest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of job summaries (:data:`~.operator_statements.SUMMARY_COLUMNS`, times
        as epoch seconds) in insertion order (newest first unless ``oldest_first``), and the
        cursor of the next page (pass it as ``after``; None on the last page)."""
        query = ops.job_summaries(topic, state, worker, limit + 1, after, oldest_first)
        with self.db.read() as conn, conn.begin():
            rows = [dict(zip(ops.SUMMARY_COLUMNS, row, strict=True)) for row in conn.execute(query)]
        if len(rows) > limit:
            return rows[:limit], int(rows[limit - 1]["id"])
        return rows, None


__all__ = ["InsightVerbs", "counts_by_state"]
