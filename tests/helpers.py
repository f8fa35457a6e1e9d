"""Small typed helpers the tests share (fixture types, narrowing what a test relies on)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from jobrunner import Job, Runner
from jobrunner.recording import RecordedEvent

#: The ``make_runner`` fixture: ``make_runner(topics, **sections)`` builds a migrated
#: Runner on the test's database.
MakeRunner: TypeAlias = Callable[..., Runner]


def about(job: Job) -> Callable[[dict[str, Any]], bool]:
    """A ``wait_for`` predicate: the event is about ``job`` (its payload's job has that id)."""
    return lambda payload: payload["job"].id == job.id


def job_of(event: RecordedEvent) -> Job:
    """The job of a job event (``job_started``, ``job_completed``...), which always has one."""
    job = event.job
    assert job is not None, f"{event.name} carries no job"
    return job


def get_job(runner: Runner, job_id: int) -> Job:
    """``runner.get_job(job_id)`` for a job the test knows is stored."""
    job = runner.get_job(job_id)
    assert job is not None, f"no job {job_id}"
    return job
