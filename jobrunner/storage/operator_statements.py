"""The statements of looking and operator actions: reads of jobs (one, listings, counts),
the node list, the dashboard's census and summaries, cancel, retry and prune.

These run when someone asks (the CLI, HTTP, the embedding API), so they are built per
call with their values inlined; the claim/ack cycle's statements, compiled once, are in
:mod:`.statements`. Bound parameters, where there are any, are named ``b_*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, delete, func, select, update
from sqlalchemy.sql.dml import ReturningDelete, Update

from ..job import FINAL_STATES, RETRYABLE_STATES, Job, JobState
from .dialects import HasTag
from .rows import ALL
from .schema import jobs, nodes, topics

#: When a job reached each final state (each time has a partial index).
_FINISHED_AT = {JobState.COMPLETED: jobs.c.completed_at, JobState.DISCARDED: jobs.c.discarded_at,
                JobState.CANCELLED: jobs.c.cancelled_at}
#: ... and a retryable one: its failed attempt started at ``attempted_at``.
_REACHED_AT = {**_FINISHED_AT, JobState.RETRYABLE: jobs.c.attempted_at}

# ---------------------------------------------------------------- reads


def job_by_id(job_id: int) -> Select[Any]:
    """The row of one job."""
    return select(*ALL).where(jobs.c.id == job_id)


def job_listing(
    topic: str | None, state: str | None, worker: str | None = None, tag: str | None = None
) -> Select[Any]:
    """Jobs filtered by topic, state, worker and tag (unordered, unlimited)."""
    return filter_jobs(select(*ALL), topic, state, worker, tag)


def filter_jobs(
    query: Select[Any], topic: str | None, state: str | None, worker: str | None = None, tag: str | None = None
) -> Select[Any]:
    """``query`` (of the jobs table) kept to the jobs of that topic, state, worker and tag."""
    if tag is not None:
        query = query.where(HasTag(jobs.c.tags, tag))
    if topic is not None:
        query = query.where(jobs.c.topic == topic)
    if state is not None:
        query = query.where(jobs.c.state == state)
    if worker is not None:
        query = query.where(jobs.c.worker == worker)
    return query


COUNTS = select(jobs.c.topic, jobs.c.state, func.count()).group_by(jobs.c.topic, jobs.c.state)


def node_listing(alive_since: float) -> Select[Any]:
    """(node, started_at, heartbeat_at, topics) of live nodes, oldest first."""
    return (
        select(nodes.c.node, nodes.c.started_at, nodes.c.heartbeat_at, nodes.c.topics)
        .where(nodes.c.heartbeat_at >= alive_since).order_by(nodes.c.started_at, nodes.c.node)
    )


def running_per_node(names: Sequence[str]) -> Select[Any]:
    """(node, topic, count) of the jobs those nodes are executing."""
    return (
        select(jobs.c.attempted_by, jobs.c.topic, func.count())
        .where(jobs.c.state == JobState.EXECUTING, jobs.c.attempted_by.in_(list(names)))
        .group_by(jobs.c.attempted_by, jobs.c.topic)
    )


#: (node, started_at, heartbeat_at) of every node row, live or not, by name.
NODE_ROWS = select(nodes.c.node, nodes.c.started_at, nodes.c.heartbeat_at).order_by(nodes.c.node)
#: The columns of a job's summary (a row of the dashboard's jobs table): no args,
#: result or errors, which can be large.
SUMMARY_COLUMNS = ("id", "topic", "worker", "state", "priority", "attempt", "max_attempts", "inserted_at",
                   "scheduled_at", "attempted_at", "completed_at", "discarded_at", "cancelled_at", "attempted_by")
#: The states :func:`reached_since` counts.
OUTCOME_STATES = tuple(_REACHED_AT)


def reached_since(state: str, since: float) -> Select[Any]:
    """(topic, count) of the jobs now in ``state`` (one of :data:`OUTCOME_STATES`) that
    reached it at or after ``since`` (a final state: read from its partial index on that time)."""
    return (select(jobs.c.topic, func.count())
            .where(jobs.c.state == state, _REACHED_AT[JobState(state)] >= since).group_by(jobs.c.topic))


def job_summaries(
    topic: str | None, state: str | None, worker: str | None, limit: int, after: int | None, oldest_first: bool,
) -> Select[Any]:
    """Up to ``limit`` rows of :data:`SUMMARY_COLUMNS` in id order (newest first unless
    ``oldest_first``), after the id ``after`` in that order when given."""
    query = filter_jobs(select(*(jobs.c[name] for name in SUMMARY_COLUMNS)), topic, state, worker).limit(limit)
    query = query.order_by(jobs.c.id.asc() if oldest_first else jobs.c.id.desc())
    if after is not None:
        query = query.where(jobs.c.id > after if oldest_first else jobs.c.id < after)
    return query


# ---------------------------------------------------------------- operator actions

#: States a job can be cancelled from.
CANCELLABLE = (JobState.SCHEDULED, JobState.BLOCKED, JobState.AVAILABLE, JobState.EXECUTING, JobState.RETRYABLE)
#: States a job can be retried from.
RETRYABLE_FROM = RETRYABLE_STATES


def cancel(job: Job, now: float, errors: str) -> Update:
    """Cancel ``job`` if it is still in the state and attempt it was read at."""
    return (
        update(jobs)
        .where(jobs.c.id == job.id, jobs.c.state == job.state, jobs.c.attempt == job.attempt)
        .values(state=JobState.CANCELLED, cancelled_at=now, errors=errors)
        .returning(*ALL)
    )


def retry(now: float, wanted: Sequence[str], conditions: Sequence[ColumnElement[bool]]) -> Update:
    """Make the jobs matching ``conditions`` and in ``wanted`` states available; returns
    (id, topic) of each.

    The rows are locked in id order first (no deadlock with another bulk action); a job
    that used all its attempts gets one more.
    """
    locked = (
        select(jobs.c.id).where(jobs.c.state.in_(wanted), *conditions).order_by(jobs.c.id).with_for_update()
        .cte("retried").prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return (
        update(jobs)
        .where(jobs.c.id.in_(select(locked.c.id)), jobs.c.state.in_(wanted))
        .values(
            state=JobState.AVAILABLE, scheduled_at=now, completed_at=None, discarded_at=None, cancelled_at=None,
            max_attempts=case((jobs.c.max_attempts > jobs.c.attempt, jobs.c.max_attempts), else_=jobs.c.attempt + 1),
        )
        .returning(jobs.c.id, jobs.c.topic)
    )


def prune(state: str, before: float, limit: int) -> ReturningDelete[Any]:
    """Delete up to ``limit`` jobs of final ``state`` finished before ``before``; returns their ids.

    Rows locked by others are skipped, so pruning never waits on (or deadlocks with)
    another transaction; the outer condition re-checks each row as it is deleted.
    """
    final = and_(jobs.c.state == state, _FINISHED_AT[JobState(state)] < before)
    oldest = select(jobs.c.id).where(final).limit(limit).with_for_update(skip_locked=True)
    return delete(jobs).where(jobs.c.id.in_(oldest.scalar_subquery()), final).returning(jobs.c.id)


PRUNABLE = sorted(FINAL_STATES)
PAUSED_TOPICS = select(topics.c.topic).where(topics.c.paused != 0)


__all__ = [
    "CANCELLABLE", "COUNTS", "NODE_ROWS", "OUTCOME_STATES", "PAUSED_TOPICS", "PRUNABLE", "RETRYABLE_FROM",
    "SUMMARY_COLUMNS", "cancel", "filter_jobs", "job_by_id", "job_listing", "job_summaries", "node_listing", "prune",
    "reached_since", "retry", "running_per_node",
]
