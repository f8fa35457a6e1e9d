"""The job slots of a topic: a job claimed again while an earlier execution of it still
unwinds here, or while the thread of an earlier plain ``def perform`` still runs, starts
only once that one has ended: no job runs twice at once on a node."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio.abc import TaskGroup

from jobrunner.job import Job
from jobrunner.outcomes import Finished
from jobrunner.slots import Execution, JobSlots
from jobrunner.threads import ThreadCall, started_in_thread

pytestmark = pytest.mark.anyio


def _job(attempt: int) -> Job:
    return Job(id=7, topic="t", worker="w", args={}, state="executing", priority=0, attempt=attempt, max_attempts=3)


def _slow_to_unwind(timeline: list[str], first_running: anyio.Event,
                    cleaned: anyio.Event | None = None) -> Callable[[Job], Awaitable[Finished]]:
    """A perform whose first attempt runs until cancelled and then cleans up in a shielded
    ``finally`` that awaits: a few steps of the loop, or until ``cleaned`` is set; later
    attempts return."""

    async def perform(job: Job) -> Finished:
        timeline.append(f"start {job.attempt}")
        try:
            if job.attempt == 1:
                first_running.set()
                await anyio.sleep_forever()
        finally:
            if job.attempt == 1:
                with anyio.CancelScope(shield=True):
                    if cleaned is not None:
                        await cleaned.wait()
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


class _BlockingPerform:
    """A plain ``def perform`` run as the executor runs it (a ThreadCall, reported to the
    slots); attempt 1 blocks its thread until ``release`` is set."""

    def __init__(self) -> None:
        self.timeline: list[str] = []
        self.release = threading.Event()
        self.first_running = anyio.Event()

    def _blocking(self, attempt: int) -> None:
        if attempt == 1:
            anyio.from_thread.run_sync(self.first_running.set)
            self.release.wait(10)
        self.timeline.append(f"thread {attempt} returns")

    async def __call__(self, job: Job) -> Finished:
        call = ThreadCall(functools.partial(self._blocking, job.attempt))
        started_in_thread(call)  # what the executor does for a plain def perform
        self.timeline.append(f"start {job.attempt}")
        await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        return cast(Finished, SimpleNamespace(overrun=None))


async def _steps(count: int = 20) -> None:
    """Let the loop run ``count`` rounds: enough for an execution that does not wait to start."""
    for _ in range(count):
        await anyio.lowlevel.checkpoint()


async def _cancel_and_claim_again(tg: TaskGroup, slots: JobSlots, perform: _BlockingPerform) -> None:
    """Attempt 1 runs and is cancelled by request (its thread runs on); attempt 2 is
    claimed; the loop runs a while: attempt 2 must not have started."""
    slots.start(tg, _job(1))
    await perform.first_running.wait()
    assert slots.cancel(7)
    await _steps()
    slots.start(tg, _job(2))
    await _steps()
    assert perform.timeline == ["start 1"]


@pytest.mark.parametrize("claims", [2, 3])
async def test_a_job_run_again_waits_for_the_thread_of_its_cancelled_execution(claims: int) -> None:
    """A plain ``def perform`` cannot be interrupted: its execution ends at the
    cancellation but the thread runs on, and the job's next execution here waits for it.
    With a third claim, the second is lost while it waits: the third still waits."""
    perform = _BlockingPerform()
    slots = JobSlots("t", perform, lambda execution, finished: None, lambda: None)
    async with anyio.create_task_group() as tg:
        await _cancel_and_claim_again(tg, slots, perform)
        if claims == 3:
            slots.start(tg, _job(3))
            await _steps()
            assert perform.timeline == ["start 1"]
        perform.release.set()
        with anyio.fail_after(10):
            await slots.wait_idle()
        tg.cancel_scope.cancel()
    assert perform.timeline == ["start 1", "thread 1 returns", f"start {claims}", f"thread {claims} returns"]


async def test_a_lost_execution_waiting_on_a_slow_unwind_passes_the_wait_on() -> None:
    """Like the above for an ``async def perform`` whose cleanup takes a while: a third
    claim made while the second waits still waits for the first one's end."""
    timeline: list[str] = []
    first_running, cleaned = anyio.Event(), anyio.Event()
    slots = JobSlots("t", _slow_to_unwind(timeline, first_running, cleaned), lambda execution, finished: None,
                     lambda: None)
    async with anyio.create_task_group() as tg:
        slots.start(tg, _job(1))
        await first_running.wait()
        slots.start(tg, _job(2))
        await _steps()
        slots.start(tg, _job(3))
        await _steps()
        assert timeline == ["start 1"]
        cleaned.set()
        with anyio.fail_after(10):
            await slots.wait_idle()
        tg.cancel_scope.cancel()
    assert timeline == ["start 1", "end 1", "start 3", "end 3"]


async def test_a_thread_that_does_not_return_delays_the_next_run_by_the_timeout_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The wait counts against the worker's timeout (here 0.05 s): past it the next
    execution starts anyway and says so, so a hung thread cannot hold its job forever."""
    perform = _BlockingPerform()
    slots = JobSlots("t", perform, lambda execution, finished: None, lambda: None, lambda job: 0.05)
    async with anyio.create_task_group() as tg:
        slots.start(tg, _job(1))
        await perform.first_running.wait()
        slots.cancel(7)
        await _steps()
        with caplog.at_level(logging.INFO, logger="jobrunner.producer"):
            slots.start(tg, _job(2))
            with anyio.fail_after(10):
                while "start 2" not in perform.timeline:
                    await anyio.sleep(0.01)
        assert "thread 1 returns" not in perform.timeline  # it never returned: the run overlaps
        perform.release.set()
        with anyio.fail_after(10):
            await slots.wait_idle()
        tg.cancel_scope.cancel()
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("job_waiting") == 1 and events.count("job_overlapping") == 1
