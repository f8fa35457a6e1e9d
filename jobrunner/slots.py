"""The job slots of one topic: at most ``parallelism`` executions, one record each.

Claimed jobs run in long-lived job tasks, at most one per slot: a task that finishes a
job waits for the next one instead of ending, which costs far less than a new task per
job. Each job still runs in a context of its own (:mod:`jobrunner.context`) and can be
cancelled on its own: the task's cancel scope serves one job at a time, and cancelling
it retires the task (a later job gets a new one).

Everything known about a running execution lives in its :class:`Execution` record;
:class:`JobSlots` maps job ids to those records and reports each end to its owner.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from .context import in_own_context
from .job import Job
from .outcomes import Finished
from .serial_runs import SerialRuns
from .threads import ThreadCall, watch_threads

logger = logging.getLogger("jobrunner.producer")



@dataclass(slots=True, eq=False)
class Execution:
    """One execution of a claimed job, from its claim until its outcome is booked.

    ``scope`` cancels it (its job task's scope). ``lost``: the job left this node's
    hands meanwhile (rescued, retried or claimed again), so nothing is written or
    announced for it. ``cancelled``: it was cancelled in the table by request, so its
    end is only announced. ``thread``: the worker thread of a plain ``def perform``.
    ``after`` / ``after_thread``: an earlier execution of the same job still unwinding
    here, or the thread of one that outlived it (cancelled, lost or timed out), which
    this one waits for before it starts; ``finished`` is set when this one has ended
    (made only when a later execution waits for it). See :mod:`jobrunner.serial_runs`.
    """

    job: Job
    scope: anyio.CancelScope
    lost: bool = False
    cancelled: bool = False
    thread: ThreadCall | None = None
    after: Execution | None = None
    after_thread: ThreadCall | None = None
    finished: anyio.Event | None = None


#: Called once per execution as it ends: with its outcome, or None when it was
#: cancelled before it had one.
Ended = Callable[[Execution, Finished | None], None]


class JobSlots:
    """Runs claimed jobs in job tasks of a task group, one :class:`Execution` each.

    ``perform`` runs one job to its outcome; ``ended`` books each end (see
    :data:`Ended`); ``changed`` is called after each end and whenever a slot becomes free.
    ``patience(job)``: how long an execution waits for an earlier one of its job that
    still runs here (:mod:`jobrunner.serial_runs`; None: no bound).
    """

    def __init__(self, topic: str, perform: Callable[[Job], Awaitable[Finished]], ended: Ended,
                 changed: Callable[[], None], patience: Callable[[Job], float | None] = lambda job: None) -> None:
        self.topic = topic
        self._perform = perform
        self._ended = ended
        self._changed = changed
        #: Slots taken: executions running (or waiting for an earlier execution of their
        #: job), plus timed-out ones whose thread runs on.
        self.taken = 0
        self._executions: dict[int, Execution] = {}
        self._jobs_tg: TaskGroup | None = None
        self._idle_tasks: list[_Handoff] = []
        self._idle = anyio.Event()
        self._idle.set()
        # anyio.Event() looks up the running event loop's library on every call; the
        # class it returns makes the same events without the look-up (one per job here).
        self._new_event: Callable[[], anyio.Event] = type(self._idle)
        self._serial = SerialRuns(topic, patience, self._new_event)

    def running(self) -> list[tuple[int, int]]:
        """(id, attempt) of every execution running here."""
        return [(job_id, e.job.attempt) for job_id, e in self._executions.items()]

    def start(self, jobs_tg: TaskGroup, job: Job) -> Execution:
        """Run a claimed job in a job task of ``jobs_tg``: an idle one, else a new one.

        Idle job tasks wait for their next job until ``jobs_tg`` is cancelled: cancel it
        once :meth:`wait_idle` returns.
        """
        self.taken += 1
        if self.taken == 1:
            self._idle = self._new_event()
        if jobs_tg is not self._jobs_tg:
            self._jobs_tg, self._idle_tasks = jobs_tg, []
        if job.id in self._executions:
            # Claimed again while an older execution still runs here: that one lost the job.
            self.abandon(job.id)
        # The scope is known from now on, so cancel() works before the job starts.
        if self._idle_tasks:
            handoff = self._idle_tasks.pop()
            execution = self._executions[job.id] = Execution(job, handoff.scope)
            self._serial.link(execution)
            handoff.give(execution)
        else:
            execution = self._executions[job.id] = Execution(job, anyio.CancelScope())
            self._serial.link(execution)
            jobs_tg.start_soon(self._job_task, execution, self._idle_tasks)
        return execution

    def cancel(self, job_id: int) -> bool:
        """Stop the execution of ``job_id`` (cancelled in the table); False if none runs here."""
        execution = self._executions.get(job_id)
        if execution is None:
            return False
        execution.cancelled = True
        execution.scope.cancel()
        return True

    def abandon(self, job_id: int) -> None:
        """Stop the execution of a job that is no longer ours; nothing is written for it."""
        execution = self._executions.pop(job_id, None)
        if execution is None:
            return
        execution.lost = True
        self._serial.lost(execution)
        logger.warning(
            "job_lost id=%s topic=%s attempt=%s: the job left this node's hands (rescued, retried or "
            "claimed again); stopping this execution", job_id, self.topic, execution.job.attempt,
            extra={"event": "job_lost", "topic": self.topic, "job_id": job_id},
        )
        execution.scope.cancel()

    def cancel_all(self) -> None:
        """Cancel every running execution (each is put back in the table by its owner)."""
        for execution in list(self._executions.values()):
            execution.scope.cancel()

    async def wait_idle(self) -> None:
        """Wait until every slot is free."""
        await self._idle.wait()

    async def _job_task(self, execution: Execution, idle_tasks: list[_Handoff]) -> None:
        """Run ``execution``, then each one handed over, until cancelled.

        The scope is this task's and is cancelled only to cancel the execution it runs
        (or was handed): that ends the task.
        """
        scope = execution.scope
        with scope:
            while True:
                await in_own_context(self._run(execution))
                if scope.cancel_called:
                    return  # the job ended before its cancellation reached it
                handoff = _Handoff(scope, self._new_event())
                idle_tasks.append(handoff)
                try:
                    await handoff.event.wait()
                except BaseException:  # cancelled while idle (or just handed a job)
                    if handoff.execution is None:
                        idle_tasks.remove(handoff)
                    else:  # handed over but never started
                        self._end(handoff.execution, None)
                    raise
                assert handoff.execution is not None  # give() sets it before the event
                execution = handoff.execution

    async def _run(self, execution: Execution) -> None:
        finished: Finished | None = None
        try:
            if execution.after is not None or execution.after_thread is not None:
                await self._serial.wait(execution)
            watch_threads(execution)  # this job's own context: see in_own_context
            finished = await self._perform(execution.job)
        finally:
            overrun = finished.overrun if finished is not None else None
            self._end(execution, finished, free_slot=overrun is None)
        if overrun is not None:
            await self._hold_slot(execution.job, overrun)

    async def _hold_slot(self, job: Job, overrun: ThreadCall) -> None:
        """Keep the slot of a timed-out job whose thread runs on, until the thread ends.

        The job's failure is already on its way to the table; only the slot waits, so a
        topic never has more threads running than its parallelism.
        """
        logger.warning(
            "job_overrunning id=%s topic=%s: perform timed out but its thread runs on; its slot stays "
            "taken until it returns", job.id, self.topic,
            extra={"event": "job_overrunning", "topic": self.topic, "job_id": job.id},
        )
        try:
            await overrun.wait_done()
        finally:
            self._free_slot()

    def _end(self, execution: Execution, finished: Finished | None, *, free_slot: bool = True) -> None:
        job_id = execution.job.id
        if self._executions.get(job_id) is execution:
            del self._executions[job_id]
        self._serial.ended(execution)
        self._ended(execution, finished)
        if free_slot:
            self._free_slot()
        else:
            self._changed()  # its outcome may be pending

    def _free_slot(self) -> None:
        self.taken -= 1
        if self.taken == 0:
            self._idle.set()
        self._changed()


class _Handoff:
    """How an idle job task receives its next execution; ``scope`` is the task's."""

    __slots__ = ("event", "execution", "scope")

    def __init__(self, scope: anyio.CancelScope, event: anyio.Event) -> None:
        self.event = event
        self.execution: Execution | None = None
        self.scope = scope

    def give(self, execution: Execution) -> None:
        """Hand ``execution`` over (it takes this task's scope) and wake the task."""
        self.execution = execution
        self.event.set()


__all__ = ["Ended", "Execution", "JobSlots"]
