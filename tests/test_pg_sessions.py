"""On PostgreSQL every session of a runner is named ``jobrunner <node id>``
(``application_name``), so an operator can tell nodes apart in ``pg_stat_activity``; a
name in the URL or in ``PGAPPNAME`` wins."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from jobrunner import Runner
from jobrunner.config import parse
from jobrunner.storage.database import APPLICATION_NAME_LIMIT
from jobrunner.storage.listener import libpq_url


def _session_name(runner: Runner) -> str:
    with runner.store.db.engine.connect() as conn:
        return str(conn.execute(text("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"))
                   .scalar_one())


def test_a_runners_sessions_carry_its_node_id(pg_url: str) -> None:
    runner = Runner(parse({"database": {"url": pg_url}, "runner": {"node": "web-1:4242:abcdef"}}))
    try:
        assert _session_name(runner) == "jobrunner web-1:4242:abcdef"
        listener_url = libpq_url(runner.store.db.engine.url, runner.store.db.application_name)
        assert "application_name=jobrunner+web-1%3A4242%3Aabcdef" in listener_url
    finally:
        runner.store.close()


def test_a_long_node_id_is_cut_to_what_postgresql_keeps(pg_url: str) -> None:
    node = "n" * 100
    runner = Runner(parse({"database": {"url": pg_url}, "runner": {"node": node}}))
    try:
        assert _session_name(runner) == f"jobrunner {node}"[:APPLICATION_NAME_LIMIT]
    finally:
        runner.store.close()


def test_the_urls_application_name_wins(pg_url: str) -> None:
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}application_name=billing"
    runner = Runner(parse({"database": {"url": url}}))
    try:
        assert _session_name(runner) == "billing"
        assert runner.store.db.application_name is None
        assert "application_name=billing" in libpq_url(runner.store.db.engine.url, runner.store.db.application_name)
    finally:
        runner.store.close()


def test_pgappname_wins(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGAPPNAME", "reports")
    runner = Runner(parse({"database": {"url": pg_url}}))
    try:
        assert _session_name(runner) == "reports" and runner.store.db.application_name is None
    finally:
        runner.store.close()
