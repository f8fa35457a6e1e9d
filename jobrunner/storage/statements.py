"""Every SQL statement of jobrunner, as SQLAlchemy Core, in one place to review.

Bound parameters are named ``b_*``. The verb groups (:mod:`.jobs`, :mod:`.operator`,
:mod:`.nodes`, :mod:`.leases`) run these; the hot path compiles its statements once
(see :class:`jobrunner.storage.database.Prepared`). Where the dialects differ, the
choice is made from a :class:`~jobrunner.storage.dialects.Dialect` flag here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql.dml import Delete, ReturningDelete, Update

from ..job import FINAL_STATES, RETRYABLE_STATES, Job, JobState
from ..metadata import decode_meta, decode_tags
from ..payload import decode, decode_errors
from ..transitions import Transition
from .dialects import LOCK_NAMESPACE, Dialect, HasTag
from .records import NewJob
from .schema import JOB_COLUMNS, WAITING_FOR_TIME, jobs, leases, nodes, starts, topics

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


# ---------------------------------------------------------------- the claim/ack cycle

#: The row of an execution still running: the condition of every ack.
EXECUTING = and_(
    jobs.c.id == bindparam("b_id"),
    jobs.c.state == JobState.EXECUTING,
    jobs.c.attempt == bindparam("b_attempt"),
)


def _ack(transition: Transition) -> Update:
    """The conditional UPDATE that records ``transition`` (binds b_id, b_attempt, b_at,
    b_result, b_errors: each statement takes the subset it uses)."""
    values: dict[str, Any] = {"state": transition.state}
    if transition.stamp is not None:
        values[transition.stamp] = bindparam("b_at")
    if transition is Transition.COMPLETE:
        values["result"] = bindparam("b_result")
    elif not transition.uncounts:
        values["errors"] = bindparam("b_errors")
    if transition.uncounts:
        values["attempt"] = jobs.c.attempt - 1
    return update(jobs).where(EXECUTING).values(values)


#: One conditional UPDATE per transition; executed with many parameter sets at once.
ACKS: dict[Transition, Update] = {transition: _ack(transition) for transition in Transition}

#: Is this job still executing, and at which attempt (the slow path of a stale batch).
LIVE_CHECK = select(jobs.c.id, jobs.c.attempt).where(jobs.c.id == bindparam("b_id"), jobs.c.state == JobState.EXECUTING)

#: The claim rule: the available jobs of a topic, best priority first, then FIFO.
_CLAIMABLE = (
    select(jobs.c.id)
    .where(jobs.c.topic == bindparam("b_topic"), jobs.c.state == JobState.AVAILABLE)
    .order_by(jobs.c.priority, jobs.c.scheduled_at, jobs.c.id)
    .limit(bindparam("b_limit"))
)
_CLAIM_VALUES = {
    "state": JobState.EXECUTING,
    "attempt": jobs.c.attempt + 1,
    "attempted_at": bindparam("b_now"),
    "attempted_by": bindparam("b_node"),
}


def claim(dialect: Dialect) -> Update:
    """Claim up to b_limit jobs of b_topic for b_node at b_now; returns their rows (:data:`ALL`).

    Producers and external-worker leases both claim with this statement.
    """
    if not dialect.locking_claim:  # SQLite: the write lock already excludes other claimers
        chosen: Any = _CLAIMABLE.scalar_subquery()
    else:
        # Lock the chosen rows and skip those another node is claiming. The choice is a
        # materialised CTE, so it runs once and its LIMIT applies before any row is locked
        # (a subquery inside IN may be re-run by the planner and then claim more than LIMIT).
        fenced = _CLAIMABLE.with_for_update(skip_locked=True).cte("claimed").prefix_with("MATERIALIZED")
        chosen = select(fenced.c.id)
    return update(jobs).where(jobs.c.id.in_(chosen)).values(_CLAIM_VALUES).returning(*ALL)


#: The staging rule: scheduled and retryable jobs of b_topic due by b_now become available.
STAGE = (
    update(jobs)
    .where(
        jobs.c.topic == bindparam("b_topic"),
        WAITING_FOR_TIME,  # literal states: the due index holds only those rows
        jobs.c.scheduled_at <= bindparam("b_now"),
    )
    .values(state=JobState.AVAILABLE)
)
INSERT_RETURNING = jobs.insert().values(dict.fromkeys(INSERT_COLUMNS)).returning(*ALL)
INSERT = jobs.insert().values(dict.fromkeys(INSERT_COLUMNS))
#: The topic's control row: paused, and the parallelism it was scaled to (NULL: not scaled).
PAUSED = select(topics.c.paused, topics.c.parallelism).where(topics.c.topic == bindparam("b_topic"))
SCALED = select(topics.c.parallelism).where(topics.c.topic == bindparam("b_topic"))


def running_rows(count: int) -> Select[Any]:
    """(id, state, attempt, attempted_by) of the jobs b_id0 .. b_id<count-1>."""
    ids: list[BindParameter[Any]] = [bindparam(f"b_id{i}") for i in range(count)]
    return select(jobs.c.id, jobs.c.state, jobs.c.attempt, jobs.c.attempted_by).where(jobs.c.id.in_(ids))


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


# ---------------------------------------------------------------- operator actions

#: States a job can be cancelled from.
CANCELLABLE = (JobState.SCHEDULED, JobState.BLOCKED, JobState.AVAILABLE, JobState.EXECUTING, JobState.RETRYABLE)
#: States a job can be retried from.
RETRYABLE_FROM = RETRYABLE_STATES
_FINISHED_AT = {JobState.COMPLETED: jobs.c.completed_at, JobState.CANCELLED: jobs.c.cancelled_at,
                JobState.DISCARDED: jobs.c.discarded_at}


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


# ---------------------------------------------------------------- nodes and rescue

def live_nodes(alive_since: float) -> Select[Any]:
    """Nodes whose last heartbeat is at or after ``alive_since``."""
    return select(nodes.c.node).where(nodes.c.heartbeat_at >= alive_since)


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


def orphans(alive_since: float) -> Select[Any]:
    """Jobs left executing by nodes silent since before ``alive_since`` (not leased), locked."""
    return (
        select(*ALL)
        .where(
            jobs.c.state == JobState.EXECUTING,
            or_(jobs.c.attempted_by.is_(None), jobs.c.attempted_by.not_in(live_nodes(alive_since).scalar_subquery())),
            # Jobs held by external workers are governed by their lease instead.
            jobs.c.id.not_in(select(leases.c.job_id).scalar_subquery()),
        )
        .order_by(jobs.c.id)
        # A row locked right now is being written (acked, cancelled): next pass.
        .with_for_update(skip_locked=True)
    )


def put_back(job: Job, values: dict[str, Any]) -> Update:
    """Set ``values`` on ``job`` if it is still executing at its attempt."""
    return (
        update(jobs)
        .where(jobs.c.id == job.id, jobs.c.state == JobState.EXECUTING, jobs.c.attempt == job.attempt)
        .values(**values)
    )


def forget_nodes(alive_since: float) -> Delete:
    """Delete the rows of nodes silent since before ``alive_since``."""
    return delete(nodes).where(nodes.c.heartbeat_at < alive_since)


# ---------------------------------------------------------------- leases

#: The lease row of the job being updated, still at the job's attempt.
CURRENT_LEASE = exists().where(leases.c.job_id == jobs.c.id, leases.c.attempt == jobs.c.attempt)
#: The job of the lease being updated, still executing at the lease's attempt.
LIVE_JOB = exists().where(
    jobs.c.id == leases.c.job_id, jobs.c.state == JobState.EXECUTING, jobs.c.attempt == leases.c.attempt
)
RUNNING_COUNT = select(func.count()).select_from(jobs).where(
    jobs.c.topic == bindparam("b_topic"), jobs.c.state == JobState.EXECUTING
)


def conclude_lease(transition: Transition, token: str) -> Update:
    """The ack of ``transition``, applied only under the current lease held with ``token``."""
    return ACKS[transition].where(CURRENT_LEASE.where(leases.c.token == token))


def live_lease(job_id: int) -> Select[Any]:
    """(holder, expires_at, token, *ALL) of the live lease on ``job_id``."""
    return (
        select(leases.c.holder, leases.c.expires_at, leases.c.token, *ALL)
        .join(jobs, jobs.c.id == leases.c.job_id)
        .where(leases.c.job_id == job_id, jobs.c.state == JobState.EXECUTING, jobs.c.attempt == leases.c.attempt)
    )


def executing_at(job_id: int, attempt: int) -> Select[Any]:
    """The row of ``job_id`` if executing at ``attempt``, locked (job row before lease row)."""
    return select(*ALL).where(
        jobs.c.id == job_id, jobs.c.state == JobState.EXECUTING, jobs.c.attempt == attempt
    ).with_for_update()


# ---------------------------------------------------------------- limits across nodes (see .limited)

#: The claim lock of one topic, b_key = "claim:<topic>" (PostgreSQL: an advisory lock
#: held until the transaction ends). Producers of limited topics and lease claims take it.
CLAIM_LOCK = select(func.pg_advisory_xact_lock(LOCK_NAMESPACE, func.hashtext(bindparam("b_key"))))
#: The args of the executing jobs of b_topic (to count them per partition).
EXECUTING_ARGS = select(jobs.c.args).where(
    jobs.c.topic == bindparam("b_topic"), jobs.c.state == JobState.EXECUTING
)
#: Forget the starts of b_topic at or before b_before (out of every window from now on).
FORGET_STARTS = delete(starts).where(
    starts.c.topic == bindparam("b_topic"), starts.c.started_at <= bindparam("b_before")
)
#: Starts of b_topic after b_after, per partition: (partition_key, count, earliest).
STARTED_COUNTS = (
    select(starts.c.partition_key, func.count(), func.min(starts.c.started_at))
    .where(starts.c.topic == bindparam("b_topic"), starts.c.started_at > bindparam("b_after"))
    .group_by(starts.c.partition_key)
)
#: One start of a job of b_topic in partition b_partition at b_now.
RECORD_START = starts.insert().values(
    topic=bindparam("b_topic"), partition_key=bindparam("b_partition"), started_at=bindparam("b_now")
)


def candidates(after: bool) -> Select[Any]:
    """(id, args, priority, scheduled_at) of up to b_limit available jobs of b_topic in
    claim order; with ``after``, those following (b_priority, b_scheduled_at, b_id)."""
    query = select(jobs.c.id, jobs.c.args, jobs.c.priority, jobs.c.scheduled_at).where(
        jobs.c.topic == bindparam("b_topic"), jobs.c.state == JobState.AVAILABLE
    )
    if after:
        query = query.where(tuple_(jobs.c.priority, jobs.c.scheduled_at, jobs.c.id)
                            > tuple_(bindparam("b_priority"), bindparam("b_scheduled_at"), bindparam("b_id")))
    return query.order_by(jobs.c.priority, jobs.c.scheduled_at, jobs.c.id).limit(bindparam("b_limit"))


def claim_ids(count: int) -> Update:
    """Claim the available jobs b_id0 .. b_id<count-1> for b_node at b_now; returns their rows."""
    ids: list[BindParameter[Any]] = [bindparam(f"b_id{i}") for i in range(count)]
    return (
        update(jobs)
        .where(jobs.c.id.in_(ids), jobs.c.state == JobState.AVAILABLE)
        .values(_CLAIM_VALUES)
        .returning(*ALL)
    )
