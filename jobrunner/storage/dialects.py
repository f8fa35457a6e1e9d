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

from sqlalchemy import Connection, Table, func, select
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

    @classmethod
    def named(cls, name: str) -> Dialect:
        """The flags of the dialect SQLAlchemy calls ``name``."""
        if name == "sqlite":
            return cls(name, serial_writes=True, sequential_ids=True, begin_sql="BEGIN IMMEDIATE",
                       locking_claim=False, file_probe=True)
        return cls(name, serial_writes=False, sequential_ids=False, begin_sql=None,
                   locking_claim=True, file_probe=False)


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


__all__ = ["LOCK_NAMESPACE", "MIGRATION_NAMESPACE", "Dialect", "lock_for_transaction", "migration_lock", "upsert"]
