"""The ``contextvars`` of running jobs: the variables a running runner sets for them, and
running a coroutine in a context of its own, inside the current task.

A job task runs many jobs one after another. Each job must still start from a clean
copy of the context, as if it had a task of its own: a context variable that one job
sets (a logging binding, a decimal context, a tracing span) must not leak into the
next job that the same task runs.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine, Generator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .config import Settings
    from .job import Job

T = TypeVar("T")

#: The configuration of the runner executing jobs in this context (set by Runner.run).
current_settings: ContextVar[Settings] = ContextVar("jobrunner_settings")
#: Records the progress of a running job (set by Runner.run; see Worker.progress).
current_progress: ContextVar[Callable[[Job, float], Coroutine[Any, Any, None]]] = ContextVar("jobrunner_progress")


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


__all__ = ["current_progress", "current_settings", "in_own_context"]
