"""Plain ``def perform`` calls in worker threads: how each ended, and how many still run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

import anyio

from .loop import EventLoop

_threads_lock = threading.Lock()
_threads_running = 0


def performs_in_threads() -> int:
    """How many plain ``def perform`` calls are running in worker threads right now.

    After a runner stops, any left belong to jobs it gave up on (their grace ran out, or
    a second signal came): Python cannot stop a thread, so they run on unwatched.
    """
    return _threads_running


def _count_thread(delta: int) -> None:
    global _threads_running
    with _threads_lock:
        _threads_running += delta


def _called() -> Any:
    raise RuntimeError("this ThreadCall has already run")


class ThreadCall:
    """A plain ``def perform`` to run in a worker thread; remembers how it ended.

    ``done`` turns true in the thread as the call returns or raises, before the event
    loop hears of it, so an outcome that arrives together with a cancellation is
    still known (``value`` / ``error``).
    """

    __slots__ = ("_lock", "_waiters", "done", "error", "fn", "value")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._waiters: list[tuple[EventLoop, anyio.Event]] = []

    def __call__(self) -> Any:
        _count_thread(1)
        try:
            self.value = self.fn()
            return self.value
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.fn = _called  # drop the worker and its job: a lingering call is kept a while
            with self._lock:
                self.done = True
                waiters, self._waiters = self._waiters, []
            _count_thread(-1)
            for loop, ended in waiters:
                loop.call(ended.set)  # False when the loop is gone: nobody waits any more

    async def wait_done(self) -> None:
        """Wait (in the event loop) until the call has returned or raised in its thread;
        any number of tasks may wait."""
        ended = anyio.Event()
        waiter = (EventLoop.current(), ended)
        with self._lock:
            if self.done:
                return
            self._waiters.append(waiter)
        try:
            await ended.wait()
        finally:
            with self._lock:
                if waiter in self._waiters:  # cancelled while waiting
                    self._waiters.remove(waiter)


class RunsThreads(Protocol):
    """What records the thread of a plain ``def perform`` (an execution's record)."""

    thread: ThreadCall | None


_watcher: ContextVar[RunsThreads | None] = ContextVar("jobrunner_thread_watcher", default=None)


def watch_threads(record: RunsThreads) -> None:
    """In the current context, let :func:`started_in_thread` put the ThreadCall of a plain
    ``def perform`` in ``record.thread`` (the job slots set it for each execution, so a
    later execution of the same job can wait for a thread that outlived its own)."""
    _watcher.set(record)


def started_in_thread(call: ThreadCall) -> None:
    """``call`` is about to run a plain ``def perform`` of the execution of this context."""
    record = _watcher.get()
    if record is not None:
        record.thread = call


__all__ = ["RunsThreads", "ThreadCall", "performs_in_threads", "started_in_thread", "watch_threads"]
