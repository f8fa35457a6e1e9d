"""Tracebacks of failed jobs as users want to read them: starting at their own code.

An exception raised in ``perform`` reaches the executor through jobrunner's own frames
and, for a plain ``def perform``, through anyio's and the thread pool's. Those leading
frames say nothing about the failure; they are dropped. Frames of user code that
calls into jobrunner later on, and chained exceptions (``raise … from …``, errors
during handling), are kept whole.
"""

from __future__ import annotations

import traceback
from types import TracebackType

#: Top-level packages whose frames lead up to ``perform`` without being part of the job.
PLUMBING = frozenset({
    "jobrunner", "anyio", "trio", "asyncio", "threading", "concurrent", "contextlib",
    "contextvars", "functools", "outcome", "sniffio",
})


def user_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without its leading plumbing frames; all of it when every frame is plumbing."""
    current = tb
    while current is not None:
        module = current.tb_frame.f_globals.get("__name__") or ""
        if module.partition(".")[0] not in PLUMBING:
            return current
        current = current.tb_next
    return tb


def format_job_error(error: BaseException) -> str:
    """The text stored in a job's ``errors`` entry for ``error``."""
    shown = traceback.TracebackException(
        type(error), error, user_frames(error.__traceback__), compact=True
    )
    return "".join(shown.format())


__all__ = ["PLUMBING", "format_job_error", "user_frames"]
