"""Several observers of the lifecycle events behind one tap (:func:`jobrunner.events.tap`).

The dashboard and ``/metrics`` see every event of a busy runner, so they skip blinker's
dispatch (which costs more than their own work): one tap looks up each event's handlers
by name, and each handler is isolated like a receiver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import events

logger = logging.getLogger("jobrunner.events")

#: What an observer does with one event: ``handler(sender, payload)``.
Handler = Callable[[Any, dict[str, Any]], None]
#: Gives an observer's handler for the signal of that name, or None when it ignores it.
HandlerFor = Callable[[str], Handler | None]


def subscribe(*observers: HandlerFor) -> Callable[[], None]:
    """Call the observers' handlers for every event from now on; returns the function
    that stops it."""
    table: dict[str, tuple[Handler, ...]] = {}
    for signal in events.ALL_SIGNALS:
        handlers = tuple(h for h in (observer(signal.name) for observer in observers) if h is not None)
        if handlers:
            table[signal.name] = handlers

    def observe(name: str, sender: Any, payload: dict[str, Any]) -> None:
        for handler in table.get(name, ()):
            try:
                handler(sender, payload)
            except Exception:
                logger.exception("observer %r of %s raised", handler, name, extra={"event": "receiver_error"})

    return events.tap(observe)


__all__ = ["Handler", "HandlerFor", "subscribe"]
