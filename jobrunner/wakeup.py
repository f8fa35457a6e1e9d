"""A resettable wake-up signal that may be set from any thread."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import anyio
import anyio.from_thread
import anyio.lowlevel


class Wakeup:
    """Wakes one waiting task; a ``set()`` that arrives while it is busy is not lost.

    Create it inside the event loop that waits on it.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()
        # The backend's own Event class: anyio.Event() looks the backend up on every call.
        self._new_event: Callable[[], anyio.Event] = type(self._event)
        self._thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()

    def set(self) -> None:
        """Wake the waiter (from the loop thread or any other thread)."""
        if threading.get_ident() == self._thread:
            self._event.set()
        else:
            try:
                anyio.from_thread.run_sync(self._event.set, token=self._token)
            except RuntimeError:
                pass  # the loop has already finished: nobody is waiting any more

    async def wait(self, timeout: float = math.inf) -> bool:
        """Wait until set or ``timeout`` seconds pass; True when set. Re-arms itself."""
        if not self._event.is_set():
            with anyio.move_on_after(timeout):
                await self._event.wait()
        was_set = self._event.is_set()
        if was_set:
            self._event = self._new_event()
        return was_set
