"""Several observers of the lifecycle events behind one tap (:func:`jobrunner.events.tap`).

The dashboard and ``/metrics`` see every event of a busy runner, so they skip blinker's
dispatch (which costs more than their own work): one tap looks up each event's handlers
by name, and each handler is isolated like a receiver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import events

logger = logging.getLogger("jobrunner.events")

#: What an observer does with one event: ``handler(sender, payload)``.
Handler = Callable[[Any, dict[str, Any]], None]
#: Gives an observer's handler for the signal of that name, or None when it ignores it.
HandlerFor = Callable[[str], Handler | None]


class Observer(Protocol):
    """What :func:`subscribe` takes: a handler per signal, and the batches of job events."""

    def handler(self, name: str) -> Handler | None:
        """What to do with each event of the signal ``name`` (None: ignore them)."""

    def observe_batch(self, sender: Any, items: Sequence[events.Observed]) -> None:
        """Take a claim loop's batch of job events (see :func:`jobrunner.events.tap`)."""


def subscribe(*observers: Observer) -> Callable[[], None]:
    """Give the observers every event from now on (a claim loop's job events in batches,
    the others one by one to their handlers); returns the function that stops it."""
    table: dict[str, tuple[Handler, ...]] = {}
    for signal in events.ALL_SIGNALS:
        handlers = tuple(h for h in (observer.handler(signal.name) for observer in observers) if h is not None)
        if handlers:
            table[signal.name] = handlers

    def observe(name: str, sender: Any, payload: dict[str, Any]) -> None:
        for handler in table.get(name, ()):
            try:
                handler(sender, payload)
            except Exception:
                logger.exception("observer %r of %s raised", handler, name, extra={"event": "receiver_error"})

    def observe_batch(sender: Any, items: Sequence[events.Observed]) -> None:
        for observer in observers:
            try:
                observer.observe_batch(sender, items)
            except Exception:
                logger.exception("observer %r raised on a batch", observer, extra={"event": "receiver_error"})

    return events.tap(observe, observe_batch)


__all__ = ["Handler", "HandlerFor", "Observer", "subscribe"]
