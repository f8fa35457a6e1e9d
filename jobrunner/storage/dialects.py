"""Every difference between SQLite and PostgreSQL that the storage layer has to know.

:class:`Dialect` holds the capability flags (one writer at a time, consecutive ids, how a
write transaction begins, whether the claim locks and skips rows); the functions build
the few statements whose SQL differs beyond SQLAlchemy Core's reach. Used only by
:mod:`jobrunner.storage` and :mod:`jobrunner.migrate`; nothing above storage knows the
dialect.

PostgreSQL advisory locks take two 32-bit keys: a namespace of ours and a number for
the thing locked (``hashtext`` of its name). Two names that hash alike only serialise
a little more than needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.sql.dml import Insert


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one database engine can do, as flags the storage layer branches on."""

    #: SQLAlchemy's name of the dialect (``sqlite`` or ``postgresql``).
    name: str
    #: The database takes one writer at a time (SQLite): callers serialise their own
    #: writes instead of queueing on the lock, and a write transaction already excludes
    #: every other writer (no advisory lock needed).
    serial_writes: bool
    #: Ids of rows inserted in one transaction are consecutive (SQLite AUTOINCREMENT
    #: under the write lock), so a bulk insert needs no RETURNING.
    sequential_ids: bool
    #: The statement that opens a write transaction on a raw connection (None: the driver's own).
    begin_sql: str | None
    #: The claim must lock the rows it picks and skip those others hold (PostgreSQL).
    locking_claim: bool
    #: Commits by other processes can be noticed on the database file (SQLite WAL).
    file_probe: bool
    #: Transactions can announce their changes to every connection (PostgreSQL LISTEN/NOTIFY).
    notifies: bool
    #: Many new rows go in as one bulk load (PostgreSQL ``COPY``), not a statement per row.
    bulk_load: bool

    @classmethod
    def named(cls, name: str) -> Dialect:
        """The flags of the dialect SQLAlchemy calls ``name``."""
        if name == "sqlite":
            return cls(name, serial_writes=True, sequential_ids=True, begin_sql="BEGIN IMMEDIATE",
                       locking_claim=False, file_probe=True, notifies=False, bulk_load=False)
        return cls(name, serial_writes=False, sequential_ids=False, begin_sql=None,
                   locking_claim=True, file_probe=False, notifies=True, bulk_load=True)


#: Advisory-lock namespace of transaction-scoped locks (per topic, per action).
LOCK_NAMESPACE = 0x6A72_0001
#: Advisory-lock namespace of the migration run (session-scoped).
MIGRATION_NAMESPACE = 0x6A72_0002


def lock_for_transaction(conn: Connection, key: str) -> None:
    """PostgreSQL: wait for, then hold until commit, the advisory lock named ``key``."""
    conn.execute(select(func.pg_advisory_xact_lock(LOCK_NAMESPACE, func.hashtext(key))))


@contextlib.contextmanager
def migration_lock(conn: Connection) -> Iterator[None]:
    """PostgreSQL: hold the migration lock on ``conn`` (an AUTOCOMMIT connection) for the block.

    A session lock, held across the separate transactions of each migration; the
    server releases it too if the connection drops.
    """
    conn.execute(select(func.pg_advisory_lock(MIGRATION_NAMESPACE, 0)))
    try:
        yield
    finally:
        conn.execute(select(func.pg_advisory_unlock(MIGRATION_NAMESPACE, 0)))


def id_high_water(conn: Connection) -> int:
    """The highest job id this database ever handed out (its sequence, pruned ids included)."""
    if conn.dialect.name == "postgresql":
        row = conn.execute(text(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM jobrunner_jobs_id_seq"
        )).first()
    else:
        row = conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = 'jobrunner_jobs'")).first()
    return int(row[0]) if row and row[0] is not None else 0


def advance_ids(conn: Connection, past: int) -> None:
    """Make the database hand out job ids above ``past`` from now on."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT setval(pg_get_serial_sequence('jobrunner_jobs', 'id'), :n, true)"), {"n": past})
        return
    # Inserting explicit ids already raised it to the highest copied id; go past pruned ones too.
    conn.execute(text("UPDATE sqlite_sequence SET seq = max(seq, :n) WHERE name = 'jobrunner_jobs'"), {"n": past})
    conn.execute(text("INSERT INTO sqlite_sequence (name, seq) SELECT 'jobrunner_jobs', :n "
                      "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'jobrunner_jobs')"), {"n": past})


def upsert(
    dialect: str, table: Table, values: Mapping[str, Any], keys: Sequence[str], updates: Sequence[str]
) -> Insert:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET updates = excluded.updates`` for ``dialect``."""
    # Each dialect has its own Insert class (same on_conflict_do_update): one branch each.
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table).values(dict(values))
        return lite.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys], set_={name: lite.excluded[name] for name in updates}
        )
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        pg = postgresql_insert(table).values(dict(values))
        return pg.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys], set_={name: pg.excluded[name] for name in updates}
        )
    raise ValueError(f"no upsert for database dialect {dialect!r}")  # pragma: no cover - two dialects only


__all__ = [
    "LOCK_NAMESPACE", "MIGRATION_NAMESPACE", "Dialect", "advance_ids", "id_high_water", "lock_for_transaction",
    "migration_lock", "upsert",
]
