"""Bulk inserts where ids are not simply consecutive (PostgreSQL): ``COPY``, else ``unnest``.

On PostgreSQL a statement per row costs a network round trip per job. With psycopg 3
the rows go through ``COPY`` under ids reserved from the sequence first (about six
times faster than one statement per row on a 2-core machine); other drivers get one
statement per :data:`BATCH_ROWS` rows that binds one array per column, which keeps the
statement text fixed and short. SQLite needs none of this (its ``executemany`` runs
in-process and its ids are consecutive).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .records import NewJob
from .rows import INSERT_COLUMNS
from .schema import jobs

#: Rows per statement (bounds the memory of one statement; any count works).
BATCH_ROWS = 5000
#: The PostgreSQL array type of each column of :data:`INSERT_COLUMNS`.
_ARRAY_TYPES = {"priority": "int", "attempt": "int", "max_attempts": "int", "inserted_at": "float8",
                "scheduled_at": "float8"}

#: One statement for any number of rows (a VALUES list of thousands of placeholders
#: costs more to parse than to run).
_ARRAYS = ", ".join(f"%s::{_ARRAY_TYPES.get(column, 'text')}[]" for column in INSERT_COLUMNS)
UNNEST = f"INSERT INTO {jobs.name} ({', '.join(INSERT_COLUMNS)}) SELECT * FROM unnest({_ARRAYS}) RETURNING id"
#: Reserves ``n`` ids from the table's sequence (for COPY, which returns nothing).
RESERVE_IDS = f"SELECT nextval(pg_get_serial_sequence('{jobs.name}', 'id')) FROM generate_series(1, %s)"
COPY = f"COPY {jobs.name} (id, {', '.join(INSERT_COLUMNS)}) FROM STDIN"
#: How many leading fields of a NewJob are columns (the rest is not stored).
_WIDTH = len(INSERT_COLUMNS)
if NewJob._fields[:_WIDTH] != INSERT_COLUMNS:  # pragma: no cover - a NewJob/columns mismatch
    raise ImportError("the fields of NewJob must start with the insert columns, in order")


def insert_rows(cursor: Any, rows: Sequence[NewJob]) -> list[int]:
    """Insert ``rows`` on a PostgreSQL DBAPI cursor (in its transaction); their ids in row order."""
    copy = getattr(cursor, "copy", None)
    if copy is None:
        return insert_batches(cursor, rows)
    cursor.execute(RESERVE_IDS, (len(rows),))
    ids = sorted(r[0] for r in cursor.fetchall())
    with copy(COPY) as stream:
        for job_id, row in zip(ids, rows, strict=True):
            stream.write_row((job_id, *row[:_WIDTH]))
    return ids


def insert_batches(cursor: Any, rows: Sequence[NewJob]) -> list[int]:
    """Insert ``rows`` :data:`BATCH_ROWS` per statement; their ids in row order.

    Ids come from the sequence in the order ``unnest`` yields the rows, which is the order
    of the arrays, so sorting the returned ids restores the order of the rows.
    """
    ids: list[int] = []
    for start in range(0, len(rows), BATCH_ROWS):
        batch = rows[start:start + BATCH_ROWS]
        cursor.execute(UNNEST, [list(column) for column in zip(*(row[:_WIDTH] for row in batch), strict=True)])
        ids.extend(sorted(r[0] for r in cursor.fetchall()))
    return ids


__all__ = ["BATCH_ROWS", "COPY", "RESERVE_IDS", "UNNEST", "insert_batches", "insert_rows"]
