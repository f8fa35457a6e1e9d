"""Transactional enqueue: ``runner.enqueue(..., connection=conn)`` inside the caller's transaction,
on a Core Connection and on an ORM Session, on both engines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from jobrunner import EnqueueError, Runner, events
from jobrunner.testing import EventRecorder, running, wait_for
from tests.helpers import MakeRunner, job_of
from tests.workers import Add, Noop

pytestmark = pytest.mark.anyio

#: A poll this long never fires during a test: a job that starts was woken.
NO_POLL = {"t": {"parallelism": 2, "poll_interval": 60}}


@pytest.fixture
def app_engine(db_url: str) -> Iterator[Engine]:
    """The web application's own engine on the runner's database."""
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


def test_committed_with_the_callers_transaction(runner: Runner, app_engine: Engine) -> None:
    with app_engine.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)"))
    with app_engine.begin() as conn:
        conn.execute(text("INSERT INTO orders (id, total) VALUES (1, 30)"))
        job = runner.enqueue(Add, {"a": 1, "b": 2}, connection=conn)
        assert runner.get_job(job.id) is None  # not visible outside the transaction yet
    assert runner.get_job(job.id) == job and job.state == "available"


def test_gone_when_the_callers_transaction_rolls_back(runner: Runner, app_engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="payment declined"), app_engine.begin() as conn:
        jobs = runner.enqueue_many([(Noop, {}), (Add, {"a": 1, "b": 1})], connection=conn)
        assert len(jobs) == 2
        raise RuntimeError("payment declined")
    assert runner.stats()["t"]["available"] == 0
    assert all(runner.get_job(job.id) is None for job in jobs)


def test_session_announces_only_after_commit(runner: Runner, app_engine: Engine) -> None:
    with EventRecorder() as recorder:
        with Session(app_engine) as session:
            job = runner.enqueue(Noop, {}, connection=session)
            assert recorder.of("job_inserted") == []
            session.commit()
        assert [job_of(e).id for e in recorder.of("job_inserted")] == [job.id]
        with Session(app_engine) as session:
            runner.enqueue(Noop, {}, connection=session)
            session.rollback()
            session.commit()  # a later commit of the same session announces nothing
        assert len(recorder.of("job_inserted")) == 1
    assert runner.stats()["t"]["available"] == 1


async def test_a_committed_job_starts_without_waiting_for_the_poll(make_runner: MakeRunner, app_engine: Engine) -> None:
    runner = make_runner(NO_POLL)
    async with running(runner):
        for use_session in (False, True):
            waiter = wait_for(events.job_completed, timeout=10)
            if use_session:
                with Session(app_engine) as session, session.begin():
                    job = runner.enqueue(Add, {"a": 2, "b": 3}, connection=session)
            else:
                with app_engine.begin() as conn:
                    job = runner.enqueue(Add, {"a": 2, "b": 3}, connection=conn)
            completed = await waiter
            assert job_of(completed).id == job.id and job_of(completed).result == 5


def test_connection_on_another_database_is_refused(runner: Runner, tmp_path: Any) -> None:
    other = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        with other.begin() as conn, pytest.raises(EnqueueError, match="not on the runner's database"):
            runner.enqueue(Noop, {}, connection=conn)
        with pytest.raises(EnqueueError, match="Connection or Session"):
            runner.enqueue(Noop, {}, connection="postgresql://elsewhere")
    finally:
        other.dispose()
    assert sum(runner.stats()["t"].values()) == 0


async def test_no_wake_up_reaches_a_producer_before_the_commit(make_runner: MakeRunner, app_engine: Engine) -> None:
    runner = make_runner(NO_POLL)
    with EventRecorder("t") as recorder:
        async with running(runner):
            with app_engine.begin() as conn:
                job = runner.enqueue(Noop, {}, connection=conn)
                # Give the producer every chance to act on a premature wake-up.
                runner.supervisor("t").producer.notify_external()
                await anyio.wait_all_tasks_blocked()
                assert recorder.of("job_started") == []
            await recorder.wait_for("job_completed", lambda p: p["job"].id == job.id)
