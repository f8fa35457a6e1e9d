"""The SQLite library jobrunner opens its files with (``[database] sqlite_library``):
which releases have the WAL-reset bug, which library ``auto`` picks, both libraries on one
file at once, the daemon's warning on an affected SQLite, and bad values."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from jobrunner import EnqueueError, Runner
from jobrunner.config import load, parse
from jobrunner.errors import ConfigError
from jobrunner.storage.sqlite_library import has_wal_reset_bug, sqlite_library
from tests.daemon_harness import DaemonProcess, run_cli
from tests.workers import Add

CONFIG = """
[database]
url = "sqlite:///{db}"
{library}

[runner]
modules = ["tests.workers"]
shutdown_grace = 1

[topics.t]
parallelism = 2
"""

try:
    import pysqlite3.dbapi2 as pysqlite3  # type: ignore[import-untyped]
except ImportError:  # only where pyproject's marker installs no pysqlite3 wheel
    pysqlite3 = None

needs_pysqlite3 = pytest.mark.skipif(pysqlite3 is None, reason="pysqlite3 has no wheel for this platform")


def _config(tmp_path: Path, library: str | None, name: str = "config.toml") -> Path:
    path = tmp_path / name
    line = f'sqlite_library = "{library}"' if library is not None else ""
    path.write_text(CONFIG.format(db=tmp_path / "jobs.db", library=line))
    return path


@pytest.mark.parametrize(("version", "affected"), [
    ((3, 6, 23), False),   # before WAL existed
    ((3, 7, 0), True),
    ((3, 40, 1), True),    # Debian 12's
    ((3, 44, 5), True), ((3, 44, 6), False),   # the 3.44 backport
    ((3, 45, 0), True),
    ((3, 50, 6), True), ((3, 50, 7), False),   # the 3.50 backport
    ((3, 51, 2), True), ((3, 51, 3), False),
    ((3, 53, 4), False), ((4, 0, 0), False),
])
def test_which_releases_have_the_wal_reset_bug(version: tuple[int, int, int], affected: bool) -> None:
    assert has_wal_reset_bug(version) is affected


def test_python_sqlite3_is_the_default() -> None:
    assert parse({}, source="<test>").database.sqlite_library == "sqlite3"
    assert sqlite_library().module is sqlite3
    assert sqlite_library().describe() == f"SQLite {sqlite3.sqlite_version} (sqlite3)"


def test_a_bad_library_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sqlite_library.*one of sqlite3, pysqlite3, got 'sqlite4'"):
        load(_config(tmp_path, "sqlite4"))
    path = tmp_path / "typed.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "jobs.db"}"\nsqlite_library = 3\n')
    with pytest.raises(ConfigError, match="sqlite_library"):
        load(path)


@needs_pysqlite3
def test_processes_on_either_library_share_one_file(tmp_path: Path) -> None:
    """Jobs enqueued through Python's sqlite3 run in a daemon on pysqlite3 and the other
    way round: one file format, one locking protocol across processes. (This process
    opens the file through sqlite3 only: one library per process.)"""
    old, new = _config(tmp_path, "sqlite3", "old.toml"), _config(tmp_path, "pysqlite3", "new.toml")
    runner = Runner.from_config(old)
    try:
        for enqueued_by, drained_by in (("this process (sqlite3)", new), ("the CLI (pysqlite3)", old)):
            if drained_by is new:
                ids = [job.id for job in runner.enqueue_many([(Add, {"a": i, "b": 1}, {}) for i in range(20)])]
            else:
                ids = [int(run_cli(new, "enqueue", "tests.workers.Add", "--args", json.dumps({"a": i, "b": 1})).stdout)
                       for i in range(3)]
            daemon = DaemonProcess(drained_by, log_path=tmp_path / "daemon.log")
            daemon.start()
            try:
                done = [runner.wait(i, timeout=60) for i in ids]
            finally:
                daemon.terminate()
                assert daemon.wait() == 0, daemon.output_tail()
            assert [(job.state, job.result) for job in done] == [("completed", i + 1) for i in range(len(ids))], \
                enqueued_by
    finally:
        runner.store.close()


def test_a_daemon_on_an_affected_sqlite_warns_once(tmp_path: Path) -> None:
    daemon = DaemonProcess(_config(tmp_path, None), log_path=tmp_path / "daemon.log")
    daemon.start()
    daemon.terminate()
    assert daemon.wait() == 0, daemon.output_tail()
    warnings = [line for line in daemon.output().splitlines() if "sqlite_wal_reset_bug" in line]
    if has_wal_reset_bug(sqlite3.sqlite_version_info):
        assert len(warnings) == 1, daemon.output()
        assert f"SQLite {sqlite3.sqlite_version} (sqlite3)" in warnings[0]
        assert "WARNING" in warnings[0] and "https://sqlite.org/wal.html#walresetbug" in warnings[0]
        assert 'sqlite_library = "pysqlite3"' in warnings[0]
    else:
        assert warnings == []


@needs_pysqlite3
def test_a_daemon_on_the_bundled_sqlite_does_not_warn(tmp_path: Path) -> None:
    daemon = DaemonProcess(_config(tmp_path, "pysqlite3"), log_path=tmp_path / "daemon.log")
    daemon.start()
    daemon.terminate()
    assert daemon.wait() == 0, daemon.output_tail()
    assert "sqlite_wal_reset_bug" not in daemon.output()


def test_asking_for_pysqlite3_without_it_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobrunner.storage import sqlite_library as module

    monkeypatch.setattr(module, "_pysqlite3", lambda: None)
    with pytest.raises(ConfigError, match=r"pysqlite3 package is not installed \(pip install \"jobrunner\[sqlite\]\""):
        module.sqlite_library("pysqlite3")


@needs_pysqlite3
def test_an_enqueue_in_a_transaction_of_another_sqlite_library_is_refused(tmp_path: Path) -> None:
    """Two SQLite libraries on one file in one process can corrupt it, so a caller's
    connection must use jobrunner's library; the error says how."""
    runner = Runner.from_config(_config(tmp_path, "pysqlite3"))
    url = runner.settings.database.url
    other = create_engine(url)  # Python's sqlite3
    same = create_engine(url, module=pysqlite3)
    try:
        runner.migrate()
        with other.begin() as conn, pytest.raises(EnqueueError, match=r"module=pysqlite3\.dbapi2"):
            runner.enqueue(Add, {"a": 1, "b": 2}, connection=conn)
        with same.begin() as conn:
            job = runner.enqueue(Add, {"a": 1, "b": 2}, connection=conn)
        assert runner.get_job(job.id) is not None
        assert [j.id for j in runner.list_jobs()] == [job.id]  # the refused one wrote nothing
    finally:
        other.dispose()
        same.dispose()
        runner.store.close()
