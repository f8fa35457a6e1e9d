"""Recording and awaiting jobrunner events in tests.

Both ways of waiting return the same :class:`RecordedEvent`:

- :class:`EventRecorder` records every event while connected;
  ``await recorder.wait_for("job_completed", predicate)`` also finds events recorded
  before the call.
- :class:`wait_for` subscribes to one signal when called; ``await`` it for the next
  matching event.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import anyio
from blinker import NamedSignal

from . import events
from .job import Job
from .loop import EventLoop

#: A test on an event's keyword payload (``job=``, ``error=``, ``result=``...).
Predicate = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One event: what :meth:`EventRecorder.wait_for`, :class:`wait_for` and the
    recorder's lists give.

    ``name`` is the signal's name (``"job_completed"``), ``sender`` the topic (the node
    id for ``runner_*`` events), ``payload`` the keyword arguments it was sent with
    (``job``, ``duration``, ``error``, ``result``...), and ``job`` is ``payload["job"]``
    (None for events without a job).
    """

    name: str
    sender: Any
    payload: dict[str, Any]

    @property
    def job(self) -> Job | None:
        """The job snapshot, for job events."""
        return self.payload.get("job")


class _LoopNotifier:
    """Wakes a task of the loop it was made in, from any thread."""

    def __init__(self) -> None:
        self._loop = EventLoop.current()
        self.event = anyio.Event()

    def notify(self) -> None:
        self._loop.call(self.event.set)


class EventRecorder:
    """Records every jobrunner event while connected (use as a context manager).

    ``with EventRecorder() as rec: ...`` then ``rec.names()``, ``rec.of("job_failed")``,
    or ``await rec.wait_for("job_completed", lambda p: p["job"].id == 3)``, which
    also sees events recorded before the call.
    """

    def __init__(self, topic: str | None = None) -> None:
        self.topic = topic
        self.events: list[RecordedEvent] = []
        self._waiters: list[tuple[str, Predicate, _LoopNotifier, list[RecordedEvent]]] = []
        self._lock = threading.Lock()
        self._receivers: list[tuple[NamedSignal, Callable[..., None]]] = []

    def __enter__(self) -> EventRecorder:
        # blinker does not tell a receiver which signal called it: one receiver per signal.
        self._receivers = [(s, self._receiver_for(s.name)) for s in events.ALL_SIGNALS]
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)
        return self

    def __exit__(self, *exc: object) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)

    def _receiver_for(self, name: str) -> Callable[..., None]:
        def receive(sender: Any, **payload: Any) -> None:
            if self.topic is not None and sender != self.topic and not name.startswith("runner_"):
                return
            event = RecordedEvent(name, sender, payload)
            with self._lock:
                self.events.append(event)
                waiters = list(self._waiters)
            for wanted, predicate, notifier, box in waiters:
                if wanted == name and not box and predicate(payload):
                    box.append(event)
                    notifier.notify()
        return receive

    def names(self) -> list[str]:
        """The names of the recorded events, in order."""
        return [e.name for e in self.events]

    def of(self, name: str) -> list[RecordedEvent]:
        """The recorded events called ``name``."""
        return [e for e in self.events if e.name == name]

    def counts(self) -> collections.Counter[str]:
        """How many events of each name were recorded."""
        return collections.Counter(self.names())

    async def wait_for(
        self, name: str, predicate: Predicate | None = None, timeout: float = 10.0
    ) -> RecordedEvent:
        """The first recorded event ``name`` whose payload satisfies ``predicate``,
        waiting up to ``timeout`` seconds for it (TimeoutError after)."""
        predicate = predicate or (lambda payload: True)
        notifier = _LoopNotifier()
        box: list[RecordedEvent] = []
        with self._lock:
            for event in self.events:
                if event.name == name and predicate(event.payload):
                    return event
            entry = (name, predicate, notifier, box)
            self._waiters.append(entry)
        try:
            with anyio.fail_after(timeout):
                await notifier.event.wait()
        except TimeoutError:
            raise TimeoutError(f"no {name} event matching the predicate within {timeout:g}s; "
                               f"seen: {self.names()[-20:]}") from None
        finally:
            with self._lock:
                self._waiters.remove(entry)
        return box[0]

    async def wait_count(self, name: str, count: int, timeout: float = 10.0) -> list[RecordedEvent]:
        """Wait until ``count`` events called ``name`` were recorded; return them."""
        notifier = _LoopNotifier()

        def enough(payload: dict[str, Any]) -> bool:
            return len(self.of(name)) >= count

        if len(self.of(name)) >= count:
            return self.of(name)[:count]
        box: list[RecordedEvent] = []
        entry = (name, enough, notifier, box)
        with self._lock:
            self._waiters.append(entry)
        try:
            if len(self.of(name)) < count:
                with anyio.fail_after(timeout):
                    await notifier.event.wait()
        except TimeoutError:
            raise TimeoutError(
                f"saw {len(self.of(name))} {name} events, wanted {count}, within {timeout:g}s"
            ) from None
        finally:
            with self._lock:
                self._waiters.remove(entry)
        return self.of(name)[:count]


class wait_for:  # noqa: N801 - used like a function: ``await wait_for(...)``
    """Wait for the next ``signal`` whose payload satisfies ``predicate``; the result
    is a :class:`RecordedEvent`.

    Subscribes when called, so ``w = wait_for(events.job_completed, pred)``, then the
    action, then ``event = await w`` cannot miss the event. ``await wait_for(...)``
    also works when the event comes later. ``sender`` keeps only events of that topic.
    Raises TimeoutError after ``timeout`` seconds.
    """

    def __init__(self, signal: NamedSignal, predicate: Predicate | None = None, timeout: float = 10.0,
                 sender: Any = None) -> None:
        self.signal = signal
        self.timeout = timeout
        self._predicate = predicate or (lambda payload: True)
        self._sender = sender
        self._notifier = _LoopNotifier()
        self._event: RecordedEvent | None = None
        signal.connect(self._receive, weak=False)

    def _receive(self, sender: Any, **payload: Any) -> None:
        if self._event is not None or (self._sender is not None and sender != self._sender):
            return
        if self._predicate(payload):
            self._event = RecordedEvent(self.signal.name, sender, payload)
            self._notifier.notify()

    def __await__(self) -> Generator[Any, None, RecordedEvent]:
        return self._wait().__await__()

    async def _wait(self) -> RecordedEvent:
        try:
            with anyio.fail_after(self.timeout):
                await self._notifier.event.wait()
        except TimeoutError:
            raise TimeoutError(f"no {self.signal.name} event matched within {self.timeout:g}s") from None
        finally:
            self.signal.disconnect(self._receive)
        assert self._event is not None
        return self._event

__all__ = ["EventRecorder", "Predicate", "RecordedEvent", "wait_for"]
