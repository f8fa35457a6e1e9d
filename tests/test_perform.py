"""The outcome path of one job, through jobrunner.testing.perform_job (no database)."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import anyio
import pytest

from jobrunner import Cancel, EnqueueError, Job, Snooze, Worker
from jobrunner.config import BackoffSettings, TopicSettings
from jobrunner.executor import classify, classify_error, encode_result
from jobrunner.testing import perform_job

pytestmark = pytest.mark.anyio


class Sum(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        return job.args["a"] + job.args["b"]


class ThreadSum(Worker):
    topic = "t"

    def perform(self, job: Job) -> Any:
        return {"sum": job.args["a"] + job.args["b"], "main": threading.current_thread() is threading.main_thread()}


class Boom(Worker):
    topic = "t"
    max_attempts = 3
    calls: ClassVar[list[tuple[int, str]]] = []

    async def perform(self, job: Job) -> Any:
        raise ValueError("boom")

    async def after_error(self, job: Job, error: BaseException) -> None:
        Boom.calls.append((job.attempt, str(error)))


class BadHook(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        raise KeyError("missing")

    # A plain def hook works too (Worker.after_error is typed async).
    def after_error(self, job: Job, error: BaseException) -> None:  # type: ignore[override]
        raise RuntimeError("hook broke")


class Slow(Worker):
    topic = "t"
    timeout = 0.05

    async def perform(self, job: Job) -> Any:
        await anyio.sleep(30)


class Exits(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        raise SystemExit(3)


class Interrupts(Worker):
    topic = "t"

    def perform(self, job: Job) -> Any:
        raise KeyboardInterrupt


class NotJson(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        return object()


class Sleepy(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        return Snooze(30)


class Stop(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        return Cancel("no longer wanted")


class OwnBackoff(Worker):
    topic = "t"

    def backoff(self, job: Job) -> float:
        return 123.0

    async def perform(self, job: Job) -> Any:
        raise ValueError("x")


async def test_return_value_completes_and_is_the_result() -> None:
    outcome = await perform_job(Sum, {"a": 1, "b": 2})
    assert outcome.state == "completed"
    assert outcome.result == 3
    assert outcome.job.result == 3


async def test_plain_def_perform_runs_in_a_worker_thread() -> None:
    outcome = await perform_job(ThreadSum, {"a": 2, "b": 5})
    assert outcome.state == "completed"
    assert outcome.result == {"sum": 7, "main": False}


async def test_raise_makes_retryable_records_error_and_calls_after_error() -> None:
    Boom.calls.clear()
    outcome = await perform_job(Boom, {})
    assert outcome.state == "retryable"
    assert isinstance(outcome.error, ValueError)
    [entry] = outcome.job.errors
    assert entry["attempt"] == 1
    assert entry["error"] == "ValueError: boom"
    assert "Traceback" in entry["traceback"] and "boom" in entry["traceback"]
    assert entry["at"].endswith("+00:00")
    assert Boom.calls == [(1, "boom")]
    assert outcome.job.scheduled_at is not None and outcome.job.attempted_at is not None
    assert outcome.job.scheduled_at > outcome.job.attempted_at


async def test_last_attempt_discards() -> None:
    outcome = await perform_job(Boom, {}, attempt=3)
    assert outcome.state == "discarded"
    assert outcome.job.discarded_at is not None


async def test_after_error_that_raises_is_recorded_not_fatal() -> None:
    outcome = await perform_job(BadHook, {})
    assert outcome.state == "retryable"
    [entry] = outcome.job.errors
    assert entry["error"] == "KeyError: 'missing'"
    assert "after_error raised RuntimeError: hook broke" in entry["note"]


async def test_timeout_fails_the_attempt() -> None:
    outcome = await perform_job(Slow, {})
    assert outcome.state == "retryable"
    assert isinstance(outcome.error, TimeoutError)
    assert "timeout of 0.05s" in outcome.job.errors[0]["error"]


@pytest.mark.parametrize("worker", [Exits, Interrupts])
async def test_system_exit_and_keyboard_interrupt_are_job_failures(worker: type[Worker]) -> None:
    outcome = await perform_job(worker, {})
    assert outcome.state == "retryable"
    assert outcome.job.errors[0]["error"].startswith(("SystemExit", "KeyboardInterrupt"))


async def test_non_json_result_completes_without_a_result() -> None:
    outcome = await perform_job(NotJson, {})
    assert outcome.state == "completed"
    assert outcome.result is None


async def test_snooze_reschedules_without_using_an_attempt() -> None:
    outcome = await perform_job(Sleepy, {}, attempt=4)
    assert outcome.state == "scheduled"
    assert outcome.snooze == 30
    assert outcome.job.attempt == 3
    assert outcome.job.attempted_at is not None
    assert outcome.job.scheduled_at == pytest.approx(outcome.job.attempted_at + 30, abs=5)


async def test_cancel_records_reason() -> None:
    outcome = await perform_job(Stop, {})
    assert outcome.state == "cancelled"
    assert outcome.reason == "no longer wanted"
    assert outcome.job.errors[0]["error"] == "cancelled: no longer wanted"


async def test_worker_backoff_override_and_topic_backoff() -> None:
    own = await perform_job(OwnBackoff, {})
    assert own.job.scheduled_at is not None and own.job.attempted_at is not None
    assert own.job.scheduled_at - own.job.attempted_at == pytest.approx(123.0, abs=2)
    topic = TopicSettings(name="t", backoff=BackoffSettings(strategy="constant", base=50, max=60, jitter=0))
    outcome = await perform_job(Boom, {}, topic=topic)
    assert outcome.job.scheduled_at is not None and outcome.job.attempted_at is not None
    assert outcome.job.scheduled_at - outcome.job.attempted_at == pytest.approx(50, abs=2)


async def test_args_must_be_json() -> None:
    with pytest.raises(EnqueueError, match="not JSON"):
        await perform_job(Sum, {"a": object()})


def test_classify_is_pure() -> None:
    assert classify(5).kind == "completed"
    assert classify(Snooze(2)).seconds == 2
    assert classify(Cancel("r")).reason == "r"
    failed = classify_error(ValueError("v"))
    assert failed.traceback is not None
    assert failed.kind == "failed" and "ValueError: v" in failed.traceback
    assert encode_result(float("nan")) is None
    assert encode_result({"a": [1]}) == '{"a": [1]}'


def test_snooze_rejects_bad_seconds() -> None:
    with pytest.raises(ValueError):
        Snooze(-1)


def test_worker_options_are_validated_at_class_definition() -> None:
    with pytest.raises(TypeError, match="max_attempts"):
        class Bad(Worker):
            topic = "t"
            max_attempts = 0
    with pytest.raises(TypeError, match="priority"):
        class Bad2(Worker):
            topic = "t"
            priority = 12
