"""Running a coroutine in a ``contextvars`` context of its own, inside the current task.

A job task runs many jobs one after another. Each job must still start from a clean
copy of the context, as if it had a task of its own: a context variable that one job
sets (a logging binding, a decimal context, a tracing span) must not leak into the
next job that the same task runs.
"""

from __future__ import annotations

import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class in_own_context:  # noqa: N801 - used like a function: ``await in_own_context(coro)``
    """Await ``coro`` with every step of it run in a fresh copy of the current context.

    Suspensions, values sent in and exceptions thrown in (cancellation) pass through
    unchanged, so the event loop sees the same awaitables as with a plain ``await``.
    """

    __slots__ = ("_context", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._context = contextvars.copy_context()

    def __await__(self) -> Generator[Any, Any, T]:
        coro, run = self._coro, self._context.run
        step, arg = coro.send, None
        while True:
            try:
                suspended = run(step, arg)
            except StopIteration as stop:
                value: T = stop.value  # StopIteration is not generic: its value is this coroutine's T
                return value
            try:
                arg = yield suspended
                step = coro.send
            except GeneratorExit:
                run(coro.close)
                raise
            except BaseException as exc:  # noqa: BLE001 - thrown in by the loop: hand it on
                step, arg = coro.throw, exc
