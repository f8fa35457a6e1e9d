"""Retry delays: exponential, linear or constant, capped, with jitter."""

from __future__ import annotations

import random

from .config import BackoffSettings


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
