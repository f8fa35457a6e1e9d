"""Moving a queue between databases: ``python -m jobrunner copy --to URL`` (and ``--from URL``).

What moves: every job row as it is (id, state, attempt, errors, result, every
timestamp, the node that ran it), the topics' pause switches, and the leases of jobs
held by external workers. What does not: node heartbeats (they describe processes
running against the source; a job left ``executing`` by one of them is rescued on the
target like any job of a dead node) and the schema table (the target is migrated by
its own migrations first).

The copy is one transaction on the target: all of it or nothing. A target that holds
any job or pause is refused unless ``replace`` is given, which empties those tables of
the target first. The target's id sequence ends up past every id the source ever
handed out (pruned ones included), so ids are never reused. Stop the daemons on the
source first: jobs enqueued there during the copy may be left behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Table, delete, func, insert, select

from ..config import DatabaseSettings
from ..errors import CopyError
from .database import Database
from .dialects import advance_ids, id_high_water
from .schema import jobs, leases, topics

#: Rows read from the source and written to the target per statement.
BATCH = 2000
#: The tables copied, in an order that keeps every reference valid.
TABLES: tuple[Table, ...] = (jobs, topics, leases)


@dataclass(frozen=True, slots=True)
class CopyReport:
    """How many rows of each table were copied, and the id the target hands out next."""

    jobs: int
    topics: int
    leases: int
    next_id: int


def _high_water(conn: Connection) -> int:
    """The highest job id this database ever handed out (its sequence, else the highest row)."""
    highest = int(conn.scalar(select(func.coalesce(func.max(jobs.c.id), 0))) or 0)
    return max(highest, id_high_water(conn))


def _occupied(conn: Connection) -> dict[str, int]:
    counts = {table.name: int(conn.scalar(select(func.count()).select_from(table)) or 0) for table in TABLES}
    return {name: count for name, count in counts.items() if count}


def _copy_table(source: Connection, target: Connection, table: Table) -> int:
    """Copy every row of ``table``, in primary-key order, a batch at a time."""
    key = next(iter(table.primary_key.columns))
    copied = 0
    last = None
    while True:
        query = select(*table.c).order_by(key).limit(BATCH)
        if last is not None:
            query = query.where(key > last)
        rows = [dict(row._mapping) for row in source.execute(query)]
        if not rows:
            return copied
        target.execute(insert(table), rows)
        copied += len(rows)
        last = rows[-1][key.name]


def copy_database(source_url: str, target_url: str, *, replace: bool = False) -> CopyReport:
    """Copy every job, pause and lease from ``source_url`` to ``target_url`` (migrated first).

    Raises CopyError, changing nothing, when the target already holds jobs, pauses or
    leases and ``replace`` is False, or when both URLs name the same database.
    """
    source, target = Database(DatabaseSettings(url=source_url)), Database(DatabaseSettings(url=target_url))
    try:
        if source.engine.url == target.engine.url:
            raise CopyError(f"source and target are the same database ({source_url!r})")
        source.migrate()
        target.migrate()
        with source.read() as src, src.begin(), target.engine.begin() as dst:
            occupied = _occupied(dst)
            if occupied and not replace:
                held = ", ".join(f"{count} row(s) in {name}" for name, count in sorted(occupied.items()))
                raise CopyError(f"target {target_url!r} is not empty ({held}); pass --force to replace "
                                "its jobs, pauses and leases with the source's")
            for table in reversed(TABLES):
                dst.execute(delete(table))
            counts = {table.name: _copy_table(src, dst, table) for table in TABLES}
            past = max(_high_water(src), _high_water(dst))
            if past > 0:
                advance_ids(dst, past)
        return CopyReport(counts[jobs.name], counts[topics.name], counts[leases.name], past + 1)
    finally:
        source.close()
        target.close()


__all__ = ["BATCH", "TABLES", "CopyError", "CopyReport", "copy_database"]
