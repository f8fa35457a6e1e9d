"""The declared schema (SQLAlchemy Core metadata).

The tables are created only by the SQL migrations in ``migrations/``; a test proves
that applying them yields exactly this metadata.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, Table, Text, literal_column

from ..job import JobState

metadata = MetaData()

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
_id_type = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "jobrunner_jobs",
    metadata,
    Column("id", _id_type, primary_key=True, autoincrement=True),
    Column("topic", Text, nullable=False),
    Column("worker", Text, nullable=False),
    Column("args", Text, nullable=False, server_default="{}"),
    Column("state", Text, nullable=False, server_default=JobState.AVAILABLE.value),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="50"),
    Column("errors", Text, nullable=False, server_default="[]"),
    Column("result", Text, nullable=True),
    Column("inserted_at", Float, nullable=False),
    Column("scheduled_at", Float, nullable=False),
    Column("attempted_at", Float, nullable=True),
    Column("completed_at", Float, nullable=True),
    Column("discarded_at", Float, nullable=True),
    Column("cancelled_at", Float, nullable=True),
    Column("attempted_by", Text, nullable=True),
    # Version 8 (0008_unique_dependencies_metadata): metadata, progress, uniqueness (jobrunner.unique).
    Column("tags", Text, nullable=False, server_default="[]"),
    Column("meta", Text, nullable=False, server_default="{}"),
    Column("progress", Float, nullable=True),
    Column("unique_key", Text, nullable=True),
    sqlite_autoincrement=True,  # ids are never reused, even after pruning
)

Index("ix_jobrunner_jobs_claim", jobs.c.topic, jobs.c.state, jobs.c.priority, jobs.c.scheduled_at, jobs.c.id)
#: The jobs that wait for a time, with the states as literals: a statement with this
#: condition can use the due index below (the planner must match the index's condition,
#: which it cannot do through bound parameters).
WAITING_FOR_TIME = jobs.c.state.in_([literal_column(f"'{JobState.SCHEDULED}'"),
                                     literal_column(f"'{JobState.RETRYABLE}'")])
#: Only the jobs that wait for a time (staging reads them by due time): the jobs that are
#: claimed, run and finished never touch it.


def _partial_index(name: str, *columns: Column[Any], where: Any) -> Index:
    """An index over the rows that match ``where`` (the migrations create it, with that
    condition). The condition is kept in ``info``: as a ``postgresql_where`` it would
    load SQLAlchemy's PostgreSQL dialect into every process, SQLite or not."""
    return Index(name, *columns, info={"where": where})


_partial_index("ix_jobrunner_jobs_due", jobs.c.topic, jobs.c.state, jobs.c.scheduled_at, where=WAITING_FOR_TIME)


def _partial(name: str, column: Column[Any], state: str) -> Index:
    return _partial_index(name, column, where=jobs.c.state == state)


_partial("ix_jobrunner_jobs_attempted_by", jobs.c.attempted_by, JobState.EXECUTING)
_partial("ix_jobrunner_jobs_completed", jobs.c.completed_at, JobState.COMPLETED)
_partial("ix_jobrunner_jobs_cancelled", jobs.c.cancelled_at, JobState.CANCELLED)
_partial("ix_jobrunner_jobs_discarded", jobs.c.discarded_at, JobState.DISCARDED)
_keyed = jobs.c.unique_key.is_not(None)
_partial_index("ix_jobrunner_jobs_unique", jobs.c.unique_key, jobs.c.inserted_at, where=_keyed)

nodes = Table(
    "jobrunner_nodes",
    metadata,
    Column("node", Text, primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("topics", Text, nullable=False, server_default="[]"),  # JSON list, written at start
)

topics = Table(
    "jobrunner_topics",
    metadata,
    Column("topic", Text, primary_key=True),
    Column("paused", Integer, nullable=False, server_default="0"),
    Column("updated_at", Float, nullable=False),
    # Set by scale: overrides the configured parallelism on every node (NULL: not scaled).
    Column("parallelism", Integer, nullable=True),
)

schema_versions = Table(
    "jobrunner_schema",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("applied_at", Float, nullable=False),
)

leases = Table(
    "jobrunner_leases",
    metadata,
    Column("job_id", _id_type, primary_key=True, autoincrement=False),
    Column("attempt", Integer, nullable=False),
    Column("holder", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    # Random per claim; concluding or extending must present it ('' = no token: expiry only).
    Column("token", Text, nullable=False, server_default=""),
)
Index("ix_jobrunner_leases_expires_at", leases.c.expires_at)

dependencies = Table(
    "jobrunner_dependencies",
    metadata,
    Column("job_id", _id_type, primary_key=True, autoincrement=False),
    Column("depends_on", _id_type, primary_key=True, autoincrement=False),
    # What happens to job_id when depends_on ends discarded or cancelled: 'cancel' or 'run'.
    Column("on_failure", Text, nullable=False, server_default="cancel"),
)
Index("ix_jobrunner_dependencies_depends_on", dependencies.c.depends_on)
starts = Table(
    "jobrunner_starts",
    metadata,
    Column("topic", Text, nullable=False),
    Column("partition_key", Text, nullable=False, server_default=""),
    Column("started_at", Float, nullable=False),
)
Index("ix_jobrunner_starts_window", starts.c.topic, starts.c.started_at)

JOB_COLUMNS = tuple(c.name for c in jobs.columns)

cron_slots = Table(
    "jobrunner_cron_slots",
    metadata,
    Column("schedule", Text, primary_key=True),
    # POSIX seconds of the slot (whole numbers: cron slots fall on whole seconds).
    Column("slot", BigInteger, primary_key=True, autoincrement=False),
    Column("job_id", _id_type, nullable=True),
)
