"""The claim loop of one topic: claims due jobs into free slots and writes outcomes.

One database round trip both writes the outcomes of finished jobs (acks) and claims new
ones, so a busy topic costs one transaction per batch, not two per job; a check of the
topic's control (pause, cancellations by other processes) rides along with it. Events
are sent after that write.

What the loop does when it wakes is decided by a pure function
(:func:`jobrunner.decision.decide`); the running jobs live in :class:`~jobrunner.slots.JobSlots`,
one :class:`~jobrunner.slots.Execution` record each.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from anyio.abc import TaskGroup

from . import events
from .announcer import Announcer
from .config import TopicSettings
from .decision import LoopState, decide
from .executor import Executor
from .job import Job, JobState
from .outcomes import Finished, released
from .slots import Execution, JobSlots
from .storage import AsyncStorage, ClaimRequest, CycleResult, TopicControl
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
        *,
        log_jobs: bool = True,
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
        self.stopping = False
        self.paused = False
        self.slots = JobSlots(topic.name, executor.execute, self._ended, self.wakeup.set, executor.timeout_of)
        self._pending: list[Finished] = []
        self._next_stage = 0.0
        self._check_requested = True
        #: Announces what the loop wrote (events, log lines) and counts it.
        self.announcer = Announcer(topic.name, log_jobs=log_jobs)

    # -------------------------------------------------------------- control

    @property
    def running(self) -> int:
        """Slots taken (running jobs, and timed-out ones whose thread runs on)."""
        return self.slots.taken

    def notify(self) -> None:
        """Something may be claimable now (an insert in this process)."""
        if self.slots.taken < self.parallelism or self._pending:
            self.wakeup.set()

    def notify_external(self) -> None:
        """Another process committed: maybe an insert, a pause, or a cancel of our job."""
        self._check_requested = True
        self.wakeup.set()

    def cancel_job(self, job_id: int) -> bool:
        """Cancel ``job_id`` if it runs here (it was marked cancelled in the table)."""
        return self.slots.cancel(job_id)

    def stop_claiming(self) -> None:
        """Claim nothing more; running jobs go on and their outcomes are still written."""
        self.stopping = True
        self.wakeup.set()

    def cancel_running(self) -> None:
        """Cancel every running job: each is put back in the table as available."""
        self.slots.cancel_all()

    async def wait_idle(self) -> None:
        """Wait until no job of this topic is running."""
        await self.slots.wait_idle()

    @property
    def parallelism(self) -> int:
        """The topic's parallelism in force: the one it was scaled to, else the configured one."""
        return self.topic.parallelism if self._scaled is None else self._scaled

    def take_tally(self) -> dict[str, int]:
        """Jobs started and outcomes written (by ack kind) since the last call."""
        return self.announcer.take_tally()

    @property
    def has_pending(self) -> bool:
        """True while some outcomes are not yet written."""
        return bool(self._pending)

    # -------------------------------------------------------------- the loop

    def state(self) -> LoopState:
        """What the loop knows now (the input of :func:`~jobrunner.decision.decide`)."""
        return LoopState(
            now=self.clock(), next_stage=self._next_stage, poll_interval=self.topic.poll_interval,
            stopping=self.stopping, paused=self.paused, check_requested=self._check_requested,
            running=self.slots.taken, parallelism=self.parallelism, pending=len(self._pending),
        )

    async def run(self, jobs_tg: TaskGroup) -> None:
        """Claim and start jobs in ``jobs_tg`` until stopped and drained. May raise.

        Outcomes are announced by a task of ``jobs_tg`` (started once, ended with it)."""
        if not self.announcer.running:
            self.announcer.running = True  # from now: the task will take what is deferred
            jobs_tg.start_soon(self.announcer.run)
        try:
            await self._loop(jobs_tg)
        finally:
            self.announcer.flush()

    async def _loop(self, jobs_tg: TaskGroup) -> None:
        while True:
            decision = decide(self.state())
            if decision.done:
                return
            self._next_stage = decision.next_stage
            self._check_requested = decision.check_requested
            if decision.transaction:
                await self.cycle(jobs_tg, decision.claim, decision.stage, check=decision.check, defer=True)
            elif decision.defer_check:
                # Every slot is busy. A job that ends within a moment gives the check a
                # transaction to ride along with; else it is a read of its own.
                await self.wakeup.wait(CHECK_DELAY)
                if not self._pending and self._check_requested:
                    self._check_requested = False
                    await self._obey_control()
                continue
            if self.stopping and self.slots.taken == 0 and not self._pending:
                return
            idle_stop = self.stopping and self.slots.taken == 0
            await self.wakeup.wait(math.inf if idle_stop else max(0.0, self._next_stage - self.clock()))

    async def drain(self, jobs_tg: TaskGroup, *, with_scheduled: bool = False) -> None:
        """Claim and run jobs in ``jobs_tg`` until none is claimable, and write every outcome.

        Due scheduled and retryable jobs are staged before each claim; ``with_scheduled``
        stages them all, due or not. For tests (:func:`jobrunner.testing.drain`): do not
        drain a topic that :meth:`run` runs.
        """
        while True:
            if with_scheduled:
                await self.storage.stage_due(self.topic.name, math.inf)
            if not await self.cycle(jobs_tg, self.parallelism - self.slots.taken, stage=True):
                break
            await self.wait_idle()
        await self.cycle(jobs_tg, 0)

    async def cycle(
        self, jobs_tg: TaskGroup, claim: int, stage: bool = False, *, check: bool = False, defer: bool = False
    ) -> int:
        """One transaction: write pending outcomes, then claim up to ``claim`` jobs and
        start them in ``jobs_tg``; returns how many were claimed. ``stage`` first makes
        due jobs available; ``check`` reads the topic's control, which is then obeyed.
        ``defer``: leave the announcements to the announcer task (see :meth:`flush`)."""
        claimed = await self.flush(claim, stage, check=check, defer=defer)
        if not claimed:
            return 0
        for job in claimed:
            self.slots.start(jobs_tg, job)
        self.announcer.started(claimed, defer=defer)
        return len(claimed)

    async def _obey_control(self) -> None:
        """Read pause state and cancellations made by other processes; act on them."""
        self._obey(await self.storage.control(self.topic.name, self.slots.running(), self.node))

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
            self.slots.cancel(job_id)
        for job_id in control.lost:
            self.slots.abandon(job_id)

    async def flush(
        self, demand: int = 0, stage: bool = False, *, check: bool = False, defer: bool = False
    ) -> list[Job]:
        """Write pending outcomes, stage due jobs when asked, and claim up to ``demand``
        jobs, all in one transaction. With ``check``, the transaction also reads the
        topic's control first (pause, cancellations elsewhere), which is then obeyed.

        The outcomes written are announced (events, log lines) before this returns, or
        with ``defer`` by the announcer task soon after: always after the write, and in
        the order written."""
        finished, self._pending = self._pending, []
        request = ClaimRequest(self.topic.name, demand, self.node, self.clock(), stage,
                               self.slots.running() if check else None,
                               self.topic.parallelism, self.slots.taken, self._limits)
        result: CycleResult
        try:
            result = await self.storage.cycle([f.ack for f in finished], request)
        except BaseException:
            self._pending[:0] = finished  # keep them for the next attempt
            raise
        if result.retry_at is not None:  # a rate limit held jobs back: look again when it has room
            self._next_stage = min(self._next_stage, result.retry_at)
        self.announcer.outcomes(finished, result.applied, defer=defer)
        if result.control is not None:
            self._obey(result.control)
        return result.claimed

    # -------------------------------------------------------------- jobs

    def start_job(self, jobs_tg: TaskGroup, job: Job) -> None:
        """Run a claimed job in a slot (a job task of ``jobs_tg``); its outcome joins the
        pending acks. Cancel ``jobs_tg`` once :meth:`wait_idle` returns: idle job tasks
        wait there for their next job."""
        self.slots.start(jobs_tg, job)
        self.announcer.started([job])

    def _ended(self, execution: Execution, finished: Finished | None) -> None:
        """Book the end of one execution (``None``: cancelled before an outcome)."""
        if execution.lost:
            return  # the job is no longer this execution's: write and announce nothing
        job = execution.job
        if execution.cancelled:
            # Already cancelled in the table: nothing to write, only to announce, after
            # what is still queued for announcing (its job_started, maybe).
            self.announcer.flush()
            self.announcer.tally["cancel"] += 1
            events.emit(events.job_cancelled, self.topic.name,
                        job=job.evolve(state=JobState.CANCELLED), reason="cancelled by request", duration=None)
            return
        if finished is None:  # cancelled by shutdown: put the job back for another run
            finished = released(job)
        self._pending.append(finished)  # JobSlots wakes the loop to write it
