"""A resettable wake-up signal that may be set from any thread."""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio

from .loop import EventLoop


class Wakeup:
    """Wakes one waiting task; a ``set()`` that arrives while it is busy is not lost.

    Create it inside the event loop that waits on it.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()
        # The backend's own Event class: anyio.Event() looks the backend up on every call.
        self._new_event: Callable[[], anyio.Event] = type(self._event)
        self._loop = EventLoop.current()

    def set(self) -> None:
        """Wake the waiter (from the loop thread or any other thread; once the loop has
        finished nobody waits, and nothing happens)."""
        self._loop.call(self._event.set)

    async def wait(self, timeout: float = math.inf) -> bool:
        """Wait until set or ``timeout`` seconds pass; True when set. Re-arms itself."""
        if not self._event.is_set():
            with anyio.move_on_after(timeout):
                await self._event.wait()
        was_set = self._event.is_set()
        if was_set:
            self._event = self._new_event()
        return was_set
