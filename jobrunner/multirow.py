"""Bulk inserts on PostgreSQL: ``COPY`` (psycopg 3), else one multi-row statement per batch.

On PostgreSQL a statement per row costs a network round trip per job; a batch of
:data:`BATCH_ROWS` rows in one statement costs one, and binding one array per column
keeps the statement text fixed and short. SQLite needs none of this (its
``executemany`` runs in-process), so :class:`jobrunner.store.Store` uses it only where
ids are not simply consecutive.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .job import Job
from .schema import jobs

#: Columns a new job row carries, in statement order.
INSERT_COLUMNS = (
    "topic", "worker", "args", "state", "priority", "attempt", "max_attempts", "errors",
    "inserted_at", "scheduled_at",
)
#: Rows per statement (bounds the memory of one statement; any count works).
BATCH_ROWS = 5000
#: The PostgreSQL array type of each column: the statement binds one array per column.
_ARRAY_TYPES = ("text", "text", "text", "text", "int", "int", "int", "text", "float8", "float8")

#: One statement for any number of rows: its text is short and fixed, so the driver
#: prepares it once (a VALUES list of thousands of placeholders costs more to parse
#: than to run).
STATEMENT = (
    f"INSERT INTO {jobs.name} ({', '.join(INSERT_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'%s::{kind}[]' for kind in _ARRAY_TYPES)}) RETURNING id"
)


#: Reserves ``n`` ids from the table's sequence (for COPY, which returns nothing).
RESERVE_IDS = f"SELECT nextval(pg_get_serial_sequence('{jobs.name}', 'id')) FROM generate_series(1, %s)"
COPY = f"COPY {jobs.name} (id, {', '.join(INSERT_COLUMNS)}) FROM STDIN"


def insert_rows(cursor: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` on a PostgreSQL DBAPI cursor in one transaction; their ids in row order.

    With psycopg 3 the rows go through ``COPY`` under ids reserved first (about six
    times faster than the statement below on a 2-core machine); other drivers get
    :func:`insert_batches`.
    """
    copy = getattr(cursor, "copy", None)
    if copy is None:
        return insert_batches(cursor, rows)
    cursor.execute(RESERVE_IDS, (len(rows),))
    ids = sorted(r[0] for r in cursor.fetchall())
    with copy(COPY) as stream:
        for job_id, row in zip(ids, rows, strict=True):
            stream.write_row((job_id, *[row[column] for column in INSERT_COLUMNS]))
    return ids


def insert_batches(cursor: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` on a PostgreSQL DBAPI cursor, :data:`BATCH_ROWS` per statement; their
    ids in row order.

    Ids come from the sequence in the order ``unnest`` yields the rows, which is the order
    of the arrays, so sorting the returned ids restores the order of the rows.
    """
    ids: list[int] = []
    for start in range(0, len(rows), BATCH_ROWS):
        batch = rows[start:start + BATCH_ROWS]
        cursor.execute(STATEMENT, [[row[column] for row in batch] for column in INSERT_COLUMNS])
        ids.extend(sorted(r[0] for r in cursor.fetchall()))
    return ids


def job_of(job_id: int, row: dict[str, Any]) -> Job:
    """The job just stored from ``row`` (made by :func:`jobrunner.enqueue.build_row`) under ``job_id``."""
    args = row["decoded_args"] if "decoded_args" in row else json.loads(row["args"])
    # Positional arguments in Job's field order (checked against the columns at import).
    return Job.of(job_id, row["topic"], row["worker"], args, row["state"], row["priority"], row["attempt"],
                  row["max_attempts"], [], None, row["inserted_at"], row["scheduled_at"])


__all__ = ["BATCH_ROWS", "COPY", "INSERT_COLUMNS", "RESERVE_IDS", "STATEMENT", "insert_batches", "insert_rows",
           "job_of"]
