"""Calls onto the event-loop thread from any thread: the one place jobrunner makes that hop.

Storage calls, plain ``def perform`` calls, the heartbeat and the commit watcher run in
threads of their own, and blinker receivers run on whichever thread sent the event; the
anyio objects they touch (events, task groups) belong to the loop. :class:`EventLoop`
remembers a loop and runs a function on its thread: at once when already there, else
handed over (anyio's ``from_thread.run_sync``), waiting until it ran.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.from_thread
import anyio.lowlevel


class EventLoop:
    """The event loop running where :meth:`current` was called, reachable from any thread."""

    __slots__ = ("_thread", "_token")

    def __init__(self, thread: int, token: anyio.lowlevel.EventLoopToken) -> None:
        self._thread = thread
        self._token = token

    @classmethod
    def current(cls) -> EventLoop:
        """The running event loop (call it inside the loop: in a task or a sync function it runs)."""
        return cls(threading.get_ident(), anyio.lowlevel.current_token())

    def is_current_thread(self) -> bool:
        """True when called on the loop's own thread."""
        return threading.get_ident() == self._thread

    def call(self, fn: Callable[..., object], *args: Any) -> bool:
        """Run ``fn(*args)`` on the loop's thread and return once it ran.

        Returns False, without calling ``fn``, when called from another thread after the
        loop has finished: whatever it was to wake is gone. Exceptions of ``fn`` reach the
        caller.
        """
        if threading.get_ident() == self._thread:
            fn(*args)
            return True
        ran = False

        def run() -> None:
            nonlocal ran
            ran = True
            fn(*args)

        try:
            anyio.from_thread.run_sync(run, token=self._token)
        except RuntimeError:
            if ran:
                raise  # fn's own error
            return False  # asyncio: "Event loop is closed"; trio: RunFinishedError
        return True


def completion() -> tuple[Callable[[], Awaitable[Any]], Callable[[], None]]:
    """A one-shot signal from any thread to a task of the running loop: ``(wait, done)``.

    ``await wait()`` returns once ``done()`` was called, from whichever thread. The
    cheapest such hand-over each library has (an asyncio future settled through
    ``call_soon_threadsafe``; a trio event set through the run's token), without
    waiting for the loop in the calling thread, as :meth:`EventLoop.call` does.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio (anyio's other backend)
        import trio

        event = trio.Event()
        token = trio.lowlevel.current_trio_token()
        return event.wait, lambda: token.run_sync_soon(event.set)
    future: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not future.done():
            future.set_result(None)

    def done() -> None:
        loop.call_soon_threadsafe(settle)
    return lambda: future, done


__all__ = ["EventLoop", "completion"]
