"""Retry delays: exponential, linear or constant, capped, with jitter; a worker's own override."""

from __future__ import annotations

import inspect
import logging
import math
import random
from datetime import timedelta
from typing import TYPE_CHECKING

from .config import BackoffSettings

if TYPE_CHECKING:
    from .job import Job
    from .worker import Worker

logger = logging.getLogger("jobrunner.backoff")


def backoff_delay(settings: BackoffSettings, attempt: int, rand: random.Random | None = None) -> float:
    """Seconds to wait before the retry that follows failed attempt ``attempt`` (1-based).

    Exponential waits base·2^(n-1) before retry n, linear base·n, constant base;
    spread by ± ``jitter`` of itself; never more than ``max``.
    """
    n = max(1, attempt)
    if settings.strategy == "exponential":
        # Cap the exponent so huge attempt counts cannot overflow a float.
        delay = settings.base * 2.0 ** min(n - 1, 1023)
    elif settings.strategy == "linear":
        delay = settings.base * n
    else:
        delay = settings.base
    if settings.jitter:
        delay *= 1.0 + (rand or random).uniform(-settings.jitter, settings.jitter)
    return max(0.0, min(delay, settings.max))


def worker_backoff(worker: Worker | None, job: Job) -> tuple[float | None, str | None]:
    """Seconds ``worker.backoff(job)`` asks for (None: use the topic's backoff), and what
    was wrong with the override, if anything.

    The override may return a number of seconds or a ``timedelta``; one that raises or
    returns anything else (a string, NaN, a coroutine) falls back to the topic's backoff,
    and the returned note says why. Huge delays are clamped by the caller.
    """
    if worker is None:
        return None, None
    try:
        delay: object = worker.backoff(job)  # user code: checked below, whatever it returns
    except Exception as exc:  # noqa: BLE001 - a broken override must not lose the job
        logger.error("backoff() of %s (job %s) raised %r; using the topic's backoff", job.worker, job.id, exc)
        return None, f"backoff() raised {type(exc).__name__}: {exc}; used the topic's backoff"
    if delay is None:
        return None, None
    if isinstance(delay, timedelta):
        delay = delay.total_seconds()
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        try:
            seconds = float(delay)
        except OverflowError:  # an int too large for a float: as late as allowed
            seconds = math.inf
        if not math.isnan(seconds):
            return seconds, None
    if inspect.iscoroutine(delay):
        delay.close()  # backoff() must be a plain def
    logger.error("backoff() of %s (job %s) returned %r, not seconds; using the topic's backoff",
                 job.worker, job.id, delay)
    return None, f"backoff() returned {delay!r:.80}, not seconds (a number or timedelta); used the topic's backoff"
