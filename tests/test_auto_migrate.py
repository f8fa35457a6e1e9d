"""A Runner brings a new or older database up to date by itself, once, before its first
use of it; ``[database] auto_migrate = false`` turns that into an error naming the
``migrate`` command. Real SQLite files, real processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobrunner import Runner
from jobrunner.config import ConfigError, parse
from jobrunner.errors import MigrationError
from jobrunner.migrate import available_migrations
from jobrunner.testing import running
from tests.daemon_harness import run_cli
from tests.helpers import get_job
from tests.workers import Add

ALL_VERSIONS = [m.version for m in available_migrations("sqlite")]

CONFIG = """
[database]
url = "sqlite:///{db}"
{extra}

[runner]
modules = ["tests.workers"]

[topics.t]
parallelism = 2
"""


def write_config(tmp: Path, extra: str = "") -> Path:
    path = tmp / "config.toml"
    path.write_text(CONFIG.format(db=tmp / "jobs.db", extra=extra))
    return path


def versions(db: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM jobrunner_schema ORDER BY version")]


def tables(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


#: The ``opened`` fixture: ``opened(runner)`` is ``runner``, closed after the test.
Opened = Callable[[Runner], Runner]


@pytest.fixture
def opened() -> Iterator[Opened]:
    """Runners made by the test; their connections are closed after it."""
    made: list[Runner] = []

    def track(runner: Runner) -> Runner:
        made.append(runner)
        return runner

    yield track
    for runner in made:
        runner.store.close()


def test_the_readme_embedding_example_works_on_a_new_database(tmp_path: Path, opened: Opened) -> None:
    runner = opened(Runner.from_config(write_config(tmp_path)))
    job = runner.enqueue(Add, {"a": 1, "b": 2})
    assert get_job(runner, job.id).state == "available"
    assert versions(tmp_path / "jobs.db") == ALL_VERSIONS


@pytest.mark.parametrize("first_use", ["stats", "get_job", "enqueue_many", "pause"])
def test_every_first_use_migrates(tmp_path: Path, opened: Opened, first_use: str) -> None:
    runner = opened(Runner.from_config(write_config(tmp_path)))
    uses: dict[str, Callable[[], object]] = {
        "stats": lambda: runner.stats(),
        "get_job": lambda: runner.get_job(1),
        "enqueue_many": lambda: runner.enqueue_many([(Add, {"a": 1, "b": 1})]),
        "pause": lambda: runner.pause("t"),
    }
    uses[first_use]()
    assert versions(tmp_path / "jobs.db") == ALL_VERSIONS


def test_an_older_schema_is_brought_up_to_date(tmp_path: Path, opened: Opened) -> None:
    db = tmp_path / "jobs.db"
    first = available_migrations("sqlite")[0]
    with contextlib.closing(sqlite3.connect(db)) as conn:  # a database made by an older release
        for statement in first.statements():
            conn.execute(statement)
        conn.execute("CREATE TABLE jobrunner_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     "applied_at FLOAT NOT NULL)")
        conn.execute("INSERT INTO jobrunner_schema VALUES (?, ?, 0)", (first.version, first.name))
        conn.commit()
    runner = opened(Runner.from_config(write_config(tmp_path)))
    runner.enqueue(Add, {"a": 1, "b": 2})
    assert versions(db) == ALL_VERSIONS
    runner.pause("t")  # a table of a later migration


@pytest.mark.anyio
async def test_run_migrates_too(tmp_path: Path, opened: Opened) -> None:
    runner = opened(Runner.from_config(write_config(tmp_path)))
    async with running(runner):
        pass
    assert versions(tmp_path / "jobs.db") == ALL_VERSIONS


def test_the_schema_is_checked_once_per_runner(tmp_path: Path, opened: Opened) -> None:
    runner = opened(Runner.from_config(write_config(tmp_path)))
    statements: list[str] = []
    sa.event.listen(runner.store.db.engine, "before_cursor_execute",
                    lambda conn, cursor, sql, *rest: statements.append(sql))
    runner.enqueue(Add, {"a": 1, "b": 2})
    assert any("jobrunner_schema" in sql for sql in statements)
    statements.clear()
    for _ in range(3):
        runner.enqueue(Add, {"a": 1, "b": 2})
        runner.stats()
    assert not [sql for sql in statements if "jobrunner_schema" in sql or "sqlite_master" in sql]


def test_auto_migrate_false_refuses_with_the_command_to_run(
    tmp_path: Path, opened: Opened, subprocess_env: dict[str, str]
) -> None:
    cfg = write_config(tmp_path, "auto_migrate = false")
    db = tmp_path / "jobs.db"
    runner = opened(Runner.from_config(cfg))
    with pytest.raises(MigrationError, match=r"python -m jobrunner migrate") as caught:
        runner.enqueue(Add, {"a": 1, "b": 2})
    assert "0001_create_jobs" in str(caught.value) and "auto_migrate" in str(caught.value)
    assert "jobrunner_jobs" not in tables(db)  # nothing was created

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(cfg, *args, env=subprocess_env)

    refused = cli("enqueue", "tests.workers.Add", "--args", '{"a": 1, "b": 2}')
    assert refused.returncode == 1 and "python -m jobrunner migrate" in refused.stderr
    assert refused.stdout == "" and "jobrunner_jobs" not in tables(db)
    assert cli("migrate").returncode == 0
    assert int(cli("enqueue", "tests.workers.Add", "--args", '{"a": 1, "b": 2}').stdout) == 1
    assert runner.enqueue(Add, {"a": 1, "b": 2}).id == 2  # checked again: now up to date


def test_auto_migrate_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[database\].*'auto_migrate' must be a boolean"):
        parse({"database": {"url": f"sqlite:///{tmp_path / 'x.db'}", "auto_migrate": "no"}}, source="cfg")
    assert parse({}).database.auto_migrate is True


def _first_use_in_child(cfg: str, barrier: Any, results: Any) -> None:
    """Child process: wait for every sibling, then enqueue on the fresh file at once."""
    try:
        runner = Runner.from_config(cfg)
        barrier.wait(timeout=30)
        ids = [job.id for job in runner.enqueue_many([(Add, {"a": i, "b": i}) for i in range(5)])]
        runner.store.close()
        results.put(("ok", ids))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def test_processes_first_using_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path))
    ctx = multiprocessing.get_context("spawn")
    count = 3
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    procs = [ctx.Process(target=_first_use_in_child, args=(cfg, barrier, results)) for _ in range(count)]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=60) for _ in range(count)]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    results.close()
    results.join_thread()
    assert [kind for kind, _ in outcomes] == ["ok"] * count, outcomes
    ids = sorted(i for _, batch in outcomes for i in batch)
    assert ids == list(range(1, 5 * count + 1))
    assert versions(tmp_path / "jobs.db") == ALL_VERSIONS


def test_threads_first_using_one_runner_at_once_migrate_once(tmp_path: Path, opened: Opened) -> None:
    runner = opened(Runner.from_config(write_config(tmp_path)))
    count = 6
    barrier = threading.Barrier(count)
    results: queue.Queue[Any] = queue.Queue()

    def first_use() -> None:
        try:
            barrier.wait(timeout=30)
            results.put(runner.enqueue(Add, {"a": 1, "b": 2}).id)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            results.put(exc)

    threads = [threading.Thread(target=first_use) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    got = [results.get_nowait() for _ in range(count)]
    assert sorted(got) == list(range(1, count + 1)), got
    assert versions(tmp_path / "jobs.db") == ALL_VERSIONS
