"""The job slots of a topic: a job claimed again while an earlier execution of it still
unwinds here, or while the thread of an earlier plain ``def perform`` still runs, starts
only once that one has ended: no job runs twice at once on a node."""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import cast

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from jobrunner.job import Job
from jobrunner.outcomes import Finished
from jobrunner.slots import Execution, JobSlots
from jobrunner.threads import ThreadCall, started_in_thread

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


async def test_a_job_run_again_waits_for_the_thread_of_its_cancelled_execution() -> None:
    """A plain ``def perform`` cannot be interrupted: its execution ends at the
    cancellation but the thread runs on, and the job's next execution here waits for it."""
    timeline: list[str] = []
    release = threading.Event()
    first_running = anyio.Event()

    def blocking(attempt: int) -> None:
        if attempt == 1:
            anyio.from_thread.run_sync(first_running.set)
            release.wait(10)
        timeline.append(f"thread {attempt} returns")

    async def perform(job: Job) -> Finished:
        call = ThreadCall(functools.partial(blocking, job.attempt))
        started_in_thread(call)  # what the executor does for a plain def perform
        timeline.append(f"start {job.attempt}")
        await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        return cast(Finished, SimpleNamespace(overrun=None))

    slots = JobSlots("t", perform, lambda execution, finished: None, lambda: None)
    async with anyio.create_task_group() as tg:
        slots.start(tg, _job(1))
        await first_running.wait()
        assert slots.cancel(7)  # cancelled by request: the execution ends, its thread does not
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        slots.start(tg, _job(2))  # retried and claimed again
        for _ in range(20):  # long enough for an execution that does not wait to start
            await anyio.lowlevel.checkpoint()
        assert timeline == ["start 1"]
        release.set()
        with anyio.fail_after(10):
            await slots.wait_idle()
        tg.cancel_scope.cancel()
    assert timeline == ["start 1", "thread 1 returns", "start 2", "thread 2 returns"]
