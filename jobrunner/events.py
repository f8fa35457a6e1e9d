"""Lifecycle events: one blinker signal per transition, sent with the topic name as sender.

Subscribe with ``jobrunner.events.job_completed.connect(fn, sender="demo")`` (or without
``sender`` for every topic). Job signals carry ``job=`` (a :class:`~jobrunner.Job` snapshot
taken after the transition) and, where relevant, ``duration=`` (seconds spent in
``perform``; for an external topic, from the claim to the conclusion), ``error=`` (the
exception or a message), ``will_retry=``, ``result=``, ``reason=`` and ``seconds=``.
Events are sent after the database write. A receiver that raises is logged and never
harms the runner or the other receivers; an ``async def`` receiver is scheduled on the
running runner's event loop and never blocks workers.

Every event is also logged on the ``jobrunner.events`` logger, one line per event, with
the event name in the record's ``event`` attribute.

This module is the list of events. How they are sent (the log line and its level per
event, observers, receivers, async receivers) is :mod:`jobrunner.event_bus`, re-exported here.
"""

from __future__ import annotations

from blinker import NamedSignal, Namespace

from .event_bus import (
    AsyncReceiverHost,
    BatchObserver,
    EventObserver,
    Observed,
    batch_observed,
    emit,
    emit_untapped,
    install_async_host,
    logged,
    logger,
    observe_batch,
    observed,
    received,
    send,
    send_untapped,
    tap,
    wanted,
)

signals = Namespace()

job_inserted = signals.signal(
    "job_inserted",
    doc="A job was stored. Payload: job; duplicate (True: a unique enqueue matched this existing job instead); "
    "schedule (its name) when a cron schedule inserted it.",
)
job_started = signals.signal("job_started", doc="A job was claimed and perform begins. Payload: job.")
job_completed = signals.signal(
    "job_completed", doc="perform returned a value. Payload: job, duration, result."
)
job_failed = signals.signal(
    "job_failed", doc="perform raised; the job will retry or is discarded. Payload: job, duration, error, will_retry."
)
job_discarded = signals.signal(
    "job_discarded", doc="A job failed for the last time (or cannot run). Payload: job, error, duration."
)
job_cancelled = signals.signal("job_cancelled", doc="A job was cancelled. Payload: job, reason, duration.")
job_snoozed = signals.signal(
    "job_snoozed", doc="perform returned Snooze. Payload: job, seconds, duration."
)
job_rescued = signals.signal(
    "job_rescued", doc="A job left executing by a dead node was put back. Payload: job."
)
topic_started = signals.signal("topic_started", doc="A topic supervisor is claiming jobs. Payload: parallelism.")
topic_stopped = signals.signal("topic_stopped", doc="A topic supervisor stopped. Payload: reason.")
topic_crashed = signals.signal("topic_crashed", doc="A topic's producer raised. Payload: error, restarts.")
topic_restarted = signals.signal("topic_restarted", doc="A crashed producer was restarted. Payload: restarts, delay.")
runner_started = signals.signal("runner_started", doc="Every topic is running. Sender: the node id. Payload: topics.")
runner_stopped = signals.signal("runner_stopped", doc="The runner stopped. Sender: the node id. Payload: topics.")

ALL_SIGNALS: tuple[NamedSignal, ...] = (
    job_inserted,
    job_started,
    job_completed,
    job_failed,
    job_discarded,
    job_cancelled,
    job_snoozed,
    job_rescued,
    topic_started,
    topic_stopped,
    topic_crashed,
    topic_restarted,
    runner_started,
    runner_stopped,
)


def signal_named(name: str) -> NamedSignal:
    """The documented signal called ``name`` (KeyError for any other name)."""
    return signals[name]


#: Events of jobs that went well: ``[runner] log_jobs = false`` leaves out their lines.
SUCCESSES: frozenset[str] = frozenset({"job_completed", "job_snoozed"})


__all__ = [
    "ALL_SIGNALS", "SUCCESSES", "AsyncReceiverHost", "BatchObserver", "EventObserver", "Observed", "batch_observed",
    "emit", "emit_untapped", "install_async_host", "job_cancelled", "job_completed", "job_discarded", "job_failed",
    "job_inserted", "job_rescued", "job_snoozed", "job_started", "logged", "logger", "observe_batch", "observed",
    "received", "runner_started", "runner_stopped", "send", "send_untapped", "signal_named", "signals", "tap",
    "topic_crashed", "topic_restarted", "topic_started", "topic_stopped", "wanted",
]
