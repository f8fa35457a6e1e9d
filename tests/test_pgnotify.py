"""LISTEN/NOTIFY on PostgreSQL: inserts and controls from another process wake this one at
once, with the poll interval far away; a lost listening connection heals and loses nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from sqlalchemy import create_engine, text

from jobrunner import Runner, events
from jobrunner.config import DatabaseSettings
from jobrunner.storage import Storage
from jobrunner.storage.notices import CONTROL, INSERTED, parse, payload
from jobrunner.testing import running, wait_for
from tests.dashboard_workers import Quick
from tests.helpers import get_job, job_of
from tests.workers import Add, Sleeper

pytestmark = pytest.mark.anyio

#: A poll this long never fires during a test: whatever starts was woken by a notice.
NO_POLL = {"t": {"parallelism": 2, "poll_interval": 60}}


@pytest.fixture
def pg_runner(pg_url: str) -> Iterator[Runner]:
    from jobrunner.config import parse as parse_config

    runner = Runner(parse_config({"database": {"url": pg_url}, "topics": NO_POLL}, source="test"))
    runner.migrate()
    yield runner
    runner.store.close()


@pytest.fixture
def elsewhere(pg_url: str) -> Iterator[Runner]:
    """Another node's runner on the same database (what another machine has)."""
    from jobrunner.config import parse as parse_config

    runner = Runner(parse_config({"database": {"url": pg_url}, "topics": NO_POLL}, source="test"))
    yield runner
    runner.store.close()


def test_notice_payloads_round_trip() -> None:
    assert parse(payload(INSERTED, "a:b")) == (INSERTED, "a:b")
    assert parse(payload(CONTROL, "t")) == (CONTROL, "t")
    assert parse("something else") == (None, None)


def _listener_pids(url: str) -> set[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.scalars(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN jobrunner'"
            )))
    finally:
        engine.dispose()


async def _until(what: str, predicate: Any, timeout: float = 10) -> Any:
    with anyio.fail_after(timeout):
        while not (value := predicate()):
            await anyio.sleep(0.02)
    return value


async def test_insert_and_cancel_elsewhere_reach_this_node_at_once(pg_runner: Runner, elsewhere: Runner) -> None:
    async with running(pg_runner):
        waiter = wait_for(events.job_completed, timeout=10)
        job = elsewhere.enqueue(Add, {"a": 1, "b": 2})
        assert job_of(await waiter).id == job.id
        sleeper = elsewhere.enqueue(Sleeper, {"seconds": 60})
        await wait_for(events.job_started, lambda p: p["job"].id == sleeper.id, timeout=10)
        producer = pg_runner.supervisor("t").producer
        started = time.monotonic()
        elsewhere.cancel_job(sleeper.id)  # sends job_cancelled here too: watch this node's slot
        await _until("the cancel on this node", lambda: producer.running == 0)
        assert time.monotonic() - started < 10  # far below the 60 s poll


async def test_pause_and_resume_elsewhere_reach_this_node(pg_runner: Runner, elsewhere: Runner) -> None:
    async with running(pg_runner):
        elsewhere.pause("t")
        producer = pg_runner.supervisor("t").producer
        await _until("the pause", lambda: producer.paused)
        job = elsewhere.enqueue(Add, {"a": 1, "b": 1})
        waiter = wait_for(events.job_completed, lambda p: p["job"].id == job.id, timeout=10)
        elsewhere.resume("t")
        await waiter


async def test_dependents_released_elsewhere_wake_this_node(pg_runner: Runner, pg_url: str) -> None:
    """A job finished on another node releases its dependent: the node that serves the
    dependent's topic is told at that commit, long before its poll."""
    from jobrunner.config import parse as parse_config

    upstream = Runner(parse_config({"database": {"url": pg_url},
                                    "topics": {"web": {"parallelism": 1, "poll_interval": 60}}}, source="test"))
    try:
        async with running(pg_runner):
            first = upstream.enqueue(Quick, {})  # topic "web": only `upstream` serves it
            dependent = pg_runner.enqueue(Add, {"a": 2, "b": 2}, depends_on=[first.id])
            assert dependent.state == "blocked" and dependent.topic == "t"
            waiter = wait_for(events.job_completed, lambda p: p["job"].id == dependent.id, timeout=10)
            async with running(upstream):
                started = time.monotonic()
                await waiter
                assert time.monotonic() - started < 10  # far below the 60 s poll
                assert get_job(pg_runner, dependent.id).attempted_by == pg_runner.node
    finally:
        upstream.store.close()


async def test_lost_listening_connection_reconnects_and_loses_nothing(
    pg_runner: Runner, elsewhere: Runner, pg_url: str
) -> None:
    async with running(pg_runner):
        [first] = await _until("the listener", lambda: _listener_pids(pg_url))
        engine = create_engine(pg_url)
        try:
            with engine.connect() as conn:
                assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        finally:
            engine.dispose()
        # Inserted while the listener may be down: the wake-up after reconnecting finds it.
        waiter = wait_for(events.job_completed, timeout=15)
        job = elsewhere.enqueue(Add, {"a": 2, "b": 2})
        assert job_of(await waiter).id == job.id
        pids = await _until("a new listener", lambda: _listener_pids(pg_url) - {first})
        assert first not in pids
        waiter = wait_for(events.job_completed, timeout=10)
        again = elsewhere.enqueue(Add, {"a": 3, "b": 3})
        assert job_of(await waiter).id == again.id


def test_sqlite_has_no_listener(tmp_path: Any) -> None:
    store = Storage(DatabaseSettings(url=f"sqlite:///{tmp_path / 'jobs.db'}"))
    try:
        notices = store.notices
        assert notices.notification_listener(lambda kind, topic: None) is None and not notices.notifies
        notices.announce(INSERTED, ["t"])  # a no-op, not an error
    finally:
        store.close()
