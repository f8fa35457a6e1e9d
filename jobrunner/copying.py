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

from sqlalchemy import Connection, Table, delete, func, insert, select, text

from .config import DatabaseSettings
from .errors import CopyError
from .schema import jobs, leases, topics
from .store import Store

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
    if conn.dialect.name == "postgresql":
        row = conn.execute(text(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM jobrunner_jobs_id_seq"
        )).first()
    else:
        row = conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = 'jobrunner_jobs'")).first()
    return max(highest, int(row[0]) if row and row[0] is not None else 0)


def _advance_ids(conn: Connection, past: int) -> None:
    """Make the target hand out ids above ``past`` from now on."""
    if past <= 0:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT setval(pg_get_serial_sequence('jobrunner_jobs', 'id'), :n, true)"), {"n": past})
    else:
        # Inserting explicit ids already raised it to the highest copied id; go past pruned ones too.
        conn.execute(text("UPDATE sqlite_sequence SET seq = max(seq, :n) WHERE name = 'jobrunner_jobs'"),
                     {"n": past})
        conn.execute(text("INSERT INTO sqlite_sequence (name, seq) SELECT 'jobrunner_jobs', :n "
                          "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'jobrunner_jobs')"),
                     {"n": past})


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
    source, target = Store(DatabaseSettings(url=source_url)), Store(DatabaseSettings(url=target_url))
    try:
        if source.engine.url == target.engine.url:
            raise CopyError(f"source and target are the same database ({source_url!r})")
        source.migrate()
        target.migrate()
        with source._read() as src, src.begin(), target.engine.begin() as dst:
            occupied = _occupied(dst)
            if occupied and not replace:
                held = ", ".join(f"{count} row(s) in {name}" for name, count in sorted(occupied.items()))
                raise CopyError(f"target {target_url!r} is not empty ({held}); pass --force to replace "
                                "its jobs, pauses and leases with the source's")
            for table in reversed(TABLES):
                dst.execute(delete(table))
            counts = {table.name: _copy_table(src, dst, table) for table in TABLES}
            past = max(_high_water(src), _high_water(dst))
            _advance_ids(dst, past)
        return CopyReport(counts[jobs.name], counts[topics.name], counts[leases.name], past + 1)
    finally:
        source.close()
        target.close()


__all__ = ["BATCH", "TABLES", "CopyError", "CopyReport", "copy_database"]
