"""``copy --to`` / ``--from``: every job with its state, attempts, errors, results and
timestamps, plus pauses, between SQLite and PostgreSQL; a non-empty target refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jobrunner import CopyError, Runner
from jobrunner.config import parse
from jobrunner.storage.copying import copy_database
from tests.daemon_harness import run_cli
from tests.workers import Add, AlwaysFails


def _runner(url: str) -> Runner:
    runner = Runner(parse({"database": {"url": url}, "topics": {"t": {}}}, source="test"))
    runner.migrate()
    return runner


def test_round_trip_keeps_every_job_and_pause(sqlite_url: str, pg_url: str, tmp_path: Path) -> None:
    source = _runner(sqlite_url)
    try:
        done = source.enqueue(Add, {"a": 1, "b": 2})
        failed = source.enqueue(AlwaysFails, {}, max_attempts=1)
        later = source.enqueue(Add, {"a": 5, "b": 5}, delay=3600, priority=7)
        assert done.inserted_at is not None and failed.inserted_at is not None
        with source.store.db.engine.begin() as conn:  # finished states, written as the engine would
            from sqlalchemy import update

            from jobrunner.storage.schema import jobs
            conn.execute(update(jobs).where(jobs.c.id == done.id).values(
                state="completed", attempt=1, result="3", completed_at=done.inserted_at + 1, attempted_by="n1"))
            conn.execute(update(jobs).where(jobs.c.id == failed.id).values(
                state="discarded", attempt=1, discarded_at=failed.inserted_at + 1,
                errors='[{"attempt": 1, "at": "2026-01-01T00:00:00+00:00", "error": "boom", "traceback": null}]'))
        source.pause("t")
        before = {job.id: job for job in source.store.jobs.listing(limit=10)}

        report = copy_database(sqlite_url, pg_url)
        assert (report.jobs, report.topics, report.next_id) == (3, 1, later.id + 1)
        target = _runner(pg_url)
        try:
            assert {job.id: job for job in target.store.jobs.listing(limit=10)} == before
            assert target.store.operator.paused_topics() == {"t"}
            assert target.enqueue(Add, {"a": 0, "b": 0}).id == later.id + 1  # the sequence moved on
        finally:
            target.store.close()

        with pytest.raises(CopyError, match="not empty"):
            copy_database(pg_url, sqlite_url)
        assert {job.id: job for job in source.store.jobs.listing(limit=10)} == before  # nothing changed
        back = copy_database(pg_url, sqlite_url, replace=True)
        assert back.jobs == 4
        assert source.enqueue(Add, {"a": 1, "b": 1}).id == later.id + 2
    finally:
        source.store.close()


def test_cli_copy_needs_one_direction_and_refuses_a_full_target(
    sqlite_url: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[database]\nurl = "{sqlite_url}"\n\n[runner]\nmodules = ["tests.workers"]\n\n[topics.t]\n')
    other = f"sqlite:///{tmp_path / 'other.db'}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(cfg, *args, env=subprocess_env)

    assert cli("enqueue", "tests.workers.Noop").returncode == 0
    assert cli("copy").returncode == 2
    first = cli("copy", "--to", other)
    assert first.returncode == 0 and first.stdout.startswith("copied 1 job(s)"), first.stderr
    again = cli("copy", "--to", other)
    assert again.returncode == 1 and "--force" in again.stderr
    assert cli("copy", "--to", other, "--force").returncode == 0
    assert cli("copy", "--to", sqlite_url).returncode == 1  # itself
    nodes = cli("nodes", "--json")
    assert nodes.returncode == 0 and nodes.stdout.strip() == '{"nodes": []}'
