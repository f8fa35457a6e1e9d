"""Cron slots: insert each slot's job exactly once, and read the last one of each schedule.

``jobrunner_cron_slots`` holds one row per (schedule, slot) a job was inserted for. The
slot row and its job are written in one transaction; the primary key turns a second
insert of the same slot into a no-op (``ON CONFLICT DO NOTHING``), whichever process
or machine tries, so every slot has exactly one job without any leader. Transactions
of one schedule are also serialised (SQLite's write lock, a PostgreSQL advisory
lock), so the newest slot each reads is the newest stored and catch-up policies see
the same history everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.sql.dml import Insert

from ..job import Job, JobState
from .database import Database
from .notices import INSERTED, NoticeVerbs
from .records import NewJob
from .rows import ALL, INSERT_COLUMNS, row_to_job
from .schema import cron_slots, jobs

#: A plan for one schedule: given the newest slot stored (None: never run), the
#: (slot, job row) pairs to insert, oldest first.
CronPlan = Callable[[int | None], Sequence[tuple[int, NewJob]]]


def _insert_slot(dialect: str, schedule: str, slot: int) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` of one slot row, in ``dialect``'s spelling."""
    values = {"schedule": schedule, "slot": slot, "job_id": None}
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(cron_slots).values(values).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(cron_slots).values(values).on_conflict_do_nothing()


class CronVerbs:
    """Insert the jobs of cron slots, once each; read each schedule's last job."""

    def __init__(self, db: Database, notices: NoticeVerbs) -> None:
        self.db = db
        self.notices = notices

    def insert_jobs(self, schedule: str, plan: CronPlan) -> list[tuple[int, Job]]:
        """Insert the jobs ``plan`` asks for, each with its slot row, in one transaction.

        A slot not newer than the newest stored one, or stored meanwhile by another
        process, is left out. Older slot rows of the schedule are deleted once newer
        ones exist (the newest is what later decisions need). Returns the (slot, job)
        pairs inserted.
        """
        def body(conn: Connection) -> list[tuple[int, Job]]:
            self.db.serialise(conn, f"jobrunner:cron:{schedule}")
            last = conn.execute(
                select(func.max(cron_slots.c.slot)).where(cron_slots.c.schedule == schedule)
            ).scalar()
            inserted: list[tuple[int, Job]] = []
            for slot, row in plan(last):
                if last is not None and slot <= last:
                    continue
                if not conn.execute(_insert_slot(conn.dialect.name, schedule, slot)).rowcount:
                    continue  # another process stored this slot first
                values = {name: value for name, value in row._asdict().items() if name in INSERT_COLUMNS}
                job = row_to_job(conn.execute(jobs.insert().values(values).returning(*ALL)).one())
                conn.execute(
                    update(cron_slots)
                    .where(cron_slots.c.schedule == schedule, cron_slots.c.slot == slot)
                    .values(job_id=job.id)
                )
                inserted.append((slot, job))
            if inserted and last is not None:
                conn.execute(delete(cron_slots).where(cron_slots.c.schedule == schedule, cron_slots.c.slot < last))
            # Every node may start them at once (delivered at commit).
            self.notices.send(conn, INSERTED, {job.topic for _, job in inserted if job.state == JobState.AVAILABLE})
            return inserted
        return self.db.transaction(body)

    def last_jobs(self, schedules: Iterable[str]) -> dict[str, tuple[int, Job | None]]:
        """The newest slot stored for each of ``schedules`` that has one, with its job
        (None once the job was pruned)."""
        names = list(schedules)
        if not names:
            return {}
        newest = (
            select(cron_slots.c.schedule, func.max(cron_slots.c.slot).label("slot"))
            .where(cron_slots.c.schedule.in_(names))
            .group_by(cron_slots.c.schedule)
            .subquery()
        )
        query = (
            select(cron_slots.c.schedule, cron_slots.c.slot, *ALL)
            .join(newest, (newest.c.schedule == cron_slots.c.schedule) & (newest.c.slot == cron_slots.c.slot))
            .outerjoin(jobs, jobs.c.id == cron_slots.c.job_id)
        )
        found: dict[str, tuple[int, Job | None]] = {}
        with self.db.read() as conn, conn.begin():
            for row in conn.execute(query):
                schedule, slot, *columns = row
                found[schedule] = (int(slot), None if columns[0] is None else row_to_job(columns))
        return found


__all__ = ["CronPlan", "CronVerbs"]
