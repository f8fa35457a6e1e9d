"""What one execution of ``perform`` came to, and the transition that records it.

The executor (:mod:`jobrunner.executor`) runs a job and hands its outcome here:
:func:`classify` and :func:`classify_error` name what happened (an :class:`OutcomeKind`),
:func:`plan` turns it into the storage ack and the event to send after the write (a
:class:`Finished`). Everything here is plain computation: no I/O, no event loop.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from typing import Any

from . import events
from .backoff import backoff_delay, worker_backoff
from .config import TopicSettings
from .job import LATEST, Job, iso
from .payload import storable
from .storage.records import Ack
from .threads import ThreadCall
from .tracebacks import format_job_error
from .transitions import Transition
from .worker import Cancel, Snooze, Worker

logger = logging.getLogger("jobrunner.executor")


class OutcomeKind(enum.StrEnum):
    """How one execution of ``perform`` ended, before the retry rules decide the transition."""

    COMPLETED = "completed"  #: returned a value
    SNOOZED = "snoozed"  #: returned Snooze
    CANCELLED = "cancelled"  #: returned Cancel
    FAILED = "failed"  #: raised (or timed out): retried while attempts are left
    UNRUNNABLE = "unrunnable"  #: cannot run at all (worker, arguments): discarded at once


_TRACEBACK_LIMIT = 8000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one execution of ``perform`` came to.

    ``kind`` is ``completed`` (``result`` set), ``snoozed`` (``seconds``),
    ``cancelled`` (``reason``), ``failed`` (``error`` and ``traceback``) or
    ``unrunnable`` (the worker cannot be loaded: ``error``).
    """

    kind: OutcomeKind
    result: Any = None
    seconds: float = 0.0
    reason: str | None = None
    error: BaseException | None = None
    traceback: str | None = None


def classify(value: Any) -> Outcome:
    """The outcome of a ``perform`` that returned ``value``."""
    if isinstance(value, Snooze):
        return Outcome(OutcomeKind.SNOOZED, seconds=float(value.seconds))
    if isinstance(value, Cancel):
        return Outcome(OutcomeKind.CANCELLED, reason=value.reason)
    return Outcome(OutcomeKind.COMPLETED, result=value)


def classify_error(error: BaseException) -> Outcome:
    """The outcome of a ``perform`` that raised ``error``."""
    text = format_job_error(error)
    if len(text) > _TRACEBACK_LIMIT:
        text = "…" + text[-_TRACEBACK_LIMIT:]
    return Outcome(OutcomeKind.FAILED, error=error, traceback=text)


def describe_error(error: BaseException) -> str:
    """``Type: message`` for an exception (even one whose ``__str__`` raises)."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the job
        message = "<str() of the exception failed>"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def encode_result(value: Any) -> str | None:
    """The JSON text stored as a job's result; None when the value is not JSON."""
    if value is None or not storable(value):  # too deep, lone surrogates: see jobrunner.payload
        return None
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # not JSON, or nested too deep to encode
        return None


@dataclass(slots=True)
class Finished:
    """An execution waiting to be written: the ack plus what its event will say.

    The event's job snapshot (``job`` with ``changes`` applied) is built only when
    someone listens, which keeps the hot path short.
    """

    ack: Ack
    job: Job
    changes: dict[str, Any]
    payload: dict[str, Any]
    #: A plain ``def perform`` still running in its thread after its job timed out: the
    #: job's slot stays taken until it returns, so parallelism bounds threads too.
    overrun: ThreadCall | None = None

    @property
    def transition(self) -> Transition:
        """How the execution ended."""
        return self.ack.transition

    @property
    def name(self) -> str:
        """The event this transition sends ("" for a put-back at shutdown, which sends none)."""
        return self.ack.transition.event or ""

    @property
    def snapshot(self) -> Job:
        """The job as it is after this transition."""
        return self.job.evolve(state=self.ack.transition.state, **self.changes)

    def emit(self, log_success: bool = True) -> None:
        """Send the event to its receivers and log it (call only after the ack was
        written); ``log_success=False`` leaves out the log line of a job that went well
        (see ``[runner] log_jobs``). The runner's own observers get it in a batch
        (:func:`jobrunner.events.observe_batch`), not from here."""
        name = self.ack.transition.event
        if name is None:  # put back at shutdown: no lifecycle transition to announce
            logger.info(
                "job_released id=%s topic=%s: put back as available", self.job.id, self.job.topic,
                extra={"event": "job_released", "topic": self.job.topic, "job_id": self.job.id},
            )
            return
        signal = events.signal_named(name)
        if not log_success and name in events.SUCCESSES:
            if events.received(signal):
                events.send_untapped(signal, self.job.topic, job=self.snapshot, **self.payload)
        elif events.received(signal):
            events.emit_untapped(signal, self.job.topic, job=self.snapshot, **self.payload)
        elif events.logged(signal):
            # Only the log line: it names the job's id, worker and attempt, which the
            # job before the transition already has unless the attempt changed.
            job = self.snapshot if "attempt" in self.changes else self.job
            events.emit_untapped(signal, self.job.topic, job=job, **self.payload)


def released(job: Job) -> Finished:
    """The execution of ``job`` interrupted by shutdown: the job goes back, unannounced."""
    return Finished(Ack(Transition.RELEASE, job), job, {}, {})


def plan(
    job: Job,
    outcome: Outcome,
    topic: TopicSettings,
    now: float,
    worker: Worker | None = None,
    duration: float = 0.0,
) -> Finished:
    """The transition for ``job`` after ``outcome``: the ack to write and the event to send."""
    kind = outcome.kind
    if kind == OutcomeKind.COMPLETED:
        result = encode_result(outcome.result)
        stored = None if result is None else outcome.result
        return Finished(Ack(Transition.COMPLETE, job, at=now, result=result), job,
                        {"completed_at": now, "result": stored},
                        {"duration": duration, "result": stored})
    if kind == OutcomeKind.SNOOZED:
        until = min(now + outcome.seconds, max(now, LATEST))
        return Finished(Ack(Transition.SNOOZE, job, at=until), job,
                        {"scheduled_at": until, "attempt": job.attempt - 1},
                        {"duration": duration, "seconds": outcome.seconds})
    if kind == OutcomeKind.CANCELLED:
        entry = {"attempt": job.attempt, "at": iso(now), "error": f"cancelled: {outcome.reason}", "traceback": None}
        errors = [*job.errors, entry]
        return Finished(Ack(Transition.CANCEL, job, at=now, errors=json.dumps(errors)), job,
                        {"cancelled_at": now, "errors": errors},
                        {"duration": duration, "reason": outcome.reason})
    # failed or unrunnable
    error = outcome.error
    message = describe_error(error) if error is not None else "unknown error"
    entry = {"attempt": job.attempt, "at": iso(now), "error": message, "traceback": outcome.traceback}
    notes = [outcome.reason] if outcome.reason else []
    retry_at = None
    if kind == OutcomeKind.FAILED and job.attempt < job.max_attempts:
        delay, problem = worker_backoff(worker, job)
        if problem is not None:
            notes.append(problem)
        if delay is None:
            delay = backoff_delay(topic.backoff, job.attempt)
        # Run times must stay renderable (year 9999 at most): a huge backoff is clamped.
        retry_at = min(now + max(0.0, delay), max(now, LATEST))
    if notes:
        entry["note"] = "; ".join(notes)
    errors = [*job.errors, entry]
    encoded = json.dumps(errors, default=str)
    if retry_at is not None:
        return Finished(Ack(Transition.RETRY, job, at=retry_at, errors=encoded), job,
                        {"scheduled_at": retry_at, "errors": errors},
                        {"duration": duration, "error": error, "will_retry": True})
    return Finished(Ack(Transition.DISCARD, job, at=now, errors=encoded), job,
                    {"discarded_at": now, "errors": errors},
                    {"duration": duration, "error": error})


__all__ = ["Finished", "Outcome", "OutcomeKind", "classify", "classify_error", "describe_error",
           "encode_result", "plan", "released"]
