"""The producer of one topic: claims due jobs up to its free slots and records outcomes.

One database round trip both writes the outcomes of finished jobs (acks) and claims new
ones, so a busy topic costs one transaction per batch, not two per job; a check of the
topic's control (pause, cancellations by other processes) rides along with it. Events
are sent after that write.

Claimed jobs run in long-lived job tasks, at most one per slot: a task that finishes a
job waits for the next one instead of ending, which costs far less than a new task per
job. Each job still runs in a context of its own (:mod:`jobrunner.context`) and can be
cancelled on its own (the task's cancel scope serves one job; cancelling it retires the
task).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from . import events
from .config import TopicSettings
from .context import in_own_context
from .executor import Executor, Finished, released
from .job import Job, JobState
from .storage import AsyncStorage, ClaimRequest, CycleResult, TopicControl
from .summary import new_tally
from .threads import ThreadCall
from .wakeup import Wakeup

logger = logging.getLogger("jobrunner.producer")

#: Seconds a control check waits for a running job to end, so that it can ride along
#: with that job's ack instead of costing a database round trip of its own.
CHECK_DELAY = 0.002


class Producer:
    """Claims and runs the jobs of one topic within its parallelism.

    It outlives restarts of its loop (:meth:`run`): running jobs, idle job tasks, the
    acks not yet written and the wake-up signal survive a crash of the loop.
    """

    def __init__(
        self,
        topic: TopicSettings,
        storage: AsyncStorage,
        node: str,
        executor: Executor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self._limits = topic.limits
        #: The parallelism the topic was scaled to (None: the configured one), as last read.
        self._scaled: int | None = None
        self.storage = storage
        self.node = node
        self.executor = executor
        self.clock = clock
        self.wakeup = Wakeup()
        self.running = 0
        self.stopping = False
        self.paused = False
        self._pending: list[Finished] = []
        self._scopes: dict[int, anyio.CancelScope] = {}
        #: Attempt of the execution each running job id belongs to.
        self._attempts: dict[int, int] = {}
        #: Executions (id, attempt) that lost their job: stop them, write and announce nothing.
        self._superseded: set[tuple[int, int]] = set()
        self._jobs_tg: TaskGroup | None = None
        self._idle_tasks: list[_Handoff] = []
        self._idle = anyio.Event()
        self._idle.set()
        self._next_stage = 0.0
        self._check_control = True
        self._cancelled_elsewhere: set[int] = set()
        #: Jobs started and outcomes written since the last throughput summary.
        self._tally = new_tally()

    # -------------------------------------------------------------- control

    def notify(self) -> None:
        """Something may be claimable now (an insert in this process)."""
        if self.running < self.parallelism or self._pending:
            self.wakeup.set()

    def notify_external(self) -> None:
        """Another process committed: maybe an insert, a pause, or a cancel of our job."""
        self._check_control = True
        self.wakeup.set()

    def cancel_job(self, job_id: int) -> bool:
        """Cancel ``job_id`` if it runs here (it was marked cancelled in the table)."""
        scope = self._scopes.get(job_id)
        if scope is None:
            return False
        self._cancelled_elsewhere.add(job_id)
        scope.cancel()
        return True

    def _abandon(self, job_id: int) -> None:
        """Stop our execution of a job that is no longer ours (rescued, retried, re-claimed)."""
        scope = self._scopes.get(job_id)
        if scope is None:
            return
        attempt = self._attempts[job_id]
        self._superseded.add((job_id, attempt))
        logger.warning(
            "job_lost id=%s topic=%s attempt=%s: the job left this node's hands (rescued, retried or "
            "claimed again); stopping this execution", job_id, self.topic.name, attempt,
            extra={"event": "job_lost", "topic": self.topic.name, "job_id": job_id},
        )
        scope.cancel()

    def _running_pairs(self) -> list[tuple[int, int]]:
        return [(job_id, self._attempts[job_id]) for job_id in self._scopes]

    def stop_claiming(self) -> None:
        """Claim nothing more; running jobs go on and their outcomes are still written."""
        self.stopping = True
        self.wakeup.set()

    def cancel_running(self) -> None:
        """Cancel every running job: each is put back in the table as available."""
        for scope in list(self._scopes.values()):
            scope.cancel()

    async def wait_idle(self) -> None:
        """Wait until no job of this topic is running."""
        await self._idle.wait()

    @property
    def parallelism(self) -> int:
        """The topic's parallelism in force: the one it was scaled to, else the configured one."""
        return self.topic.parallelism if self._scaled is None else self._scaled

    def take_tally(self) -> dict[str, int]:
        """Jobs started and outcomes written (by ack kind) since the last call."""
        tally, self._tally = self._tally, new_tally()
        return tally

    @property
    def has_pending(self) -> bool:
        """True while some outcomes are not yet written."""
        return bool(self._pending)

    # -------------------------------------------------------------- the loop

    async def run(self, jobs_tg: TaskGroup) -> None:
        """Claim and spawn jobs into ``jobs_tg`` until stopped and drained. May raise."""
        poll = self.topic.poll_interval
        while True:
            now = self.clock()
            stage = not self.stopping and now >= self._next_stage
            if stage:
                self._next_stage = now + poll
            check = (stage or self._check_control) and not self.stopping
            if check:
                self._check_control = False
            # A control check rides along with the claim, which then obeys a pause itself.
            claiming = not self.stopping and (check or not self.paused)
            stage = stage and claiming
            demand = self.parallelism - self.running if claiming else 0
            if self._pending or demand > 0 or stage:
                claimed = await self.flush(demand, stage, check=check)
                for job in claimed:
                    self.start_job(jobs_tg, job)
            elif check:
                # Every slot is busy. A job that ends within a moment gives the check a
                # flush to ride along with; else it is a read of its own.
                self._check_control = True
                await self.wakeup.wait(CHECK_DELAY)
                if not self._pending and self._check_control:
                    self._check_control = False
                    await self._obey_control()
                continue
            if self.stopping and self.running == 0 and not self._pending:
                return
            await self.wakeup.wait(math.inf if self.stopping else max(0.0, self._next_stage - self.clock()))

    async def _obey_control(self) -> None:
        """Read pause state and cancellations made by other processes; act on them."""
        self._obey(await self.storage.control(self.topic.name, self._running_pairs(), self.node))

    def _obey(self, control: TopicControl) -> None:
        if control.paused != self.paused:
            self.paused = control.paused
            logger.info("topic_%s topic=%s", "paused" if self.paused else "resumed", self.topic.name,
                        extra={"event": "topic_paused" if self.paused else "topic_resumed", "topic": self.topic.name})
        if control.parallelism != self._scaled:
            self._scaled = control.parallelism
            # Plain ``def perform`` threads are bounded by the parallelism too.
            self.executor.thread_limiter.total_tokens = self.parallelism
            logger.info("topic_scaled topic=%s parallelism=%s", self.topic.name, self.parallelism,
                        extra={"event": "topic_scaled", "topic": self.topic.name})
            self.wakeup.set()  # more slots may be free now
        for job_id in control.cancelled:
            self.cancel_job(job_id)
        for job_id in control.lost:
            self._abandon(job_id)

    async def flush(self, demand: int = 0, stage: bool = False, *, check: bool = False) -> list[Job]:
        """Write pending outcomes, stage due jobs when asked, and claim up to ``demand``
        jobs, all in one transaction. With ``check``, the transaction also reads the
        topic's control first (pause, cancellations elsewhere), which is then obeyed."""
        finished, self._pending = self._pending, []
        request = ClaimRequest(self.topic.name, demand, self.node, self.clock(), stage,
                               self._running_pairs() if check else None,
                               self.topic.parallelism, self.running, self._limits)
        result: CycleResult
        try:
            result = await self.storage.cycle([f.ack for f in finished], request)
        except BaseException:
            self._pending[:0] = finished  # keep them for the next attempt
            raise
        if result.retry_at is not None:  # a rate limit held jobs back: look again when it has room
            self._next_stage = min(self._next_stage, result.retry_at)
        tally = self._tally
        for item, applied in zip(finished, result.applied, strict=True):
            if applied:
                tally[item.ack.transition] += 1
                item.emit()
            else:
                logger.warning(
                    "job_stale id=%s topic=%s: the job left executing before its %s was written; "
                    "outcome dropped", item.ack.job.id, self.topic.name, item.ack.transition,
                    extra={"event": "job_stale", "topic": self.topic.name, "job_id": item.ack.job.id},
                )
        if result.control is not None:
            self._obey(result.control)
        return result.claimed

    # -------------------------------------------------------------- jobs

    def start_job(self, jobs_tg: TaskGroup, job: Job) -> None:
        """Run a claimed job in ``jobs_tg``; its outcome joins the pending acks.

        The job goes to a job task of ``jobs_tg`` that is idle, else to a new one. Idle
        job tasks wait for their next job until ``jobs_tg`` is cancelled: cancel it once
        :meth:`wait_idle` returns.
        """
        self.running += 1
        if self.running == 1:
            self._idle = anyio.Event()
        if jobs_tg is not self._jobs_tg:
            self._jobs_tg, self._idle_tasks = jobs_tg, []
        if job.id in self._scopes:
            # Claimed again while an older execution still runs here: that one lost the job.
            self._abandon(job.id)
        self._attempts[job.id] = job.attempt
        # The job's scope is known from now on, so cancel_job works before the job starts
        # (even from a job_started receiver).
        if self._idle_tasks:
            handoff = self._idle_tasks.pop()
            self._scopes[job.id] = handoff.scope
            handoff.give(job)
        else:
            scope = self._scopes[job.id] = anyio.CancelScope()
            jobs_tg.start_soon(self._job_task, job, scope, self._idle_tasks)
        self._tally["start"] += 1
        events.emit(events.job_started, self.topic.name, job=job)

    async def _job_task(self, job: Job, scope: anyio.CancelScope, idle_tasks: list[_Handoff]) -> None:
        """Run ``job``, then each job handed over, until cancelled.

        ``scope`` is this task's and is cancelled only to cancel the job it is running
        (or was handed): that ends the task, and a later job gets a new one.
        """
        with scope:
            while True:
                await in_own_context(self._run_job(job))
                if scope.cancel_called:
                    return  # the job ended before its cancellation reached it
                handoff = _Handoff(scope)
                idle_tasks.append(handoff)
                try:
                    await handoff.event.wait()
                except BaseException:  # cancelled while idle (or just handed a job)
                    if handoff.job is None:
                        idle_tasks.remove(handoff)
                    else:  # handed over but never started
                        self._done(handoff.job, None)
                    raise
                assert handoff.job is not None  # give() sets the job before the event
                job = handoff.job

    async def _run_job(self, job: Job) -> None:
        finished: Finished | None = None
        try:
            finished = await self.executor.execute(job)
        finally:
            overrun = finished.overrun if finished is not None else None
            self._done(job, finished, free_slot=overrun is None)
        if overrun is not None:
            await self._hold_slot(job, overrun)

    async def _hold_slot(self, job: Job, overrun: ThreadCall) -> None:
        """Keep the slot of a timed-out job whose thread runs on, until the thread ends.

        The job's failure is already on its way to the table; only the slot waits, so a
        topic never has more threads running than its parallelism.
        """
        logger.warning(
            "job_overrunning id=%s topic=%s: perform timed out but its thread runs on; its slot stays "
            "taken until it returns", job.id, self.topic.name,
            extra={"event": "job_overrunning", "topic": self.topic.name, "job_id": job.id},
        )
        try:
            await overrun.wait_done()
        finally:
            self._free_slot()

    def _done(self, job: Job, finished: Finished | None, *, free_slot: bool = True) -> None:
        """Book the end of one execution (``None``: it was cancelled before an outcome);
        ``free_slot=False`` keeps its slot taken (see :meth:`_hold_slot`)."""
        key = (job.id, job.attempt)
        if key in self._superseded:
            # The job is no longer this execution's: write and announce nothing.
            self._superseded.discard(key)
            if self._attempts.get(job.id) == job.attempt:  # no newer execution took its place
                del self._scopes[job.id]
                del self._attempts[job.id]
        else:
            del self._scopes[job.id]
            del self._attempts[job.id]
            if job.id in self._cancelled_elsewhere:
                # Already cancelled in the table: nothing to write, only to announce.
                self._cancelled_elsewhere.discard(job.id)
                self._tally["cancel"] += 1
                events.emit(events.job_cancelled, self.topic.name,
                            job=job.evolve(state=JobState.CANCELLED), reason="cancelled by request", duration=None)
            else:
                if finished is None:  # cancelled by shutdown: put the job back for another run
                    finished = released(job)
                self._pending.append(finished)
        if free_slot:
            self._free_slot()
        else:
            self.wakeup.set()  # the outcome is pending: write it

    def _free_slot(self) -> None:
        self.running -= 1
        if self.running == 0:
            self._idle.set()
        self.wakeup.set()


class _Handoff:
    """How an idle job task receives its next job; ``scope`` is the task's cancel scope."""

    __slots__ = ("event", "job", "scope")

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.event = anyio.Event()
        self.job: Job | None = None
        self.scope = scope

    def give(self, job: Job) -> None:
        """Hand ``job`` over and wake the task."""
        self.job = job
        self.event.set()
