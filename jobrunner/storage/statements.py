"""The statements of the claim path, as SQLAlchemy Core: insert, stage, claim, ack, the
topic's control row, rescue of dead nodes' jobs, external workers' leases and the claims
of limited topics.

Bound parameters are named ``b_*``. The verb groups (:mod:`.jobs`, :mod:`.nodes`,
:mod:`.leases`, :mod:`.limited`) run these; the hot path compiles its statements once
(see :class:`jobrunner.storage.database.Prepared`). Where the dialects differ, the
choice is made from a :class:`~jobrunner.storage.dialects.Dialect` flag here. The
statements of looking and operator actions are in :mod:`.operator_statements`, the
row ↔ Job mapping in :mod:`.rows`; both are re-exported here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, Select, and_, bindparam, delete, exists, func, or_, select, tuple_, update
from sqlalchemy.sql.dml import Delete, Update

from ..job import Job, JobState
from ..transitions import Transition
from .dialects import LOCK_NAMESPACE, Dialect
from .operator_statements import (
    CANCELLABLE,
    COUNTS,
    PAUSED_TOPICS,
    PRUNABLE,
    RETRYABLE_FROM,
    cancel,
    filter_jobs,
    job_by_id,
    job_listing,
    node_listing,
    prune,
    retry,
    running_per_node,
)
from .rows import ALL, INSERT_COLUMNS, row_to_job
from .schema import WAITING_FOR_TIME, jobs, leases, nodes, starts, topics

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


# ---------------------------------------------------------------- nodes and rescue

def live_nodes(alive_since: float) -> Select[Any]:
    """Nodes whose last heartbeat is at or after ``alive_since``."""
    return select(nodes.c.node).where(nodes.c.heartbeat_at >= alive_since)


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


__all__ = [
    "ACKS", "ALL", "CANCELLABLE", "CLAIM_LOCK", "COUNTS", "CURRENT_LEASE", "EXECUTING", "EXECUTING_ARGS",
    "FORGET_STARTS", "INSERT", "INSERT_COLUMNS", "INSERT_RETURNING", "LIVE_CHECK", "LIVE_JOB", "PAUSED",
    "PAUSED_TOPICS", "PRUNABLE", "RECORD_START", "RETRYABLE_FROM", "RUNNING_COUNT", "SCALED", "STAGE",
    "STARTED_COUNTS", "cancel", "candidates", "claim", "claim_ids", "conclude_lease", "executing_at", "filter_jobs",
    "forget_nodes", "job_by_id", "job_listing", "live_lease", "live_nodes", "node_listing", "orphans", "prune",
    "put_back", "retry", "row_to_job", "running_per_node", "running_rows",
]
