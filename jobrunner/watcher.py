"""Noticing commits by other processes, so their inserts start without waiting for a poll.

A plain thread checks the database's files every ``interval`` seconds and only wakes
the event loop when they changed: an idle runner costs one cheap check per interval
instead of an event-loop wake-up per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from .loop import EventLoop
from .storage.sqlite import ChangeProbe

logger = logging.getLogger("jobrunner.watcher")

#: Longest a stop waits for the watcher thread, whatever the interval (seconds).
STOP_CHECK = 0.1


class CommitWatcher:
    """Calls ``on_change`` in the event loop whenever someone commits to the database."""

    def __init__(self, probe: ChangeProbe, interval: float, on_change: Callable[[], None]) -> None:
        self.probe = probe
        self.interval = interval
        self.on_change = on_change

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self._watch, args=(stop, EventLoop.current()), name="jobrunner-commit-watcher", daemon=True
        )
        thread.start()
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            stop.set()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(thread.join)
            self.probe.close()

    def _pause(self, stop: threading.Event) -> bool:
        """Sleep one interval, in steps short enough that a stop never waits long; True if stopped.

        A plain sleep costs less than ``Event.wait`` (which allocates a lock per call) at
        100 wake-ups a second; the steps bound how long shutdown waits whatever the interval.
        """
        remaining = self.interval
        while remaining > 0 and not stop.is_set():
            step = min(remaining, STOP_CHECK)
            time.sleep(step)
            remaining -= step
        return stop.is_set()

    def _watch(self, stop: threading.Event, loop: EventLoop) -> None:
        try:
            last = self.probe.version()
            while not stop.is_set():
                if self._pause(stop):
                    return
                current = self.probe.version()
                if current != last:
                    last = current
                    if not loop.call(self.on_change):
                        return  # the event loop is gone: nothing left to wake
        except Exception:
            logger.exception("commit watcher stopped; other processes' jobs now wait for the poll",
                             extra={"event": "watcher_error"})
