"""Schema migrations on real SQLite files: they build exactly the declared metadata."""

from __future__ import annotations

import multiprocessing
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from jobrunner import migrate as migrate_module
from jobrunner.config import DatabaseSettings
from jobrunner.errors import ConfigError, MigrationError, StorageError
from jobrunner.migrate import available_migrations
from jobrunner.storage.database import Database
from jobrunner.storage.schema import jobs, metadata, schema_versions


def url_for(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Database]:
    made = Database(DatabaseSettings(url=url_for(db_path)))
    yield made
    made.close()


def sqlite_affinity(declared: str) -> str:
    """SQLite's column affinity of a declared type (https://sqlite.org/datatype3.html §3.1)."""
    name = declared.upper()
    if "INT" in name:
        return "INTEGER"
    if "CHAR" in name or "CLOB" in name or "TEXT" in name:
        return "TEXT"
    if not name or "BLOB" in name:
        return "BLOB"
    if "REAL" in name or "FLOA" in name or "DOUB" in name:
        return "REAL"
    return "NUMERIC"


def declared_affinity(column: sa.Column[Any]) -> str:
    """Affinity of a metadata column as SQLite would create it."""
    return sqlite_affinity(column.type.compile(dialect=sqlite_dialect.dialect()))


# ---------------------------------------------------------------- the schema


def server_default_of(column: sa.Column[Any]) -> Any:
    """The text of the column's declared server default (None: it has none)."""
    default = column.server_default
    if default is None:
        return None
    assert isinstance(default, sa.DefaultClause), default  # the metadata declares no other kind
    return default.arg


def table_of(index: sa.Index) -> sa.Table:
    """The table ``index`` is declared on."""
    assert index.table is not None, index.name
    return index.table


def test_migrations_build_exactly_the_declared_metadata(store: Database) -> None:
    applied = store.migrate()
    assert [m.version for m in applied] == [m.version for m in available_migrations("sqlite")]

    inspector = sa.inspect(store.engine)
    assert sorted(inspector.get_table_names()) == sorted(metadata.tables)

    for table in metadata.sorted_tables:
        reflected = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert list(reflected) == [c.name for c in table.columns], table.name

        pk = inspector.get_pk_constraint(table.name)
        assert pk["constrained_columns"] == [c.name for c in table.primary_key.columns], table.name

        for column in table.columns:
            got = reflected[column.name]
            where = f"{table.name}.{column.name}"
            # Every reflected type is one of SQLite's storage classes, with the same
            # affinity as the declared SQLAlchemy type (Integer/Text/Float).
            reflected_type = got["type"].compile(dialect=sqlite_dialect.dialect())
            assert sqlite_affinity(reflected_type) == declared_affinity(column), (where, reflected_type)
            assert sqlite_affinity(reflected_type) in ("INTEGER", "TEXT", "REAL"), where
            if column.primary_key:
                # SQLite reports an INTEGER PRIMARY KEY (the rowid) as nullable; it cannot hold NULL.
                # (a key of SQLite's reflection that SQLAlchemy's ReflectedColumn does not declare)
                assert bool(got["primary_key"]), where  # type: ignore[typeddict-item]
            else:
                assert got["nullable"] == column.nullable, where
            declared_default = server_default_of(column)
            reflected_default = got["default"]
            if reflected_default is not None:
                reflected_default = re.sub(r"^'(.*)'$", r"\1", reflected_default)
            assert reflected_default == declared_default, where

        reflected_indexes = {
            ix["name"]: (ix["column_names"], bool(ix["unique"])) for ix in inspector.get_indexes(table.name)
        }
        declared_indexes = {ix.name: ([c.name for c in ix.columns], bool(ix.unique)) for ix in table.indexes}
        assert reflected_indexes == declared_indexes, table.name


def test_postgresql_migrations_build_exactly_the_declared_metadata(pg_url: str) -> None:
    made = Database(DatabaseSettings(url=pg_url))
    try:
        assert [m.version for m in made.migrate()] == [m.version for m in available_migrations("postgresql")]
        inspector = sa.inspect(made.engine)
        assert sorted(inspector.get_table_names()) == sorted(metadata.tables)
        for table in metadata.sorted_tables:
            reflected = {c["name"]: c for c in inspector.get_columns(table.name)}
            assert list(reflected) == [c.name for c in table.columns], table.name
            pk = inspector.get_pk_constraint(table.name)
            assert pk["constrained_columns"] == [c.name for c in table.primary_key.columns], table.name
            for column in table.columns:
                got, where = reflected[column.name], f"{table.name}.{column.name}"
                declared_type = column.type.dialect_impl(made.engine.dialect)
                assert got["type"]._type_affinity is declared_type._type_affinity, (where, got["type"])
                assert got["nullable"] == column.nullable, where
                declared_default = server_default_of(column)
                reflected_default = got["default"]
                if column.primary_key and column.autoincrement is True:
                    assert reflected_default and reflected_default.startswith("nextval("), where
                    continue
                if reflected_default is not None:
                    reflected_default = re.sub(r"^'(.*)'::text$", r"\1", reflected_default)
                assert reflected_default == declared_default, where
            reflected_indexes = {
                ix["name"]: (ix["column_names"], bool(ix["unique"])) for ix in inspector.get_indexes(table.name)
            }
            declared_indexes = {ix.name: ([c.name for c in ix.columns], bool(ix.unique)) for ix in table.indexes}
            assert reflected_indexes == declared_indexes, table.name
    finally:
        made.close()


def test_jobs_table_has_the_documented_minimum_columns() -> None:
    required = {
        "id", "topic", "worker", "args", "state", "priority", "attempt", "max_attempts", "errors",
        "result", "inserted_at", "scheduled_at", "attempted_at", "completed_at", "discarded_at",
        "cancelled_at", "attempted_by",
    }
    assert required <= set(jobs.c.keys())


def test_claim_index_serves_the_claim_query(store: Database) -> None:
    store.migrate()
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM jobrunner_jobs WHERE topic = 'a' AND state = 'available' "
            "ORDER BY priority, scheduled_at, id LIMIT 5"
        ).all()
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX ix_jobrunner_jobs_claim" in details or "USING COVERING INDEX ix_jobrunner_jobs_claim" in details
    assert "TEMP B-TREE" not in details  # no sort step: the index gives the order


def test_job_ids_are_never_reused(store: Database) -> None:
    store.migrate()
    now = time.time()
    row = {"topic": "t", "worker": "w", "inserted_at": now, "scheduled_at": now}
    with store.engine.begin() as conn:
        first_key = conn.execute(jobs.insert().values(row)).inserted_primary_key
        assert first_key is not None
        first = first_key[0]
        conn.execute(jobs.delete().where(jobs.c.id == first))
        second_key = conn.execute(jobs.insert().values(row)).inserted_primary_key
        assert second_key is not None
        second = second_key[0]
    assert second > first


def test_server_defaults_fill_a_minimal_row(store: Database) -> None:
    store.migrate()
    now = time.time()
    with store.engine.begin() as conn:
        conn.execute(jobs.insert().values(topic="t", worker="w", inserted_at=now, scheduled_at=now))
        row = conn.execute(sa.select(jobs)).one()._mapping
    assert (row["args"], row["state"], row["priority"], row["attempt"], row["max_attempts"], row["errors"]) == (
        "{}", "available", 0, 0, 50, "[]"
    )
    assert row["result"] is None and row["attempted_by"] is None


# ---------------------------------------------------------------- applying


def test_migrating_twice_is_a_no_op(store: Database, db_path: Path) -> None:
    assert store.migrate() != []
    assert store.migrate() == []
    assert store.pending_migrations() == []
    other = Database(DatabaseSettings(url=url_for(db_path)))
    try:
        assert other.migrate() == []
    finally:
        other.close()
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema_versions)).scalar_one() == len(
            available_migrations("sqlite")
        )


def test_versions_are_recorded(store: Database) -> None:
    assert [m.version for m in store.pending_migrations()] == [m.version for m in available_migrations("sqlite")]
    before = time.time()
    store.migrate()
    after = time.time()
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(schema_versions.c.version, schema_versions.c.name, schema_versions.c.applied_at)
            .order_by(schema_versions.c.version)
        ).all()
    assert [(r.version, r.name) for r in rows] == [(m.version, m.name) for m in available_migrations("sqlite")]
    assert all(before - 1 <= r.applied_at <= after + 1 for r in rows)


def test_available_migrations_are_numbered_from_one() -> None:
    found = available_migrations("sqlite")
    assert found, "no SQLite migrations found"
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "create_jobs"
    assert all(m.statements() for m in found)


def test_dialects_have_aligned_versions_and_names() -> None:
    lite = available_migrations("sqlite")
    pg = available_migrations("postgresql")
    assert [(m.version, m.name) for m in lite] == [(m.version, m.name) for m in pg]


_CREATE_TABLE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)\s*\((.*)\)\s*$", re.S | re.I)
_CREATE_INDEX = re.compile(r"CREATE (UNIQUE )?INDEX (?:IF NOT EXISTS )?(\w+) ON (\w+)\s*\(([^)]*)\)", re.I)
_DROP_INDEX = re.compile(r"DROP INDEX (?:IF EXISTS )?(\w+)\s*$", re.I)
_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+) (.*)$", re.S | re.I)


def _declared_by(dialect: str) -> dict[str, Any]:
    """Tables (column → NOT NULL?) and indexes created by a dialect's migration files."""
    tables: dict[str, dict[str, bool]] = {}
    indexes: dict[str, tuple[str, list[str], bool]] = {}
    for migration in available_migrations(dialect):
        for statement in migration.statements():
            if m := _CREATE_TABLE.match(statement):
                columns = {}
                for line in m.group(2).split(",\n"):
                    words = line.split()
                    if words and words[0].upper() not in ("PRIMARY", "UNIQUE", "CONSTRAINT", "FOREIGN", "CHECK"):
                        upper = line.upper()
                        columns[words[0]] = "NOT NULL" in upper or "PRIMARY KEY" in upper
                tables[m.group(1)] = columns
            elif m := _ADD_COLUMN.match(statement):
                tables[m.group(1)][m.group(2)] = "NOT NULL" in m.group(3).upper()
            elif m := _CREATE_INDEX.match(statement):
                indexes[m.group(2)] = (m.group(3), [c.strip() for c in m.group(4).split(",")], bool(m.group(1)))
            elif m := _DROP_INDEX.match(statement):
                del indexes[m.group(1)]
            else:  # a later migration of another kind: extend this helper
                pytest.fail(f"{migration.path}: statement not understood by this test: {statement[:60]!r}")
    return {"tables": tables, "indexes": indexes}


def test_postgresql_migrations_declare_the_same_schema_as_sqlite() -> None:
    lite, pg = _declared_by("sqlite"), _declared_by("postgresql")
    assert lite == pg
    # ... and that schema is the metadata's (jobrunner_schema is created from metadata).
    assert {name: {c.name: not c.nullable for c in t.columns} for name, t in metadata.tables.items()
            if name != schema_versions.name} == pg["tables"]
    assert {ix.name: (table_of(ix).name, [c.name for c in ix.columns], bool(ix.unique))
            for t in metadata.tables.values() for ix in t.indexes} == pg["indexes"]


def test_gap_in_numbering_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "migrations" / "sqlite"
    folder.mkdir(parents=True)
    (folder / "0001_a.sql").write_text("CREATE TABLE a (x INTEGER);\n")
    (folder / "0003_c.sql").write_text("CREATE TABLE c (x INTEGER);\n")
    monkeypatch.setattr(migrate_module, "migrations_dir", lambda: tmp_path / "migrations")
    with pytest.raises(MigrationError, match=r"0003_c\.sql"):
        available_migrations("sqlite")


def test_unknown_dialect_is_an_error() -> None:
    with pytest.raises(MigrationError, match="oracle"):
        available_migrations("oracle")


def test_failing_migration_is_rolled_back_and_not_recorded(
    tmp_path: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "migrations" / "sqlite"
    folder.mkdir(parents=True)
    (folder / "0001_good.sql").write_text("-- fine\nCREATE TABLE good (x INTEGER);\n")
    (folder / "0002_bad.sql").write_text("CREATE TABLE half (x INTEGER);\nCREATE TABLE broken (;\n")
    monkeypatch.setattr(migrate_module, "migrations_dir", lambda: tmp_path / "migrations")
    store = Database(DatabaseSettings(url=url_for(db_path)))
    try:
        with pytest.raises(MigrationError, match=r"0002_bad\.sql"):
            store.migrate()
        inspector = sa.inspect(store.engine)
        assert "good" in inspector.get_table_names()
        assert "half" not in inspector.get_table_names()  # the whole migration rolled back
        with store.engine.connect() as conn:
            assert list(conn.scalars(sa.select(schema_versions.c.version))) == [1]
        assert [m.version for m in store.pending_migrations()] == [2]
    finally:
        store.close()


# ---------------------------------------------------------------- concurrency


def _migrate_in_child(url: str, barrier: Any, results: Any) -> None:
    """Child process: wait until every sibling is ready, then migrate the same file."""
    try:
        store = Database(DatabaseSettings(url=url))
        barrier.wait(timeout=30)
        applied = [m.version for m in store.migrate()]
        store.close()
        results.put(("ok", applied))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _check_recorded_once(path: Path, outcomes: list[tuple[str, Any]]) -> None:
    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    expected = [m.version for m in available_migrations("sqlite")]
    applied = sorted(v for _, versions in outcomes for v in versions)
    assert applied == expected, outcomes  # each migration applied by exactly one migrator
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT version FROM jobrunner_schema ORDER BY version").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert [r[0] for r in rows] == expected
    assert {"jobrunner_jobs", "jobrunner_schema"} <= tables


def test_concurrent_processes_migrate_a_fresh_file_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    count = 4
    path = tmp_path / "shared.db"
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    procs = [ctx.Process(target=_migrate_in_child, args=(url_for(path), barrier, results)) for _ in range(count)]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=45) for _ in range(count)]
    finally:
        for proc in procs:
            proc.join(timeout=15)
            if proc.is_alive():
                proc.kill()
                proc.join()
    results.close()
    results.join_thread()
    assert [p.exitcode for p in procs] == [0] * count
    _check_recorded_once(path, outcomes)


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_threads_migrate_a_fresh_file_once(tmp_path: Path, round_: int) -> None:
    count = 6
    path = tmp_path / f"threads-{round_}.db"
    barrier = threading.Barrier(count)
    results: queue.Queue[tuple[str, Any]] = queue.Queue()
    threads = [threading.Thread(target=_migrate_in_child, args=(url_for(path), barrier, results)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=45)
    assert not any(t.is_alive() for t in threads)
    _check_recorded_once(path, [results.get_nowait() for _ in range(count)])


# ---------------------------------------------------------------- opening a store


@pytest.mark.parametrize("level, code", [("OFF", 0), ("NORMAL", 1), ("FULL", 2), ("EXTRA", 3)])
def test_store_uses_wal_and_the_configured_synchronous_level(db_path: Path, level: str, code: int) -> None:
    store = Database(DatabaseSettings(url=url_for(db_path), synchronous=level))
    try:
        store.migrate()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == code
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        store.close()
    # WAL is a property of the file: a plain connection sees it too.
    plain = sqlite3.connect(db_path)
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        plain.close()


def test_default_durability_is_full(store: Database) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_busy_timeout_follows_the_settings(db_path: Path) -> None:
    store = Database(DatabaseSettings(url=url_for(db_path), busy_timeout=0.25))
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 250
    finally:
        store.close()


def test_store_in_a_missing_directory_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(StorageError) as info:
        Database(DatabaseSettings(url=url_for(missing / "jobs.db")))
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:mem?mode=memory&uri=true"]
)
def test_in_memory_database_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="in-memory"):
        Database(DatabaseSettings(url=url))


def test_invalid_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid URL"):
        Database(DatabaseSettings(url="not a url"))
