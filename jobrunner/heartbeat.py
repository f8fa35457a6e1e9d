"""This node's heartbeat, written from a thread of its own.

A node is alive for the others while its heartbeat is younger than ``rescue_after``.
Were the heartbeat written by the event loop through the storage queue, a flood of
user reads (or a slow loop) could delay it until another node declares this one dead
and runs its jobs a second time. The thread writes on its own connection whatever the
loop and the storage queue are doing, but only while the loop shows signs of life: a
loop frozen for half of ``rescue_after`` stops the heartbeat, so its jobs are rescued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import anyio
import anyio.to_thread

logger = logging.getLogger("jobrunner.heartbeat")


class Heartbeat:
    """Writes ``beat()`` every ``interval`` seconds from a thread while the loop is alive.

    Call :meth:`loop_alive` from the event loop at least every ``interval``; when it has
    not been called for ``stale_after`` seconds the thread skips its writes.
    """

    def __init__(self, beat: Callable[[], None], interval: float, stale_after: float) -> None:
        self.beat = beat
        self.interval = interval
        self.stale_after = stale_after
        self._loop_seen = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def loop_alive(self) -> None:
        """Record that the event loop is making progress (cheap; call from the loop)."""
        self._loop_seen = time.monotonic()

    def start(self) -> None:
        """Start the heartbeat thread."""
        self._thread = threading.Thread(target=self._run, name="jobrunner-heartbeat", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread and wait until it has finished its current write."""
        self._stop.set()
        if self._thread is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._thread.join)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if time.monotonic() - self._loop_seen > self.stale_after:
                logger.warning("event loop silent for over %.1fs: heartbeat withheld",
                               self.stale_after, extra={"event": "heartbeat_withheld"})
                continue
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - the next beat retries; rescue_after tolerates misses
                logger.error("heartbeat failed: %s: %s", type(exc).__name__, exc,
                             extra={"event": "heartbeat_failed"})
