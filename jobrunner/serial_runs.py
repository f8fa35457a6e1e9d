"""Keeps the executions of one job on this node from overlapping.

A node can claim a job again while an earlier execution of it still runs here: the job
was cancelled and retried from elsewhere, or lost (rescued, retried) and claimed again,
or it timed out and came back after its backoff. The earlier execution has been told to
stop, but stopping takes a moment or longer: an ``async def perform`` sees its
cancellation at its next ``await`` and then runs its ``finally`` blocks; the thread of a
plain ``def perform`` cannot be interrupted at all and runs until it returns.

So the later execution waits for the earlier one, and for its thread, before it starts.
The wait counts against the worker's ``timeout``: when the earlier one is still running
after that long, the later one starts anyway and says so (``job_overlapping``), so that a
thread that never returns cannot hold its job ``executing`` on this node forever.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from .job import Job
from .threads import ThreadCall

if TYPE_CHECKING:
    from .slots import Execution

logger = logging.getLogger("jobrunner.producer")

#: Threads remembered after their execution ended are pruned of finished ones at this count.
LINGERING_PRUNE_AT = 64


class SerialRuns:
    """The executions of a topic's jobs that may still run after they were stopped.

    ``patience(job)`` bounds how long a later execution waits (the worker's timeout;
    None: no bound); ``new_event`` makes the events it waits on.
    """

    def __init__(self, topic: str, patience: Callable[[Job], float | None],
                 new_event: Callable[[], anyio.Event]) -> None:
        self.topic = topic
        self._patience = patience
        self._new_event = new_event
        #: Executions abandoned (their job lost) whose task has not ended yet, by job id.
        self._unwinding: dict[int, Execution] = {}
        #: Threads of plain ``def perform`` still running after their execution ended, by job id.
        self._lingering: dict[int, ThreadCall] = {}

    def link(self, execution: Execution) -> None:
        """Make a new execution wait for what still runs of its job here, if anything."""
        job_id = execution.job.id
        previous = self._unwinding.get(job_id) if self._unwinding else None
        if previous is not None:
            if previous.finished is None:
                previous.finished = self._new_event()
            execution.after = previous
        thread = self._lingering.pop(job_id, None) if self._lingering else None
        if thread is not None and not thread.done:
            execution.after_thread = thread

    def lost(self, execution: Execution) -> None:
        """``execution`` was abandoned: remember it until it has unwound."""
        earlier = execution.after
        if earlier is None:
            self._unwinding[execution.job.id] = execution
        elif earlier.finished is not None and not earlier.finished.is_set():
            # It never started: only the execution it was waiting for may still be unwinding.
            self._unwinding[execution.job.id] = earlier

    def ended(self, execution: Execution) -> None:
        """``execution`` has ended: release what waits for it; remember a thread that runs on
        (its own, or one it was still waiting for)."""
        job_id = execution.job.id
        if self._unwinding.get(job_id) is execution:
            del self._unwinding[job_id]
        for thread in (execution.thread, execution.after_thread):
            if thread is not None and not thread.done:
                self._linger(job_id, thread)
                break
        if execution.finished is not None:
            execution.finished.set()

    async def wait(self, execution: Execution) -> None:
        """Until what ran of this job before ``execution`` has ended (bounded: see the
        module docstring)."""
        job = execution.job
        limit = self._patience(job)
        with anyio.move_on_after(math.inf if limit is None else limit) as bound:
            previous = execution.after
            if previous is not None:
                assert previous.finished is not None  # made when this execution was linked to it
                await previous.finished.wait()
                # Its own thread, or the one it was itself still waiting for when it ended.
                for thread in (previous.thread, previous.after_thread):
                    if thread is not None:
                        await thread.wait_done()
                execution.after = None
            thread = execution.after_thread
            if thread is not None:
                logger.info(
                    "job_waiting id=%s topic=%s attempt=%s: the thread of its previous execution still runs; "
                    "this one starts when it returns", job.id, self.topic, job.attempt,
                    extra={"event": "job_waiting", "topic": self.topic, "job_id": job.id},
                )
                await thread.wait_done()
                execution.after_thread = None
        if bound.cancelled_caught:
            logger.warning(
                "job_overlapping id=%s topic=%s attempt=%s: its previous execution still runs after %gs (the "
                "worker's timeout); starting this one anyway", job.id, self.topic, job.attempt, limit,
                extra={"event": "job_overlapping", "topic": self.topic, "job_id": job.id},
            )

    def _linger(self, job_id: int, thread: ThreadCall) -> None:
        if len(self._lingering) >= LINGERING_PRUNE_AT:
            self._lingering = {k: t for k, t in self._lingering.items() if not t.done}
        self._lingering[job_id] = thread


__all__ = ["LINGERING_PRUNE_AT", "SerialRuns"]
