"""The transitions that end one execution of a job, each named once.

A :class:`Transition` is what the executor decides, what the storage writes (one
conditional UPDATE per transition, see :mod:`jobrunner.storage.statements`), what the
throughput summary counts, and which event is sent after the write: all four read it
from here.
"""

from __future__ import annotations

import enum

from .job import JobState


class Transition(enum.StrEnum):
    """How one execution of a job ends, and where that leaves the job."""

    #: ``perform`` returned: the job is done.
    COMPLETE = "complete"
    #: ``perform`` failed with attempts left: run it again later.
    RETRY = "retry"
    #: ``perform`` failed for the last time, or its worker cannot run: give up.
    DISCARD = "discard"
    #: ``perform`` asked to cancel the job (or was cancelled while running).
    CANCEL = "cancel"
    #: ``perform`` asked to run again later; this attempt does not count.
    SNOOZE = "snooze"
    #: Shutdown interrupted ``perform``: the job goes back to the queue, attempt uncounted.
    RELEASE = "release"

    @property
    def state(self) -> JobState:
        """The state the job is in after this transition."""
        return _TARGETS[self][0]

    @property
    def event(self) -> str | None:
        """The name of the event sent after the write (None: a release is not announced)."""
        return _TARGETS[self][1]

    @property
    def stamp(self) -> str | None:
        """The column that records the transition's time (None: no time is written)."""
        return _TARGETS[self][2]

    @property
    def uncounts(self) -> bool:
        """True when the attempt that ends this way is not counted (snooze, release)."""
        return self in (Transition.SNOOZE, Transition.RELEASE)


_TARGETS: dict[Transition, tuple[JobState, str | None, str | None]] = {
    Transition.COMPLETE: (JobState.COMPLETED, "job_completed", "completed_at"),
    Transition.RETRY: (JobState.RETRYABLE, "job_failed", "scheduled_at"),
    Transition.DISCARD: (JobState.DISCARDED, "job_discarded", "discarded_at"),
    Transition.CANCEL: (JobState.CANCELLED, "job_cancelled", "cancelled_at"),
    Transition.SNOOZE: (JobState.SCHEDULED, "job_snoozed", "scheduled_at"),
    Transition.RELEASE: (JobState.AVAILABLE, None, None),
}

__all__ = ["Transition"]
