"""Bulk inserts as multi-row statements: one ``INSERT … VALUES (…), (…) RETURNING id`` per batch.

On PostgreSQL a statement per row costs a network round trip per job; a batch of
:data:`BATCH_ROWS` rows in one statement costs one. SQLite needs none of this (its
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
#: Rows per statement: 10 parameters a row stays far below the 65,535 a statement may bind.
BATCH_ROWS = 1000

_ROW = "(" + ", ".join(["%s"] * len(INSERT_COLUMNS)) + ")"
_HEAD = f"INSERT INTO {jobs.name} ({', '.join(INSERT_COLUMNS)}) VALUES "
_statements: dict[int, str] = {}


def statement(n: int) -> str:
    """The SQL inserting ``n`` rows (``format`` parameter style) and returning their ids."""
    sql = _statements.get(n)
    if sql is None:
        sql = _statements[n] = _HEAD + ", ".join([_ROW] * n) + " RETURNING id"
    return sql


def insert_batches(cursor: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` on a DBAPI cursor, :data:`BATCH_ROWS` per statement; their ids in row order.

    Ids come from the sequence in the order of the VALUES list, so sorting the returned
    ids restores the order of the rows.
    """
    ids: list[int] = []
    for start in range(0, len(rows), BATCH_ROWS):
        batch = rows[start:start + BATCH_ROWS]
        params = [row[column] for row in batch for column in INSERT_COLUMNS]
        cursor.execute(statement(len(batch)), params)
        ids.extend(sorted(r[0] for r in cursor.fetchall()))
    return ids


def job_of(job_id: int, row: dict[str, Any]) -> Job:
    """The job just stored from ``row`` (made by :func:`jobrunner.enqueue.build_row`) under ``job_id``."""
    args = row["decoded_args"] if "decoded_args" in row else json.loads(row["args"])
    # Positional arguments in Job's field order (checked against the columns at import).
    return Job.of(job_id, row["topic"], row["worker"], args, row["state"], row["priority"], row["attempt"],
                  row["max_attempts"], [], None, row["inserted_at"], row["scheduled_at"])


__all__ = ["BATCH_ROWS", "INSERT_COLUMNS", "insert_batches", "job_of", "statement"]
