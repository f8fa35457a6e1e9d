"""What a topic's claim loop wrote, announced: events, log lines, batch observers, tallies.

Outcomes are announced only after their transaction committed, and in the order written.
The claim loop hands them over as it writes them; with ``defer`` they wait for the
announcer's task (:meth:`Announcer.run`), which sends them while the loop's next
transaction runs in the database thread instead of before it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
import anyio.lowlevel

from . import events
from .job import Job
from .outcomes import Finished
from .summary import new_tally

logger = logging.getLogger("jobrunner.producer")


class Started:
    """A job start as batch observers see it (:class:`jobrunner.events.Observed`)."""

    __slots__ = ("job",)
    name = "job_started"
    payload: dict[str, object] = {}  # noqa: RUF012 - shared and never written: a start has no keywords

    def __init__(self, job: Job) -> None:
        self.job = job

    @property
    def snapshot(self) -> Job:
        """The job as claimed (a start changes nothing more)."""
        return self.job


class Announcer:
    """Announces the starts and outcomes of one topic's jobs, and counts them.

    ``log_jobs`` false leaves out the log lines of jobs that went well (``[runner]
    log_jobs``); ``tally`` counts starts and outcomes since :meth:`take_tally`.
    """

    def __init__(self, topic: str, *, log_jobs: bool = True) -> None:
        self.topic = topic
        self.log_jobs = log_jobs
        self.tally = new_tally()
        #: Each entry: outcomes written (with whether each applied), or jobs started (their
        #: outcomes empty). Announced in this order, which is the order of the writes.
        self._queue: list[tuple[list[Finished], Sequence[bool], list[Job]]] = []
        #: True while :meth:`run` runs: only then may announcements wait for it.
        self.running = False
        self._wake = anyio.Event()

    def take_tally(self) -> dict[str, int]:
        """Jobs started and outcomes written (by ack kind) since the last call."""
        tally, self.tally = self.tally, new_tally()
        return tally

    def outcomes(self, finished: list[Finished], applied: Sequence[bool], *, defer: bool = False) -> None:
        """Announce outcomes just written (``applied``: whether each was), now or, with
        ``defer``, from the task."""
        if defer and self.running:
            self._queue.append((finished, applied, []))
            self._wake.set()
        else:
            self.flush()
            self._announce(finished, applied)

    def started(self, jobs: list[Job], *, defer: bool = False) -> None:
        """Count and announce jobs just started, after every outcome written before them."""
        self.tally["start"] += len(jobs)
        if not jobs or not events.wanted(events.job_started):
            return
        if defer and self.running:
            self._queue.append(([], (), jobs))
            self._wake.set()
        else:
            self.flush()
            self._announce_started(jobs)

    def flush(self) -> None:
        """Announce everything written but not yet announced, in the order written."""
        while self._queue:
            finished, applied, started = self._queue.pop(0)
            self._announce(finished, applied)
            self._announce_started(started)

    async def run(self) -> None:
        """Announce what is handed over with ``defer``, until cancelled (then the rest)."""
        self.running = True
        try:
            while True:
                await self._wake.wait()
                self._wake = type(self._wake)()
                # Let the claim loop, woken by the same jobs, hand its next transaction
                # to the database thread first: the announcements then overlap with it.
                await anyio.lowlevel.checkpoint()
                self.flush()
        finally:
            self.running = False
            self.flush()

    def _announce(self, finished: list[Finished], applied: Sequence[bool]) -> None:
        """Count and announce outcomes; warn about those that were stale."""
        tally = self.tally
        observed: list[Finished] = []
        for item, written in zip(finished, applied, strict=True):
            if written:
                tally[item.ack.transition] += 1
                item.emit(self.log_jobs)
                if item.ack.transition.event is not None:
                    observed.append(item)
            else:
                logger.warning(
                    "job_stale id=%s topic=%s: the job left executing before its %s was written; "
                    "outcome dropped", item.ack.job.id, self.topic, item.ack.transition,
                    extra={"event": "job_stale", "topic": self.topic, "job_id": item.ack.job.id},
                )
        if observed and events.batch_observed():
            events.observe_batch(self.topic, observed)

    def _announce_started(self, jobs: list[Job]) -> None:
        signal = events.job_started
        if events.received(signal) or events.logged(signal):
            for job in jobs:
                events.emit_untapped(signal, self.topic, job=job)
        if jobs and events.batch_observed():
            events.observe_batch(self.topic, [Started(job) for job in jobs])


__all__ = ["Announcer", "Started"]
