"""Jobs and the claim/ack cycle: insert, stage, ack and claim, and the reads of jobs.

The hot path: its statements are compiled once per database and run on raw cursors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from ..errors import StorageError
from ..job import Job, JobState
from ..transitions import Transition
from . import bulk, operator_statements as ops, statements as sql
from .database import Database, Prepared
from .dependencies import OnCursor, record, settle
from .insight import counts_by_state
from .limited import LimitedClaims
from .notices import INSERTED, NoticeVerbs
from .records import Ack, ClaimRequest, CycleResult, NewJob, TopicControl, judge_running
from .rows import INSERT_COLUMNS, row_to_job
from .schema import jobs as jobs_table

if TYPE_CHECKING:
    from .scheduling import SchedulingVerbs

#: Transitions that finish a job: its blocked dependents are settled in the same transaction.
FINISHING = frozenset({Transition.COMPLETE, Transition.DISCARD, Transition.CANCEL})


def _stored(job_id: int, r: NewJob) -> Job:
    """The job just stored from row ``r`` under ``job_id`` (no need to read it back)."""
    # Positional arguments in Job's field order (checked against the columns at import).
    return Job.of(job_id, r.topic, r.worker, r.decoded_args if r.decoded_args is not None else json.loads(r.args),
                  r.state, r.priority, r.attempt, r.max_attempts, [], None, r.inserted_at, r.scheduled_at,
                  None, None, None, None, None,
                  r.decoded_tags if r.decoded_tags is not None else [] if r.tags == "[]" else json.loads(r.tags),
                  r.decoded_meta if r.decoded_meta is not None else {} if r.meta == "{}" else json.loads(r.meta),
                  None, r.unique_key)


def _columns(row: NewJob) -> dict[str, Any]:
    """The stored columns of ``row`` by name (the fields after them are not columns)."""
    return {name: getattr(row, name) for name in INSERT_COLUMNS}


class _StaleAcks(Exception):
    """Internal: a batch of acks touched fewer rows than expected; redo it checking each."""


class JobVerbs:
    """Insert jobs, run the claim/ack cycle, and read jobs back."""

    def __init__(self, db: Database, notices: NoticeVerbs, scheduling: SchedulingVerbs) -> None:
        self.db = db
        self.notices = notices
        self._scheduling = scheduling
        self._claim = db.prepare(sql.claim(db.dialect))
        self._stage = db.prepare(sql.STAGE)
        self._paused = db.prepare(sql.PAUSED)
        self._acks = {transition: db.prepare(statement) for transition, statement in sql.ACKS.items()}
        self._live_check = db.prepare(sql.LIVE_CHECK)
        self._insert_returning = db.prepare(sql.INSERT_RETURNING, NewJob._fields)
        self._insert_plain = db.prepare(sql.INSERT, NewJob._fields)
        #: Prepared "rows of these n running jobs" statements, by n.
        self._running_rows: dict[int, Prepared] = {}
        self._limited = LimitedClaims(db)

    # ------------------------------------------------------------ writes

    def insert(self, rows: Sequence[NewJob]) -> list[Job]:
        """Insert ``rows`` in one transaction; returns the stored jobs in the order given.

        Rows that are unique or have dependencies go through
        :meth:`~.scheduling.SchedulingVerbs.insert_linked` (a duplicate found is returned
        instead, with ``duplicate`` set). Where the database notifies, the transaction
        also tells every node which topics got available jobs (delivered at commit).
        """
        if not rows:
            return []
        if any(row.linked for row in rows):
            return self._scheduling.insert_linked(rows)
        if len(rows) > 1 and self.db.dialect.bulk_load:
            def insert_bulk(cursor: Any) -> list[int]:
                ids = bulk.insert_rows(cursor, rows)
                self._announce(cursor, rows)
                return ids
            ids = self.db.write(insert_bulk, durable=True)
            return [_stored(job_id, row) for job_id, row in zip(ids, rows, strict=True)]
        if len(rows) == 1 and self.db.dialect.sequential_ids:
            # One row where ids are given in order (SQLite): its id is the cursor's
            # lastrowid, and the job is the row as sent; nothing to read back.
            def insert_one(cursor: Any) -> int:
                cursor.execute(self._insert_plain.sql, self._insert_plain.params_of(rows[0]))
                self._announce(cursor, rows)
                job_id: int = cursor.lastrowid
                return job_id
            return [_stored(self.db.write(insert_one, durable=True), rows[0])]
        if len(rows) == 1 or not self.db.dialect.sequential_ids:
            def insert_returning(cursor: Any) -> list[Job]:
                stored = []
                for row in rows:
                    cursor.execute(self._insert_returning.sql, self._insert_returning.params_of(row))
                    stored.append(row_to_job(cursor.fetchone()))
                self._announce(cursor, rows)
                return stored
            return self.db.write(insert_returning, durable=True)

        def insert_many(cursor: Any) -> int:
            cursor.executemany(self._insert_plain.sql, [self._insert_plain.params_of(r) for r in rows])
            last_id: int = cursor.execute("SELECT last_insert_rowid()").fetchone()[0]
            return last_id
        first = self.db.write(insert_many, durable=True) - len(rows) + 1
        return [_stored(first + i, row) for i, row in enumerate(rows)]

    def insert_on(self, conn: Connection, rows: Sequence[NewJob]) -> list[Job]:
        """Insert ``rows`` in ``conn``'s open transaction (the caller's own); returns the
        jobs as stored, which exist once the caller commits. Notices ride along. Unique
        and linked rows get the same look-ups as in :meth:`insert`, in that transaction."""
        if any(row.linked for row in rows):
            return self._scheduling.insert_linked_on(conn, rows)
        stored = [row_to_job(conn.execute(sql.INSERT_RETURNING, _columns(row)).one()) for row in rows]
        self.notices.send(conn, INSERTED, {job.topic for job in stored if job.state == JobState.AVAILABLE})
        return stored

    def _announce(self, cursor: Any, rows: Sequence[NewJob]) -> None:
        if self.notices.notifies:
            self.notices.send_on_cursor(cursor, INSERTED, {r.topic for r in rows if r.state == JobState.AVAILABLE})

    def cycle(self, acks: Sequence[Ack] = (), request: ClaimRequest | None = None) -> CycleResult:
        """Record finished executions, then serve ``request``, in one transaction.

        Each ack applies only while its row is still executing at that attempt. With a
        request: read the topic's control first when ``request.running`` is given (a
        paused topic then stages and claims nothing; with ``request.parallelism`` the
        claim is capped to the parallelism in force minus ``request.taken``), stage due
        jobs when asked, and claim up to ``request.limit`` jobs: they become
        ``executing`` with ``attempt`` + 1, stamped with ``now`` and ``node``. With
        ``request.limits``, the topic's claim lock is taken first and only what the
        limits across nodes let start is claimed (:mod:`.limited`).
        """
        try:
            return self._cycle(acks, request, checked=False)
        except _StaleAcks:
            return self._cycle(acks, request, checked=True)

    def _cycle(self, acks: Sequence[Ack], request: ClaimRequest | None, checked: bool) -> CycleResult:
        def body(cursor: Any) -> CycleResult:
            applied = self._apply_acks(cursor, acks, checked) if acks else ()
            if request is None:
                return CycleResult(applied, [])
            limit = request.limit
            if request.limits is not None:
                # Before the control read and the staging: every claimer of the topic takes
                # this lock before touching its rows, so none waits on rows another holds.
                self._limited.serialise(cursor, request.topic)
            control = None
            if request.running is not None:
                control = self._read_control(cursor, request.topic, request.running, request.node)
                if control.paused:
                    return CycleResult(applied, [], control)
                if request.parallelism is not None:
                    in_force = request.parallelism if control.parallelism is None else control.parallelism
                    limit = min(limit, in_force - request.taken)
            if request.stage:
                cursor.execute(self._stage.sql, self._stage.params({"b_topic": request.topic, "b_now": request.now}))
            if limit <= 0:
                return CycleResult(applied, [], control)
            if request.limits is not None:
                claimed, retry_at = self._limited.claim(
                    cursor, request.topic, request.limits, limit, request.now, request.node
                )
                return CycleResult(applied, claimed, control, retry_at)
            cursor.execute(self._claim.sql, self._claim.params(
                {"b_topic": request.topic, "b_limit": limit, "b_now": request.now, "b_node": request.node}
            ))
            return CycleResult(applied, [row_to_job(r) for r in cursor.fetchall()], control)
        result = self.db.write(body)
        result.claimed.sort(key=lambda j: (j.priority, j.scheduled_at, j.id))
        return result

    def _apply_acks(self, cursor: Any, acks: Sequence[Ack], checked: bool) -> tuple[bool, ...]:
        live: set[tuple[int, int]] | None = None
        if checked:
            live = set()
            for ack in acks:
                cursor.execute(self._live_check.sql, self._live_check.params({"b_id": ack.job.id}))
                row = cursor.fetchone()
                if row is not None:
                    live.add((row[0], row[1]))
        applied = (True,) * len(acks) if live is None else tuple((a.job.id, a.job.attempt) in live for a in acks)
        by_transition: dict[Transition, list[Any]] = {}
        for ack, applies in zip(acks, applied, strict=True):
            if not applies:
                continue
            job = ack.job
            # Each transition's statement takes the subset it binds; the other keys are ignored.
            params = {"b_id": job.id, "b_attempt": job.attempt, "b_at": ack.at, "b_result": ack.result,
                      "b_errors": ack.errors}
            by_transition.setdefault(ack.transition, []).append(self._acks[ack.transition].params(params))
        for transition, params_list in by_transition.items():
            cursor.executemany(self._acks[transition].sql, params_list)
            if cursor.rowcount != len(params_list):
                if checked:
                    raise StorageError(f"ack of {transition} touched {cursor.rowcount} of {len(params_list)} rows")
                raise _StaleAcks()
        finished = [a for a, applies in zip(acks, applied, strict=True) if applies and a.transition in FINISHING]
        if finished:
            # One indexed look-up of the dependents table; nothing more when there are none.
            now = max(a.at or 0.0 for a in finished)
            record(settle(OnCursor(cursor, self.db.engine.dialect), [a.job.id for a in finished], now,
                          row_to_job))
        return applied

    def _read_control(self, cursor: Any, topic: str, running: Sequence[tuple[int, int]], node: str) -> TopicControl:
        """The topic's control, inside the caller's transaction (prepared statements, raw cursor)."""
        cursor.execute(self._paused.sql, self._paused.params({"b_topic": topic}))
        row = cursor.fetchone()
        rows: list[Any] = []
        if running:
            check = self._running_rows.get(len(running))
            if check is None:
                check = self._running_rows[len(running)] = self.db.prepare(sql.running_rows(len(running)))
            cursor.execute(check.sql, check.params({f"b_id{i}": job_id for i, (job_id, _) in enumerate(running)}))
            rows = cursor.fetchall()
        cancelled, lost = judge_running(running, node, rows)
        return TopicControl(bool(row and row[0]), cancelled, lost, None if row is None else row[1])

    def stage_due(self, topic: str, now: float) -> int:
        """Make scheduled and retryable jobs of ``topic`` due by ``now`` available; returns how many."""
        def body(cursor: Any) -> int:
            cursor.execute(self._stage.sql, self._stage.params({"b_topic": topic, "b_now": now}))
            staged: int = cursor.rowcount
            return staged
        return self.db.write(body)

    # ------------------------------------------------------------ reads

    def get(self, job_id: int) -> Job | None:
        """The job with that id, or None."""
        with self.db.read() as conn, conn.begin():
            row = conn.execute(ops.job_by_id(job_id)).first()
        return None if row is None else row_to_job(row)

    def listing(
        self, topic: str | None = None, state: str | None = None, limit: int = 100, worker: str | None = None,
        newest_first: bool = True, tag: str | None = None,
    ) -> list[Job]:
        """Jobs filtered by topic, state, worker and tag, newest first by default."""
        order = jobs_table.c.id.desc() if newest_first else jobs_table.c.id.asc()
        query = ops.job_listing(topic, state, worker, tag).order_by(order).limit(limit)
        with self.db.read() as conn, conn.begin():
            return [row_to_job(r) for r in conn.execute(query)]

    def page(
        self, topic: str | None, state: str | None, limit: int, before_id: int | None = None, tag: str | None = None,
    ) -> tuple[list[Job], int | None]:
        """One page of jobs, newest first, and the cursor of the next page (None: last page)."""
        query = ops.job_listing(topic, state, tag=tag).order_by(jobs_table.c.id.desc()).limit(limit + 1)
        if before_id is not None:
            query = query.where(jobs_table.c.id < before_id)
        with self.db.read() as conn, conn.begin():
            found = [row_to_job(r) for r in conn.execute(query)]
        if len(found) > limit:
            return found[:limit], found[limit - 1].id
        return found, None

    def stats(self, topics: Iterable[str] = ()) -> dict[str, dict[str, int]]:
        """Job counts per topic and state; every state is present for every topic named."""
        with self.db.read() as conn, conn.begin():
            return counts_by_state(conn, topics)


__all__ = ["JobVerbs"]
