"""The job slots of a topic: a job claimed again while an earlier execution of it still
unwinds here starts only once that one has ended, so no job runs twice at once on a node
(for an ``async def perform``; a thread cannot be interrupted)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import cast

import anyio
import pytest

from jobrunner.job import Job
from jobrunner.outcomes import Finished
from jobrunner.slots import Execution, JobSlots

pytestmark = pytest.mark.anyio


def _job(attempt: int) -> Job:
    return Job(id=7, topic="t", worker="w", args={}, state="executing", priority=0, attempt=attempt, max_attempts=3)


def _slow_to_unwind(timeline: list[str], first_running: anyio.Event) -> Callable[[Job], Awaitable[Finished]]:
    """A perform whose first attempt runs until cancelled and then cleans up over a few
    steps of the loop (a shielded ``finally`` that awaits); later attempts return."""

    async def perform(job: Job) -> Finished:
        timeline.append(f"start {job.attempt}")
        try:
            if job.attempt == 1:
                first_running.set()
                await anyio.sleep_forever()
        finally:
            if job.attempt == 1:
                with anyio.CancelScope(shield=True):
                    for _ in range(5):
                        await anyio.lowlevel.checkpoint()
            timeline.append(f"end {job.attempt}")
        return cast(Finished, SimpleNamespace(overrun=None))

    return perform


async def test_a_job_claimed_again_starts_after_its_lost_execution_has_unwound() -> None:
    """The lost execution's cleanup awaits (a shielded ``finally``), so its end comes
    several loop steps after its cancellation: the new execution waits for it."""
    timeline: list[str] = []
    ended: list[tuple[int, bool, bool]] = []
    first_running = anyio.Event()

    def on_end(execution: Execution, finished: Finished | None) -> None:
        ended.append((execution.job.attempt, execution.lost, finished is not None))

    slots = JobSlots("t", _slow_to_unwind(timeline, first_running), on_end, lambda: None)
    async with anyio.create_task_group() as tg:
        slots.start(tg, _job(1))
        await first_running.wait()
        slots.start(tg, _job(2))  # claimed again (retried elsewhere): the first one lost it
        with anyio.fail_after(10):
            await slots.wait_idle()
        tg.cancel_scope.cancel()
    assert timeline == ["start 1", "end 1", "start 2", "end 2"]
    assert ended == [(1, True, False), (2, False, True)]
    assert slots.running() == [] and slots.taken == 0


async def test_a_job_lost_twice_waits_for_the_execution_that_ran() -> None:
    """Claimed a second and a third time while the first still unwinds: the second never
    starts (it was lost before it could), the third waits for the first."""
    timeline: list[str] = []
    first_running = anyio.Event()
    slots = JobSlots("t", _slow_to_unwind(timeline, first_running), lambda execution, finished: None,
                     lambda: None)
    async with anyio.create_task_group() as tg:
        slots.start(tg, _job(1))
        await first_running.wait()
        slots.start(tg, _job(2))
        slots.start(tg, _job(3))
        with anyio.fail_after(10):
            await slots.wait_idle()
        tg.cancel_scope.cancel()
    assert timeline == ["start 1", "end 1", "start 3", "end 3"]
    assert slots.taken == 0
