"""How an event travels: one log line, then the observers (:func:`tap`) and the blinker
receivers, each isolated; ``async def`` receivers run on the running runner's event loop.

The events themselves (one signal each) are listed in :mod:`jobrunner.events`, which
re-exports everything here: senders and subscribers import that module only.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from anyio.abc import TaskGroup
from blinker import NamedSignal

from .logs import sole_handler
from .loop import EventLoop

if TYPE_CHECKING:
    from .job import Job

logger = logging.getLogger("jobrunner.events")

#: The level of each event's log line (INFO for an event not named here).
_LEVELS: dict[str, int] = {
    "job_inserted": logging.DEBUG,
    "job_started": logging.DEBUG,
    "job_completed": logging.INFO,
    "job_failed": logging.WARNING,
    "job_discarded": logging.ERROR,
    "job_cancelled": logging.INFO,
    "job_snoozed": logging.INFO,
    "job_rescued": logging.WARNING,
    "topic_crashed": logging.ERROR,
    "topic_restarted": logging.WARNING,
}


class AsyncReceiverHost:
    """Runs ``async def`` receivers as tasks of a task group on one event loop.

    A runner installs one while it runs; receivers emitted from other threads are
    handed over to the loop thread.
    """

    def __init__(self, task_group: TaskGroup) -> None:
        self._tg = task_group
        self._loop = EventLoop.current()

    def submit(self, awaitable: Awaitable[Any], name: str) -> None:
        """Schedule ``awaitable`` (a receiver's coroutine) without waiting for it."""
        if not self._loop.call(self._tg.start_soon, _run_receiver, awaitable, name):
            _drop(awaitable, name, "its runner's event loop has finished")


_hosts: list[AsyncReceiverHost] = []


def install_async_host(host: AsyncReceiverHost) -> Callable[[], None]:
    """Make ``host`` run async receivers; returns the function that uninstalls it."""
    _hosts.append(host)
    return lambda: _hosts.remove(host)


async def _run_receiver(awaitable: Awaitable[Any], name: str) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("async receiver of %s raised", name, extra={"event": "receiver_error"})


def _text(value: Any) -> str:
    """``str(value)``, or a placeholder when its ``__str__`` raises (a log line must never fail)."""
    try:
        return f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__}: str() failed>"


def _describe(name: str, sender: Any, payload: dict[str, Any]) -> str:
    job = payload.get("job")
    if job is not None:
        parts = [f"{name} id={job.id} topic={sender} worker={job.worker} attempt={job.attempt}/{job.max_attempts}"]
    else:
        parts = [name, f"node={sender}" if name.startswith("runner_") else f"topic={sender}"]
    for key, value in payload.items():
        if key == "job":
            continue
        if key == "duration" and isinstance(value, float):
            value = f"{value * 1000:.1f}ms"
        else:
            value = _text(value)
        parts.append(f"{key}={value}")
    return " ".join(parts)


class Observed(Protocol):
    """One job event of a claim loop's batch, as batch observers see it (see :func:`tap`)."""

    @property
    def name(self) -> str:
        """The event (``job_started``, ``job_completed``, ...)."""

    @property
    def job(self) -> Job:
        """The job as claimed: before the transition (its id, topic, worker and times)."""

    @property
    def payload(self) -> dict[str, Any]:
        """The event's keywords but ``job`` (``duration``, ``error``, ``will_retry``, ...)."""

    @property
    def snapshot(self) -> Job:
        """The job after the transition (the event's ``job``), made when asked for."""


#: What observes one event: ``observer(name, sender, payload)``.
EventObserver = Callable[[str, Any, dict[str, Any]], None]
#: What observes a claim loop's batch of job events: ``observer(sender, items)``.
BatchObserver = Callable[[Any, Sequence[Observed]], None]

#: In-process observers (metrics, the dashboard): called directly, with no blinker
#: dispatch, since they see every event of a busy runner (see :func:`tap`).
_taps: list[EventObserver] = []
_batch_taps: list[BatchObserver] = []


def tap(observer: EventObserver, batch_observer: BatchObserver) -> Callable[[], None]:
    """Observe every event from now on; returns the function that stops it.

    The job events of the claim loops (starts and outcomes, the bulk of a busy runner's
    events) reach ``batch_observer(sender, items)`` once per batch written, with the job
    snapshots made only if it asks; every other event reaches ``observer(name, sender,
    payload)``, before its receivers. An exception is logged, never raised. For the
    runner's own observers, which must stay cheap per job: users subscribe to the signals.
    """
    _taps.append(observer)
    _batch_taps.append(batch_observer)

    def remove() -> None:
        _taps.remove(observer)
        _batch_taps.remove(batch_observer)
    return remove


def batch_observed() -> bool:
    """True when a batch observer (see :func:`tap`) is installed."""
    return bool(_batch_taps)


def observe_batch(sender: Any, items: Sequence[Observed]) -> None:
    """Give a claim loop's batch of job events to every batch observer, each isolated."""
    for observer in _batch_taps:
        try:
            observer(sender, items)
        except Exception:
            logger.exception("batch observer %r raised", observer, extra={"event": "receiver_error"})


class _Description:
    """An event's log text, built only when a handler formats the record."""

    __slots__ = ("name", "payload", "sender")

    def __init__(self, name: str, sender: Any, payload: dict[str, Any]) -> None:
        self.name, self.sender, self.payload = name, sender, payload

    def __str__(self) -> str:
        return _describe(self.name, self.sender, self.payload)


_LINE = 0  # set below: the line of emit() that logs, for the record's lineno


def wanted(signal: NamedSignal) -> bool:
    """True when emitting ``signal`` would reach a receiver, an observer or a log handler."""
    return bool(signal.receivers) or bool(_taps) or logger.isEnabledFor(_LEVELS.get(signal.name, logging.INFO))


def observed(signal: NamedSignal) -> bool:
    """True when sending ``signal`` would reach a receiver or an observer (:func:`tap`)."""
    return bool(signal.receivers) or bool(_taps)


def received(signal: NamedSignal) -> bool:
    """True when ``signal`` has receivers (what :func:`emit_untapped` sends to)."""
    return bool(signal.receivers)


def logged(signal: NamedSignal) -> bool:
    """True when emitting ``signal`` would write a log record."""
    return logger.isEnabledFor(_LEVELS.get(signal.name, logging.INFO))



def emit(signal: NamedSignal, sender: Any, **payload: Any) -> None:
    """Log one line for the event, then send it to every observer and receiver, each isolated."""
    _log(signal, sender, payload)
    _send(signal, sender, payload, True)


def emit_untapped(signal: NamedSignal, sender: Any, **payload: Any) -> None:
    """:func:`emit` without the per-event observers: for a claim loop's job events, which
    reach the observers in batches (:func:`observe_batch`)."""
    _log(signal, sender, payload)
    _send(signal, sender, payload, False)


def send(signal: NamedSignal, sender: Any, **payload: Any) -> None:
    """Send the event to every observer (:func:`tap`) and receiver, each isolated, without a log line."""
    _send(signal, sender, payload, True)


def send_untapped(signal: NamedSignal, sender: Any, **payload: Any) -> None:
    """:func:`send` without the per-event observers (see :func:`emit_untapped`)."""
    _send(signal, sender, payload, False)


def _log(signal: NamedSignal, sender: Any, payload: dict[str, Any]) -> None:
    name = signal.name
    level = _LEVELS.get(name, logging.INFO)
    if not logger.isEnabledFor(level):
        return
    handler = sole_handler(logger, level)
    if handler is not None:  # the daemon's own handler alone: the line without a record
        handler.write_line(level, logger.name, _describe(name, sender, payload))
        return
    job = payload.get("job")
    # makeRecord + handle: what logger.log does, minus the search of the stack for
    # the caller (always this line) that costs as much as the rest of the record.
    record = logger.makeRecord(logger.name, level, __file__, _LINE, "%s", (_Description(name, sender, payload),),
                               None, "emit", {"event": name, "topic": sender, "job_id": getattr(job, "id", None)})
    logger.handle(record)


def _send(signal: NamedSignal, sender: Any, payload: dict[str, Any], tapped: bool) -> None:
    name = signal.name
    if tapped:
        for observer in _taps:
            try:
                observer(name, sender, payload)
            except Exception:
                logger.exception("observer %r of %s raised", observer, name, extra={"event": "receiver_error"})
    if not signal.receivers:
        return
    for receiver in signal.receivers_for(sender):
        try:
            outcome = receiver(sender, **payload)
        except Exception:
            logger.exception("receiver %r of %s raised", receiver, name, extra={"event": "receiver_error"})
            continue
        if outcome is not None and inspect.isawaitable(outcome):
            if _hosts:
                _hosts[-1].submit(outcome, name)
            else:
                _drop(outcome, f"{receiver!r} of {name}", "no runner is running")


def _drop(awaitable: Awaitable[Any], what: str, why: str) -> None:
    """Close an async receiver's coroutine that will never run, and say so."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    logger.warning("async receiver %s dropped: %s", what, why, extra={"event": "receiver_error"})


_LINE = _log.__code__.co_firstlineno


__all__ = [
    "AsyncReceiverHost", "BatchObserver", "EventObserver", "Observed", "batch_observed", "emit", "emit_untapped",
    "install_async_host", "logged", "logger", "observe_batch", "observed", "received", "send", "send_untapped", "tap",
    "wanted",
]
