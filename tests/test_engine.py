"""The supervised engine end to end: a real runner on a real SQLite file, on both backends."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import jobrunner
from jobrunner import Job, Runner, Worker, events
from jobrunner.storage import NewJob
from jobrunner.testing import EventRecorder, drain, running, wait_for
from tests import workers
from tests.faults import fail_updates_of, heal
from tests.helpers import MakeRunner, get_job, job_of
from tests.workers import Add, AlwaysFails, CancelMe, FailTimes, Noop, Sleeper, SnoozeOnce, SyncAdd, SyncChained

pytestmark = pytest.mark.anyio

FAST = {"t": {"parallelism": 4, "poll_interval": 0.05}}


def completed(job: Job) -> Any:
    return wait_for(events.job_completed, lambda p: p["job"].id == job.id)


async def test_runs_a_job_and_stores_its_result(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    async with running(runner):
        job = runner.enqueue(Add, {"a": 20, "b": 22})
        event = await completed(job)
    stored = get_job(runner, job.id)
    assert stored.state == "completed" and stored.result == 42 and stored.attempt == 1
    assert stored.attempted_by == runner.node
    assert event.job.state == "completed" and event.payload["result"] == 42
    assert event.payload["duration"] >= 0
    assert event.name == "job_completed" and event.sender == "t"


async def test_sync_perform_runs_in_a_thread_under_the_runner(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    async with running(runner):
        job = runner.enqueue(SyncAdd, {"a": 1, "b": 2})
        await completed(job)
    result = get_job(runner, job.id).result
    assert result["sum"] == 3 and result["thread"] != "MainThread"


async def test_insert_in_process_starts_without_waiting_for_the_poll(make_runner: MakeRunner) -> None:
    runner = make_runner({"t": {"poll_interval": 30}})
    async with running(runner):
        # Listening before the insert: the job may complete before enqueue_async returns.
        done = wait_for(events.job_completed, lambda p: p["job"].worker == "tests.workers.Noop")
        with anyio.fail_after(5):  # a poll would take 30 s
            job = await runner.enqueue_async(Noop, {})
            assert job_of(await done).id == job.id


async def test_insert_from_another_process_is_seen_before_the_poll(
    make_runner: MakeRunner, subprocess_env: dict[str, str], tmp_path: Any
) -> None:
    runner = make_runner({"t": {"poll_interval": 30}})
    config = tmp_path / "cfg.toml"
    config.write_text(f'[database]\nurl = "{runner.settings.database.url}"\n[topics.t]\n')
    async with running(runner):
        waiter = wait_for(events.job_completed, lambda p: p["job"].worker == "tests.workers.Noop")
        out = await anyio.run_process(
            [sys.executable, "-m", "jobrunner", "--config", str(config), "enqueue", "tests.workers.Noop"],
            env=subprocess_env,
        )
        job_id = int(out.stdout.decode().strip())
        with anyio.fail_after(5):
            event = await waiter
    assert job_of(event).id == job_id


async def test_priority_order_then_fifo(make_runner: MakeRunner) -> None:
    runner = make_runner({"t": {"parallelism": 1, "poll_interval": 0.05}})
    jobs = runner.enqueue_many(
        [(Noop, {"n": n}, {"priority": p}) for n, p in enumerate([5, 1, 5, 0, 1, 9, 0])]
    )
    order: list[int] = []
    with EventRecorder("t") as recorder:
        async with running(runner):
            await recorder.wait_count("job_completed", len(jobs))
        order = [job_of(e).id for e in recorder.of("job_started")]
    expected = [j.id for j in sorted(jobs, key=lambda j: (j.priority, j.id))]
    assert order == expected


class Concurrency(Worker):
    topic = "t"
    active = 0
    peak = 0

    async def perform(self, job: Job) -> None:
        Concurrency.active += 1
        Concurrency.peak = max(Concurrency.peak, Concurrency.active)
        try:
            await anyio.sleep(0.01)
        finally:
            Concurrency.active -= 1


async def test_parallelism_is_never_exceeded(make_runner: MakeRunner) -> None:
    Concurrency.active = Concurrency.peak = 0
    runner = make_runner({"t": {"parallelism": 3, "poll_interval": 0.05}})
    runner.enqueue_many([(Concurrency, {}) for _ in range(30)])
    with EventRecorder("t") as recorder:
        async with running(runner):
            await recorder.wait_count("job_completed", 30)
    assert Concurrency.peak == 3


async def test_failures_retry_with_backoff_then_complete(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    with EventRecorder("t") as recorder:
        async with running(runner):
            job = runner.enqueue(FailTimes, {"fails": 2})
            await completed(job)
    stored = get_job(runner, job.id)
    assert stored.state == "completed" and stored.attempt == 3
    assert [e["attempt"] for e in stored.errors] == [1, 2]
    assert all(e["error"].startswith("ValueError: failing attempt") for e in stored.errors)
    failed = recorder.of("job_failed")
    assert [e.payload["will_retry"] for e in failed] == [True, True]
    assert job_of(failed[0]).state == "retryable"


async def test_exhausted_attempts_discard(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    async with running(runner):
        job = runner.enqueue(AlwaysFails, {})
        event = await wait_for(events.job_discarded, lambda p: p["job"].id == job.id)
    stored = get_job(runner, job.id)
    assert stored.state == "discarded" and stored.attempt == 2 and len(stored.errors) == 2
    assert stored.discarded_at is not None
    assert isinstance(event.payload["error"], RuntimeError)


async def test_scheduled_job_runs_when_due(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    async with running(runner):
        job = runner.enqueue(Noop, {}, delay=0.3)
        assert get_job(runner, job.id).state == "scheduled"
        await completed(job)
    stored = get_job(runner, job.id)
    assert stored.attempted_at is not None and stored.scheduled_at is not None
    assert stored.attempted_at >= stored.scheduled_at


async def test_snooze_and_cancel_under_the_runner(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    async with running(runner):
        snoozer = runner.enqueue(SnoozeOnce, {})
        cancelled = runner.enqueue(CancelMe, {})
        waiter = wait_for(events.job_cancelled, lambda p: p["job"].id == cancelled.id)
        await completed(snoozer)
        await waiter
    assert get_job(runner, snoozer.id).attempt == 1  # the snoozed run did not count
    stored = get_job(runner, cancelled.id)
    assert stored.state == "cancelled" and stored.cancelled_at is not None


async def test_unknown_worker_is_discarded_not_retried(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    row: dict[str, Any] = {
        "topic": "t", "worker": "tests.workers.Vanished", "args": "{}", "state": "available",
        "priority": 0, "attempt": 0, "max_attempts": 50, "errors": "[]",
        "inserted_at": 0.0, "scheduled_at": 0.0,
    }
    [job] = runner.store.jobs.insert([NewJob(**row)])
    async with running(runner):
        await wait_for(events.job_discarded, lambda p: p["job"].id == job.id)
    stored = get_job(runner, job.id)
    assert stored.state == "discarded" and stored.attempt == 1
    assert "no attribute 'Vanished'" in stored.errors[0]["error"]


class Bad(Worker):
    topic = "bad"

    async def perform(self, job: Job) -> None:
        return None


async def test_crashing_producer_stops_only_its_topic(make_runner: MakeRunner) -> None:
    runner = make_runner(
        {"bad": {"poll_interval": 0.05}, "t": {"poll_interval": 0.05}},
        runner={"max_restarts": 2},
    )
    fail_updates_of(runner.settings.database.url, "bad")
    runner.enqueue(Bad, {})
    with EventRecorder() as recorder:
        async with running(runner):
            stopped = await recorder.wait_for("topic_stopped", lambda p: True)
            assert stopped.sender == "bad" and "too many restarts" in stopped.payload["reason"]
            good = runner.enqueue(Noop, {})
            await completed(good)
    crashes = recorder.of("topic_crashed")
    assert [c.sender for c in crashes] == ["bad"] * 3
    assert "disk on fire" in str(crashes[0].payload["error"])
    assert len(recorder.of("topic_restarted")) == 2


async def test_crashed_producer_restarts_and_recovers(make_runner: MakeRunner) -> None:
    runner = make_runner({"bad": {"poll_interval": 0.05}})
    fail_updates_of(runner.settings.database.url, "bad")
    job = runner.enqueue(Bad, {})

    def heal_now(sender: str, **payload: Any) -> None:
        heal(runner.settings.database.url, "bad")

    events.topic_crashed.connect(heal_now, weak=False)
    try:
        async with running(runner):
            await wait_for(events.topic_restarted)
            await completed(job)
    finally:
        events.topic_crashed.disconnect(heal_now)
    assert get_job(runner, job.id).state == "completed"


async def test_graceful_stop_lets_short_jobs_finish(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST, runner={"shutdown_grace": 10})
    job = runner.enqueue(Sleeper, {"seconds": 0.2})
    async with running(runner):
        await wait_for(events.job_started, lambda p: p["job"].id == job.id)
    assert get_job(runner, job.id).state == "completed"


async def test_stop_after_grace_puts_running_jobs_back(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST, runner={"shutdown_grace": 0.1})
    job = runner.enqueue(Sleeper, {"seconds": 60})
    async with running(runner):
        await wait_for(events.job_started, lambda p: p["job"].id == job.id)
    stored = get_job(runner, job.id)
    assert stored.state == "available" and stored.attempt == 0 and stored.errors == []


async def test_cancelling_run_puts_running_jobs_back(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    job = runner.enqueue(Sleeper, {"seconds": 60})
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await wait_for(events.job_started, lambda p: p["job"].id == job.id)
        tg.cancel_scope.cancel()
    assert get_job(runner, job.id).state == "available"
    assert not runner.running


async def test_released_job_runs_again_on_the_next_run(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST, runner={"shutdown_grace": 0})
    job = runner.enqueue(Sleeper, {"seconds": 60})
    async with running(runner):
        await wait_for(events.job_started, lambda p: p["job"].id == job.id)
    quick = get_job(runner, job.id)
    assert quick.state == "available"
    workers.seen.pop(job.id, None)
    async with running(runner):
        event = await wait_for(events.job_started, lambda p: p["job"].id == job.id)
    assert job_of(event).attempt == 1


async def test_drain_counts_outcomes(runner: Runner) -> None:
    runner.enqueue_many([(Add, {"a": 1, "b": 1}), (CancelMe, {}), (AlwaysFails, {}), (FailTimes, {"fails": 1})])
    runner.enqueue(Noop, {}, delay=3600)
    # Retries of these workers are due at once, so draining runs them too.
    first = await drain(runner, "t")
    assert first == {"completed": 2, "failed": 2, "discarded": 1, "cancelled": 1, "snoozed": 0}
    assert runner.stats()["t"]["scheduled"] == 1
    rest = await drain(runner, "t", with_scheduled=True)
    assert rest == {"completed": 1, "failed": 0, "discarded": 0, "cancelled": 0, "snoozed": 0}
    assert runner.stats()["t"]["completed"] == 3


async def test_runner_events_and_ready_handshake(make_runner: MakeRunner) -> None:
    runner = make_runner({"a": {}, "b": {}})
    with EventRecorder() as recorder:
        async with running(runner):
            assert runner.running
            names = recorder.names()
            assert names.count("topic_started") == 2 and names[-1] == "runner_started"
    assert recorder.names()[-1] == "runner_stopped"
    assert sorted(e.sender for e in recorder.of("topic_stopped")) == ["a", "b"]
    assert recorder.of("runner_started")[0].sender == runner.node


@pytest.mark.parametrize("worker", [AlwaysFails, SyncChained], ids=["async", "thread"])
async def test_stored_tracebacks_start_in_the_workers_code(make_runner: MakeRunner, worker: type[Worker]) -> None:
    runner = make_runner(FAST)
    async with running(runner):
        job = runner.enqueue(worker, {}, max_attempts=1)
        await wait_for(events.job_discarded, lambda p: p["job"].id == job.id)
    text = get_job(runner, job.id).errors[0]["traceback"]
    frames = [line for line in text.splitlines() if line.startswith("  File ")]
    assert frames[0].startswith(f'  File "{workers.__file__}"') and frames[0].endswith(", in perform"), text
    assert jobrunner.__file__ is not None and anyio.__file__ is not None
    plumbing = [str(Path(file).parent) for file in (jobrunner.__file__, anyio.__file__)] + [threading.__file__]
    assert not [f for f in frames if any(f'"{place}' in f for place in plumbing)], text
    if worker is SyncChained:  # the cause is kept, with its own frames
        assert "KeyError: 'missing'" in text and "direct cause of the following exception" in text
        assert text.rstrip().endswith("RuntimeError: lookup failed")
