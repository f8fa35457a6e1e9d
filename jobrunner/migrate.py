"""Versioned schema migrations: numbered SQL files per dialect, applied in order.

Files live in ``migrations/<dialect>/NNNN_description.sql`` (shipped inside the wheel as
``jobrunner/migrations``). Applied versions are recorded in ``jobrunner_schema``. Each
migration runs in its own transaction, and processes starting at once apply each
migration exactly once: on SQLite each transaction takes the write lock first; on
PostgreSQL the whole run holds an advisory lock (DDL there does not wait on row locks,
so two first starts would both try to create the same tables).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, select

from .errors import MigrationError
from .storage.dialects import migration_lock
from .storage.schema import schema_versions

_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        """The file's SQL statements (split on ``;`` at a line end), comments removed."""
        text = "\n".join(
            line for line in self.path.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("--")
        )
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]


def migrations_dir() -> Path:
    """Where the SQL files are: inside the installed package, else the source checkout."""
    packaged = Path(__file__).resolve().parent / "migrations"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if checkout.is_dir():
        return checkout
    raise MigrationError(f"no migrations directory found (looked in {packaged} and {checkout})")


def available_migrations(dialect: str) -> list[Migration]:
    """Every migration for ``dialect`` in version order; gaps or duplicates are errors."""
    folder = migrations_dir() / dialect
    if not folder.is_dir():
        raise MigrationError(f"no migrations for database dialect {dialect!r} in {folder.parent}")
    found = []
    for path in sorted(folder.iterdir()):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {migration.path.name}: expected version {expected:04d}")
    return found


def applied_versions(conn: Connection) -> set[int]:
    """Versions recorded in ``jobrunner_schema`` (creating that table if needed)."""
    schema_versions.create(conn, checkfirst=True)
    return set(conn.scalars(select(schema_versions.c.version)))


@contextlib.contextmanager
def _exclusive(engine: Engine) -> Iterator[None]:
    """Keep other processes' migration runs out for the block (PostgreSQL; on SQLite
    each migration's write lock is enough)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn, migration_lock(conn.execution_options(isolation_level="AUTOCOMMIT")):
        yield


def migrate(engine: Engine) -> list[Migration]:
    """Apply every pending migration in order; returns those applied now."""
    applied_now = []
    with _exclusive(engine):
        for migration in available_migrations(engine.dialect.name):
            with engine.begin() as conn:
                # Re-read inside the write transaction: another process may have just applied it.
                if migration.version in applied_versions(conn):
                    continue
                try:
                    for statement in migration.statements():
                        conn.exec_driver_sql(statement)
                except Exception as exc:
                    raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
                conn.execute(
                    schema_versions.insert().values(
                        version=migration.version, name=migration.name, applied_at=time.time()
                    )
                )
            applied_now.append(migration)
    return applied_now


def pending(engine: Engine) -> list[Migration]:
    """Migrations not yet applied to the database."""
    with engine.connect() as conn, conn.begin():
        return pending_on(conn)


def pending_on(conn: Connection) -> list[Migration]:
    """Migrations not yet applied, read on ``conn`` without creating or writing anything."""
    done: set[int] = set()
    if inspect(conn).has_table(schema_versions.name):
        done = set(conn.scalars(select(schema_versions.c.version)))
    return [m for m in available_migrations(conn.dialect.name) if m.version not in done]
