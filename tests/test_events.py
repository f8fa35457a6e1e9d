"""Events: every transition, topic as sender, after the write, isolated receivers."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from jobrunner import Job, Runner, events
from jobrunner.testing import EventRecorder, running, wait_for
from tests.helpers import MakeRunner, get_job, job_of
from tests.workers import Add, AlwaysFails, CancelMe, SnoozeOnce

pytestmark = pytest.mark.anyio

FAST = {"t": {"parallelism": 2, "poll_interval": 0.05}}


def test_the_documented_signals_exist() -> None:
    names = {s.name for s in events.ALL_SIGNALS}
    assert names == {
        "job_inserted", "job_started", "job_completed", "job_failed", "job_discarded",
        "job_cancelled", "job_snoozed", "job_rescued", "topic_started", "topic_stopped",
        "topic_crashed", "topic_restarted", "runner_started", "runner_stopped",
    }
    for signal in events.ALL_SIGNALS:
        assert getattr(events, signal.name) is signal
        assert signal.__doc__


async def test_every_job_transition_is_broadcast_with_the_topic_as_sender(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    with EventRecorder() as recorder:
        async with running(runner):
            runner.enqueue_many([(Add, {"a": 1, "b": 2}), (AlwaysFails, {}), (CancelMe, {}), (SnoozeOnce, {})])
            await recorder.wait_count("job_completed", 2)
            await recorder.wait_for("job_discarded")
            await recorder.wait_for("job_cancelled")
    counts = recorder.counts()
    assert counts["job_inserted"] == 4
    assert counts["job_failed"] == 1 and counts["job_snoozed"] == 1
    job_events = [e for e in recorder.events if e.name.startswith("job_")]
    assert all(e.sender == "t" and isinstance(e.job, Job) for e in job_events)
    failed = recorder.of("job_failed")[0]
    assert failed.payload["will_retry"] is True and isinstance(failed.payload["error"], RuntimeError)
    assert job_of(failed).state == "retryable" and len(job_of(failed).errors) == 1
    assert recorder.of("job_snoozed")[0].payload["seconds"] == 0


async def test_events_are_sent_after_the_database_write(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    seen_in_db: list[str] = []

    def check(sender: str, job: Job, **payload: Any) -> None:
        seen_in_db.append(get_job(runner, job.id).state)

    events.job_completed.connect(check, sender="t", weak=False)
    try:
        async with running(runner):
            job = runner.enqueue(Add, {"a": 1, "b": 1})
            await wait_for(events.job_completed, lambda p: p["job"].id == job.id)
    finally:
        events.job_completed.disconnect(check)
    assert seen_in_db == ["completed"]


async def test_a_raising_subscriber_is_logged_and_harmless(
    make_runner: MakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(FAST)

    def explode(sender: str, **payload: Any) -> None:
        raise RuntimeError("subscriber bug")

    for signal in (events.job_started, events.job_completed):
        signal.connect(explode, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="jobrunner.events"):
            async with running(runner):
                job = runner.enqueue(Add, {"a": 1, "b": 1})
                await wait_for(events.job_completed, lambda p: p["job"].id == job.id)
    finally:
        for signal in (events.job_started, events.job_completed):
            signal.disconnect(explode)
    assert get_job(runner, job.id).state == "completed"
    assert any(getattr(r, "event", None) == "receiver_error" for r in caplog.records)


async def test_async_subscribers_are_awaited_without_blocking_workers(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    release = anyio.Event()
    finished: list[int] = []

    async def slow_report(sender: str, job: Job, **payload: Any) -> None:
        await release.wait()  # blocks until the second job has completed
        finished.append(job.id)

    events.job_completed.connect(slow_report, sender="t", weak=False)
    try:
        async with running(runner):
            first = runner.enqueue(Add, {"a": 1, "b": 1})
            await wait_for(events.job_completed, lambda p: p["job"].id == first.id)
            second = runner.enqueue(Add, {"a": 2, "b": 2})
            await wait_for(events.job_completed, lambda p: p["job"].id == second.id)
            assert finished == []
            release.set()
            with anyio.fail_after(5):
                while len(finished) < 2:
                    await anyio.wait_all_tasks_blocked()
    finally:
        events.job_completed.disconnect(slow_report)
    assert sorted(finished) == [first.id, second.id]


async def test_subscriber_can_filter_by_topic(make_runner: MakeRunner) -> None:
    runner = make_runner({"t": {"poll_interval": 0.05}, "other": {"poll_interval": 0.05}})
    for_t: list[str] = []

    def on_t(sender: str, **payload: Any) -> None:
        for_t.append(sender)

    events.job_inserted.connect(on_t, sender="other", weak=False)
    try:
        runner.enqueue(Add, {"a": 1, "b": 1})
    finally:
        events.job_inserted.disconnect(on_t)
    assert for_t == []


def test_every_event_is_one_log_line_with_job_id_and_topic(runner: Runner, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="jobrunner.events"):
        job = runner.enqueue(Add, {"a": 1, "b": 2})
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "job_inserted"]
    assert record.__dict__["job_id"] == job.id and record.__dict__["topic"] == "t"  # the log call's `extra`
    assert f"id={job.id}" in record.getMessage() and "topic=t" in record.getMessage()


async def test_log_jobs_false_leaves_out_the_lines_of_jobs_that_went_well(
    make_runner: MakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(FAST, runner={"log_jobs": False})
    caplog.set_level(logging.INFO, logger="jobrunner.events")
    with EventRecorder("t") as recorder:
        async with running(runner):
            ok = runner.enqueue(Add, {"a": 1, "b": 1})
            bad = runner.enqueue(AlwaysFails, {}, max_attempts=1)
            await recorder.wait_for("job_completed", lambda p: p["job"].id == ok.id)
            await recorder.wait_for("job_discarded", lambda p: p["job"].id == bad.id)
    logged = {getattr(r, "event", None) for r in caplog.records}
    assert "job_completed" not in logged  # the event was sent, its line left out
    assert {"job_discarded", "topic_started"} <= logged
    assert job_of(recorder.of("job_completed")[0]).state == "completed"
