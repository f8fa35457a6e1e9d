"""Enqueueing: one or many, sync or async, options, validation that stores nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrunner import ConfigError, EnqueueError, Job, Runner, UnknownWorkerError, Worker
from jobrunner.testing import EventRecorder, all_enqueued, assert_enqueued, refute_enqueued
from tests.helpers import job_of
from tests.workers import Add, FailTimes, Noop


class Elsewhere(Worker):
    topic = "not-configured"

    async def perform(self, job: Job) -> Any:  # pragma: no cover - never runs
        return None


class NoTopic(Worker):
    async def perform(self, job: Job) -> Any:  # pragma: no cover - never runs
        return None


def test_enqueue_stores_a_job_with_defaults(runner: Runner) -> None:
    job = runner.enqueue(Add, {"a": 1, "b": 2})
    stored = runner.get_job(job.id)
    assert stored == job
    assert job.state == "available"
    assert job.topic == "t"
    assert job.worker == "tests.workers.Add"
    assert job.args == {"a": 1, "b": 2}
    assert job.priority == 2  # the topic's default
    assert job.attempt == 0 and job.max_attempts == 50
    assert job.errors == [] and job.result is None
    assert job.inserted_at is not None
    assert abs(job.inserted_at - time.time()) < 60


def test_options_override_worker_and_topic_defaults(runner: Runner) -> None:
    job = runner.enqueue(Add, {"a": 1, "b": 1}, priority=0, max_attempts=7, delay=60)
    assert (job.priority, job.max_attempts, job.state) == (0, 7, "scheduled")
    assert job.inserted_at is not None
    assert job.scheduled_at == pytest.approx(job.inserted_at + 60)
    assert FailTimes.max_attempts == runner.enqueue(FailTimes, {}).max_attempts


def test_scheduled_at_accepts_datetimes_and_past_times_are_available(runner: Runner) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    job = runner.enqueue(Noop, {}, scheduled_at=later)
    assert job.state == "scheduled"
    assert job.scheduled_at == pytest.approx(later.timestamp())
    past = runner.enqueue(Noop, {}, scheduled_at=time.time() - 10)
    assert past.state == "available"


def test_enqueue_by_import_path(runner: Runner) -> None:
    job = runner.enqueue("tests.workers.Noop", {"x": 1})
    assert job.worker == "tests.workers.Noop"


def test_enqueue_many_is_one_transaction_in_order(runner: Runner) -> None:
    jobs = runner.enqueue_many([(Add, {"a": i, "b": i}) for i in range(100)] + [(Noop, {}, {"priority": 0})])
    assert [j.args for j in jobs[:100]] == [{"a": i, "b": i} for i in range(100)]
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    assert jobs[-1].priority == 0
    assert len(runner.list_jobs(limit=1_000_000)) == 101
    assert runner.get_job(jobs[50].id) == jobs[50]


@pytest.mark.parametrize(
    "bad",
    [
        {"a": object()},
        {"a": float("nan")},
        {"a": {1, 2}},
    ],
)
def test_non_json_args_raise_and_store_nothing(runner: Runner, bad: dict[str, Any]) -> None:
    with pytest.raises(EnqueueError, match=r"tests\.workers\.Add.*not JSON"):
        runner.enqueue(Add, bad)
    with pytest.raises(EnqueueError):
        runner.enqueue_many([(Add, {"a": 1, "b": 2}), (Add, bad)])
    assert len(runner.list_jobs(limit=1_000_000)) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 10}, "priority"),
        ({"priority": "urgent"}, "priority"),
        ({"priority": "HIGH"}, r"between 0 and 9 or one of critical \(0\)"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"delay": -1}, "delay"),
        ({"delay": 1, "scheduled_at": 5.0}, "either delay or scheduled_at"),
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
    ],
)
def test_bad_options_raise_and_store_nothing(runner: Runner, options: dict[str, Any], message: str) -> None:
    with pytest.raises(EnqueueError, match=message):
        runner.enqueue(Noop, {}, **options)
    assert len(runner.list_jobs(limit=1_000_000)) == 0


def test_unknown_worker_topic_or_class(runner: Runner) -> None:
    with pytest.raises(ConfigError, match="topic 'not-configured' is not configured"):
        runner.enqueue(Elsewhere, {})
    with pytest.raises(EnqueueError, match="has no topic"):
        runner.enqueue(NoTopic, {})
    with pytest.raises(UnknownWorkerError, match="no attribute"):
        runner.enqueue("tests.workers.DoesNotExist", {})
    with pytest.raises(UnknownWorkerError, match=r"importing|no module"):
        runner.enqueue("nowhere_pkg.Mod.Cls", {})
    with pytest.raises(EnqueueError, match="Worker subclass"):
        runner.enqueue(dict, {})  # type: ignore[arg-type]
    assert len(runner.list_jobs(limit=1_000_000)) == 0


@pytest.mark.anyio
async def test_async_enqueue_and_inserted_events(runner: Runner) -> None:
    with EventRecorder() as recorder:
        job = await runner.enqueue_async(Add, {"a": 2, "b": 3}, priority=1)
        many = await runner.enqueue_many_async([(Noop, {"n": n}) for n in range(3)])
    assert job.priority == 1 and len(many) == 3
    inserted = recorder.of("job_inserted")
    assert [job_of(e).id for e in inserted] == [job.id, *(j.id for j in many)]
    assert all(e.sender == "t" for e in inserted)


def test_assert_enqueued_helpers(runner: Runner) -> None:
    runner.enqueue(Add, {"a": 1, "b": 2})
    runner.enqueue(Noop, {"kind": "x"}, delay=30)
    assert assert_enqueued(runner, worker=Add, args={"a": 1}).args == {"a": 1, "b": 2}
    assert assert_enqueued(runner, worker="tests.workers.Noop", state="scheduled")
    assert len(all_enqueued(runner, topic="t")) == 2
    refute_enqueued(runner, worker=Add, args={"a": 9})
    with pytest.raises(AssertionError, match="no job enqueued"):
        assert_enqueued(runner, worker=Add, args={"a": 9})
    with pytest.raises(AssertionError, match="expected no job"):
        refute_enqueued(runner, worker=Noop)
