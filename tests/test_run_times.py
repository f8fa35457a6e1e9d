"""Run times stay within what ISO 8601 renders (years 1..9999), whatever a worker asks for.

A snooze or a backoff past the year 9999 is clamped to ``LATEST``; a ``Worker.backoff``
may return seconds or a ``timedelta``; one that returns anything else (or raises) falls
back to the topic's backoff with a note in the error entry, and the job goes on.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from jobrunner import Job, Runner, Snooze, Worker
from jobrunner.job import LATEST, iso
from jobrunner.storage.schema import jobs
from jobrunner.testing import drain
from tests.helpers import MakeRunner, get_job

BACKOFF_1S = {"strategy": "constant", "base": 1.0, "max": 1.0, "jitter": 0.0}


class LongSnooze(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        return Snooze(1e12)


class FailsWithBackoff(Worker):
    """Fails; ``backoff`` returns ``job.args["backoff"]`` decoded by :func:`backoff_of`."""

    topic = "t"

    async def perform(self, job: Job) -> Any:
        raise RuntimeError("boom")

    def backoff(self, job: Job) -> Any:
        return backoff_of(job.args["backoff"])


def backoff_of(spec: Any) -> Any:
    """What the override returns for ``[kind, value]`` (JSON cannot carry inf, NaN, timedelta)."""
    kind, value = spec
    if kind == "raises":
        raise ZeroDivisionError("no backoff")
    if kind == "float":
        return float(value)
    if kind == "timedelta":
        return timedelta(seconds=value)
    if kind == "big-int":
        return 10**400
    return value


def renders(job: Job) -> dict[str, Any]:
    """The job's dict, with every time a parseable ISO 8601 date (as show and the API print it)."""
    data = job.to_dict()
    json.dumps(data)
    for key in ("inserted_at", "scheduled_at", "attempted_at", "completed_at", "discarded_at", "cancelled_at"):
        if data[key] is not None:
            datetime.fromisoformat(data[key])
    return data


@pytest.fixture
def one_second_runner(make_runner: MakeRunner) -> Runner:
    return make_runner({"t": {"parallelism": 4, "backoff": BACKOFF_1S}})


@pytest.mark.anyio
async def test_a_snooze_past_the_year_9999_is_clamped(runner: Runner) -> None:
    job = runner.enqueue(LongSnooze, {})
    assert (await drain(runner, "t"))["snoozed"] == 1
    stored = get_job(runner, job.id)
    assert stored.state == "scheduled" and stored.scheduled_at == LATEST
    assert renders(stored)["scheduled_at"].startswith("9999-12-30")


@pytest.mark.anyio
@pytest.mark.parametrize(("spec", "low", "high"), [
    pytest.param(("seconds", 1e12), LATEST, LATEST, id="1e12-seconds"),
    pytest.param(("float", "inf"), LATEST, LATEST, id="infinite"),
    pytest.param(("big-int", None), LATEST, LATEST, id="int-beyond-float"),
    pytest.param(("timedelta", 30), 29, 31, id="timedelta"),
    pytest.param(("seconds", 120), 119, 121, id="seconds"),
])
async def test_a_backoff_is_seconds_or_a_timedelta_and_clamped(one_second_runner: Runner, spec: Any,
                                                                low: float, high: float) -> None:
    job = one_second_runner.enqueue(FailsWithBackoff, {"backoff": list(spec)})
    before = time.time()
    assert (await drain(one_second_runner, "t"))["failed"] == 1
    stored = get_job(one_second_runner, job.id)
    assert stored.state == "retryable"
    if low == LATEST:
        assert stored.scheduled_at == LATEST
    else:
        assert stored.scheduled_at is not None
        assert before + low <= stored.scheduled_at <= time.time() + high, stored.scheduled_at - before
    assert "note" not in stored.errors[-1]
    renders(stored)


@pytest.mark.anyio
@pytest.mark.parametrize(("spec", "fragment"), [
    pytest.param(("text", "soon"), "backoff() returned 'soon', not seconds", id="text"),
    pytest.param(("float", "nan"), "backoff() returned nan, not seconds", id="nan"),
    pytest.param(("raises", None), "backoff() raised ZeroDivisionError", id="raises"),
])
async def test_a_backoff_that_is_not_seconds_falls_back_to_the_topic(one_second_runner: Runner, spec: Any,
                                                                      fragment: str) -> None:
    job = one_second_runner.enqueue(FailsWithBackoff, {"backoff": list(spec)})
    before = time.time()
    counts = await drain(one_second_runner, "t")
    assert counts["failed"] == 1, counts
    stored = get_job(one_second_runner, job.id)
    assert stored.state == "retryable"
    assert stored.scheduled_at is not None
    assert before + 0.9 <= stored.scheduled_at <= time.time() + 1.1  # the topic's constant 1 s
    assert fragment in stored.errors[-1]["note"] and "used the topic's backoff" in stored.errors[-1]["note"]


def test_stored_times_beyond_the_range_still_render(runner: Runner) -> None:
    job = runner.enqueue(LongSnooze, {})
    engine = create_engine(runner.settings.database.url)
    try:
        with engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job.id).values(scheduled_at=1e14, attempted_at=-1e14))
    finally:
        engine.dispose()
    data = renders(get_job(runner, job.id))
    assert data["scheduled_at"].startswith("9999-12-31") and data["attempted_at"].startswith("0001-01-01")
    assert iso(float("nan")) is None
