"""What the storage verb mixins need from :class:`jobrunner.store.Store`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Table, update

from .job import Job, iso
from .schema import jobs

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.sql.dml import Update

T = TypeVar("T")


class StoreAccess:
    """Transactions, reads and row decoding, provided by the Store the verbs are mixed into."""

    engine: Engine

    def _transaction(self, body: Callable[[Connection], T]) -> T:  # pragma: no cover - interface
        raise NotImplementedError

    def _read(self) -> Connection:  # pragma: no cover - interface
        raise NotImplementedError

    def _row_to_job(self, row: Sequence[Any]) -> Job:  # pragma: no cover - interface
        raise NotImplementedError

    def _ack_statement(self, kind: str) -> Update:  # pragma: no cover - interface
        """The conditional UPDATE of one ack kind (binds b_id, b_attempt, b_at, b_result, b_errors)."""
        raise NotImplementedError

    def _serialise(self, conn: Connection, key: str) -> None:  # pragma: no cover - interface
        """Make transactions that name ``key`` run one at a time (until ``conn`` commits)."""
        raise NotImplementedError

    def _upsert(
        self, conn: Connection, table: Table, values: Mapping[str, Any], keys: Sequence[str], updates: Sequence[str]
    ) -> None:  # pragma: no cover - interface
        """Insert ``values`` into ``table``, or where a row with the same ``keys`` exists,
        set its ``updates`` columns to the new values (one race-free statement)."""
        raise NotImplementedError

    def _settle_on(self, conn: Connection, finished: Sequence[int], now: float) -> Any:  # pragma: no cover
        """Release or cancel the blocked dependents of ``finished`` jobs in ``conn``'s transaction."""
        raise NotImplementedError

    def _block_again(self, conn: Connection, ids: Sequence[int]) -> None:  # pragma: no cover - interface
        """Jobs among ``ids`` just made available whose dependencies are not all done wait again."""
        raise NotImplementedError

    def _unlink(self, conn: Connection, ids: Sequence[int]) -> None:  # pragma: no cover - interface
        """Forget the dependencies of the deleted jobs ``ids``."""
        raise NotImplementedError

    def _put_back(self, conn: Connection, job: Job, now: float, reason: str) -> Job | None:
        """Return an ``executing`` job whose executor vanished to the queue, in ``conn``'s
        transaction: the attempt stays counted, ``reason`` joins its ``errors``, and it
        becomes ``available`` (``discarded`` after its last attempt). Returns the job as it
        is now, or None when it had already left ``executing`` at that attempt."""
        errors = [*job.errors, {"attempt": job.attempt, "at": iso(now), "error": reason, "traceback": None}]
        values: dict[str, Any] = {"errors": json.dumps(errors)}
        if job.attempt >= job.max_attempts:
            values.update(state="discarded", discarded_at=now)
        else:
            values.update(state="available", scheduled_at=now)
        moved = conn.execute(
            update(jobs)
            .where(jobs.c.id == job.id, jobs.c.state == "executing", jobs.c.attempt == job.attempt)
            .values(**values)
        )
        if moved.rowcount and values["state"] == "discarded":
            self._settle_on(conn, [job.id], now)
        return job.evolve(**{**values, "errors": errors}) if moved.rowcount else None
