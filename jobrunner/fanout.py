"""Several observers of the lifecycle events behind one receiver per signal.

Dispatching an event to a blinker receiver costs more than most observers' own work
(a few additions), so the dashboard and ``/metrics`` share one receiver per signal,
which calls each observer's handler in turn, each isolated like a receiver.
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
    """Connect one receiver per signal that some observer handles; returns the function
    that disconnects them all."""
    connected = []
    for signal in events.ALL_SIGNALS:
        handlers = [h for h in (observer(signal.name) for observer in observers) if h is not None]
        if not handlers:
            continue
        receiver = _receiver(signal.name, tuple(handlers))
        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))

    def disconnect() -> None:
        for signal, receiver in connected:
            signal.disconnect(receiver)
    return disconnect


def _receiver(name: str, handlers: tuple[Handler, ...]) -> Callable[..., None]:
    def receive(sender: Any, **payload: Any) -> None:
        for handler in handlers:
            try:
                handler(sender, payload)
            except Exception:
                logger.exception("observer %r of %s raised", handler, name, extra={"event": "receiver_error"})
    return receive


__all__ = ["Handler", "HandlerFor", "subscribe"]
