"""The producer of one topic: claims due jobs up to its free slots and records outcomes.

One database round trip both writes the outcomes of finished jobs (acks) and claims new
ones, so a busy topic costs one transaction per batch, not two per job. Events are sent
after that write.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable

import anyio
from anyio.abc import TaskGroup

from . import events
from .config import TopicSettings
from .executor import Executor, Finished
from .job import Job
from .store import Ack, Store
from .wakeup import Wakeup

logger = logging.getLogger("jobrunner.producer")


class Producer:
    """Claims and runs the jobs of one topic within its parallelism.

    It outlives restarts of its loop (:meth:`run`): running jobs, the acks not yet
    written and the wake-up signal survive a crash of the loop.
    """

    def __init__(
        self,
        topic: TopicSettings,
        store: Store,
        node: str,
        run_db: Callable[..., Any],
        executor: Executor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self.store = store
        self.node = node
        self.executor = executor
        self.clock = clock
        self._run_db = run_db
        self.wakeup = Wakeup()
        self.running = 0
        self.stopping = False
        self.paused = False
        self._pending: list[Finished] = []
        self._scopes: dict[int, anyio.CancelScope] = {}
        self._idle = anyio.Event()
        self._idle.set()
        self._next_stage = 0.0
        self._check_control = True
        self._cancelled_elsewhere: set[int] = set()

    # -------------------------------------------------------------- control

    def notify(self) -> None:
        """Something may be claimable now (an insert in this process)."""
        if self.running < self.topic.parallelism or self._pending:
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
            if (stage or self._check_control) and not self.stopping:
                self._check_control = False
                await self._obey_control()
            claiming = not self.stopping and not self.paused
            stage = stage and claiming
            demand = self.topic.parallelism - self.running if claiming else 0
            if self._pending or demand > 0 or stage:
                claimed = await self.flush(demand, stage)
                for job in claimed:
                    self.start_job(jobs_tg, job)
            if self.stopping and self.running == 0 and not self._pending:
                return
            await self.wakeup.wait(math.inf if self.stopping else max(0.0, self._next_stage - self.clock()))

    async def _obey_control(self) -> None:
        """Read pause state and cancellations made by other processes; act on them."""
        control = await self._run_db(self.store.control, self.topic.name, list(self._scopes))
        if control.paused != self.paused:
            self.paused = control.paused
            logger.info("topic_%s topic=%s", "paused" if self.paused else "resumed", self.topic.name,
                        extra={"event": "topic_paused" if self.paused else "topic_resumed", "topic": self.topic.name})
        for job_id in control.cancelled:
            self.cancel_job(job_id)

    async def flush(self, demand: int = 0, stage: bool = False) -> list[Job]:
        """Write pending outcomes, stage due jobs when asked, and claim up to ``demand``
        jobs, all in one transaction."""
        finished, self._pending = self._pending, []
        acks: list[Ack] = [f.ack for f in finished]
        try:
            claimed: list[Job] = await self._run_db(
                self.store.ack_and_claim, acks, self.topic.name, demand, self.node, self.clock(), stage
            )
        except BaseException:
            self._pending[:0] = finished  # keep them for the next attempt
            raise
        for item in finished:
            if item.ack.applied:
                item.emit()
            else:
                logger.warning(
                    "job_stale id=%s topic=%s: the job left executing before its %s was written; "
                    "outcome dropped", item.ack.job.id, self.topic.name, item.ack.kind,
                    extra={"event": "job_stale", "topic": self.topic.name, "job_id": item.ack.job.id},
                )
        return claimed

    # -------------------------------------------------------------- jobs

    def start_job(self, jobs_tg: TaskGroup, job: Job) -> None:
        """Run a claimed job as a task of ``jobs_tg``; its outcome joins the pending acks."""
        self.running += 1
        self._idle = anyio.Event() if self.running == 1 else self._idle
        events.emit(events.job_started, self.topic.name, job=job)
        jobs_tg.start_soon(self._run_job, job)

    async def _run_job(self, job: Job) -> None:
        scope = anyio.CancelScope()
        self._scopes[job.id] = scope
        finished: Finished | None = None
        try:
            with scope:
                finished = await self.executor.execute(job)
        finally:
            del self._scopes[job.id]
            if job.id in self._cancelled_elsewhere:
                # Already cancelled in the table: nothing to write, only to announce.
                self._cancelled_elsewhere.discard(job.id)
                events.emit(events.job_cancelled, self.topic.name,
                            job=dataclasses.replace(job, state="cancelled"), reason="cancelled by request",
                            duration=None)
            else:
                if finished is None:  # cancelled by shutdown: put the job back for another run
                    finished = Finished(Ack("release", job), None, job, {"state": "available"}, {})
                self._pending.append(finished)
            self.running -= 1
            if self.running == 0:
                self._idle.set()
            self.wakeup.set()
