"""Shared fixtures: both anyio backends, a fresh database per test (SQLite file or
PostgreSQL database), a runner."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner import Runner
from jobrunner.config import Settings, parse
from tests.helpers import MakeRunner

REPO = Path(__file__).resolve().parent.parent


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Spread the tests like ``--dist load``, keeping the README's examples (and the
    browser tests) in order on one worker: see tests/xdist_order.py."""
    from tests.xdist_order import make_scheduler

    return make_scheduler(config, log)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return str(request.param)


#: The engines every ``db_url`` test (storage, engine, control, kill -9 ...) runs on: both
#: by default; one run on one engine: JOBRUNNER_TEST_ENGINES=sqlite (or postgresql). The
#: PostgreSQL half is skipped, saying why, when no server can be reached.
SUITE_ENGINES = os.environ.get("JOBRUNNER_TEST_ENGINES", "sqlite,postgresql").split(",")
#: Every engine jobrunner supports (the ``any_db_url`` fixture).
ALL_ENGINES = ["sqlite", "postgresql"]
#: The PostgreSQL server the tests use: a maintenance database on it, reached with the
#: right to CREATE DATABASE. Each test gets a database of its own next to it.
POSTGRES_SERVER = os.environ.get(
    "JOBRUNNER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test PostgreSQL server; skips (saying why) when it cannot be reached."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("PostgreSQL tests need psycopg: pip install -e \".[test]\" (or \"jobrunner[postgres]\")")
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_SERVER)
    try:
        psycopg.connect(_libpq_dsn(url), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.skip(f"PostgreSQL server {url.render_as_string(hide_password=True)} cannot be reached "
                    f"(set JOBRUNNER_TEST_POSTGRES to another server): {reason}")
    return POSTGRES_SERVER


def _libpq_dsn(url: Any, database: str | None = None) -> str:
    """A libpq connection string for a SQLAlchemy URL (psycopg's own connect)."""
    parts = {"host": url.host, "port": url.port, "user": url.username, "password": url.password,
             "dbname": database or url.database}
    return " ".join(f"{k}='{v}'" for k, v in parts.items() if v is not None)


@pytest.fixture(scope="session")
def pg_database(postgres_server: str) -> Iterator[str]:
    """A PostgreSQL database of this test process (one per xdist worker), dropped at the end.

    Tests get it emptied (:func:`pg_url`): emptying a schema costs about 20 ms where a new
    database and its drop cost about 270 ms, more under the suite's load, for each of the
    suite's hundreds of PostgreSQL tests."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server)
    name = f"jr_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq_dsn(server), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq_dsn(server), autocommit=True) as admin:
            # FORCE: a daemon subprocess or a leaked pool must not keep the database alive.
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A fresh, empty PostgreSQL database for this test: this process's database, with
    every session still connected to it ended (a daemon or a pool left by an earlier test)
    and its schema dropped and made again."""
    import psycopg
    from sqlalchemy.engine import make_url

    with psycopg.connect(_libpq_dsn(make_url(pg_database)), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return pg_database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for this test."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


_URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "pg_url"}


@pytest.fixture(params=SUITE_ENGINES)
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database for this test, on each engine of ``SUITE_ENGINES``."""
    return str(request.getfixturevalue(_URL_FIXTURES[request.param]))


@pytest.fixture(params=ALL_ENGINES)
def any_db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database for this test, on every supported engine (SQLite and PostgreSQL)."""
    return str(request.getfixturevalue(_URL_FIXTURES[request.param]))


@pytest.fixture
def make_settings(db_url: str) -> Callable[..., Settings]:
    """Build Settings on this test's database: make_settings(topics={...}, runner={...})."""

    def make(topics: dict[str, Any] | None = None, **sections: Any) -> Settings:
        data: dict[str, Any] = {
            "database": {"url": db_url, **sections.pop("database", {})},
            "topics": topics if topics is not None else {"t": {"parallelism": 4}},
        }
        data.update(sections)
        return parse(data, source="test-config")

    return make


@pytest.fixture
def make_runner(make_settings: Callable[..., Settings]) -> Iterator[MakeRunner]:
    """Build migrated runners; their connections are closed after the test."""
    made: list[Runner] = []

    def make(topics: dict[str, Any] | None = None, **sections: Any) -> Runner:
        runner = Runner(make_settings(topics, **sections))
        runner.migrate()
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.store.close()


@pytest.fixture
def runner(make_runner: MakeRunner) -> Runner:
    """A migrated runner with one topic ``t`` (parallelism 4)."""
    return make_runner()


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child processes: the repo importable, no inherited config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable


@pytest.fixture(autouse=True)
def _fresh_worker_records() -> None:
    """Job ids restart with each test database: forget what test workers saw."""
    from tests import workers

    workers.seen.clear()
