"""A row of the jobs table as a :class:`~jobrunner.job.Job`: the column list every
statement that returns jobs selects, the columns an insert sets, and the decoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from ..job import Job
from ..metadata import decode_meta, decode_tags
from ..payload import decode, decode_errors
from .records import NewJob
from .schema import JOB_COLUMNS, jobs

if tuple(f.name for f in fields(Job))[:len(JOB_COLUMNS)] != JOB_COLUMNS:  # pragma: no cover - a schema/Job mismatch
    raise ImportError("jobrunner.job.Job fields must follow the columns of jobrunner.storage.schema.jobs")

#: Every column of the jobs table, in Job's field order.
ALL = [jobs.c[name] for name in JOB_COLUMNS]
#: The columns a new row sets (the fields of NewJob that are columns).
INSERT_COLUMNS = tuple(name for name in NewJob._fields if name in JOB_COLUMNS)
_EMPTY_LIST = "[]"
_EMPTY_OBJECT = "{}"


def row_to_job(row: Sequence[Any]) -> Job:
    """The Job of a row holding :data:`ALL`, in order. Never raises on unreadable JSON."""
    (id_, topic, worker, args, state, priority, attempt, max_attempts, errors, result,
     inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, cancelled_at,
     attempted_by, tags, meta, progress, unique_key) = row
    # Positional: the field order of Job is the column order of the table (checked above).
    # Decoding never raises: one unreadable row must not fail a claim or a listing.
    return Job.of(
        id_, topic, worker, decode(args, "args"), state, priority, attempt, max_attempts,
        [] if errors == _EMPTY_LIST else decode_errors(errors), None if result is None else decode(result, "result"),
        inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, cancelled_at, attempted_by,
        [] if tags == _EMPTY_LIST else decode_tags(tags), {} if meta == _EMPTY_OBJECT else decode_meta(meta),
        progress, unique_key,
    )


__all__ = ["ALL", "INSERT_COLUMNS", "row_to_job"]
