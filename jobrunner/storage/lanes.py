"""The threads the storage runs in: the hop from the event loop to the database and back.

Every storage call leaves the event loop for a thread and comes back with its result:
the claim loop makes that hop once per transaction, so its cost is paid per batch of
jobs. ``anyio.to_thread.run_sync`` costs about 104 µs of event-loop CPU per call on a
2-core VM with asyncio (a capacity limiter, run-variable look-ups, cancel scopes); a
:class:`Lane` costs about 72 µs, most of it the two wake-ups: a queue of calls served in
order by a few threads, and one hand-back to the loop (see :func:`jobrunner.loop.completion`).

Like ``to_thread.run_sync``, a call is never abandoned: a task cancelled while its call
runs gets the cancellation once the call has returned, so a transaction that committed
is never lost to its caller; and like it, a call is a cancellation point before it is queued.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from ..loop import completion

logger = logging.getLogger("jobrunner.store")

T = TypeVar("T")

#: Seconds an idle thread of a lane waits for work before it ends (a later call starts
#: another): idle runners and the many short-lived ones of a test suite keep no threads.
IDLE_SECONDS = 10.0


class _Call(Generic[T]):
    """One call waiting for, or run by, a thread of a lane."""

    __slots__ = ("context", "done", "error", "fn", "value")

    def __init__(self, fn: Callable[[], T], done: Callable[[], None]) -> None:
        self.fn = fn
        self.context = contextvars.copy_context()
        self.done = done
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Run in a lane's thread, then wake the waiting task."""
        try:
            self.value = self.context.run(self.fn)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, whatever it is
            self.error = exc
        try:
            self.done()
        except Exception:  # its event loop has ended: nobody waits for this result any more
            logger.warning("a storage call finished after its event loop had ended", exc_info=True,
                           extra={"event": "storage_call_orphaned"})


class Lane:
    """Up to ``threads`` threads running blocking calls in the order they came.

    One thread makes a strict queue (the writes on SQLite, which takes one writer anyway);
    more serve calls side by side. Threads start on demand and end after
    :data:`IDLE_SECONDS` without work.
    """

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.threads = threads
        self._queue: queue.SimpleQueue[_Call[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._alive = 0

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in a thread of this lane; its result or its exception.

        A cancellation point before the call is queued (a cancelled task queues nothing,
        and other tasks run first), none after, as with ``anyio.to_thread.run_sync``."""
        await anyio.lowlevel.checkpoint()
        wait, done = completion()
        call = _Call(fn, done)
        self._submit(call)
        with anyio.CancelScope(shield=True):  # never abandon a call: it may have written
            await wait()
        if call.error is not None:
            error, call.error = call.error, None  # no reference cycle through the traceback
            raise error
        return call.value  # type: ignore[return-value]  # set by run() when error is None

    def _submit(self, call: _Call[Any]) -> None:
        with self._lock:
            self._queue.put(call)
            if self._alive < self.threads:
                self._alive += 1
                threading.Thread(target=self._serve, name=f"jobrunner-{self.name}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                call = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:  # submit() holds it while it queues and counts threads
                    if self._queue.empty():
                        self._alive -= 1
                        return
                continue
            call.run()


__all__ = ["IDLE_SECONDS", "Lane"]
