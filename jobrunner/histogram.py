"""A histogram of observations in fixed buckets, cheap to feed from the event hot path."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


class Histogram:
    """Observations counted in fixed buckets.

    An observation is only appended to a list (call under the caller's lock); the list
    is folded into the buckets when they are read or when it grows long: sorted once,
    then one bisection per bound, which costs far less per observation than bisecting
    each as it comes. Negative observations count as zero.
    """

    __slots__ = ("bounds", "counts", "pending", "total")

    #: Observations kept unfolded at most.
    FOLD_AT = 10_000

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0
        self.pending: list[float] = []

    def observe(self, value: float) -> None:
        """Count one observation."""
        pending = self.pending
        pending.append(value)
        if len(pending) >= self.FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Count the pending observations into the buckets."""
        values, self.pending = sorted(self.pending), []
        if not values:
            return
        below = 0
        for i, bound in enumerate(self.bounds):
            upto = bisect.bisect_right(values, bound)  # a bucket counts values <= its bound
            self.counts[i] += upto - below
            below = upto
        self.counts[-1] += len(values) - below
        self.total += math.fsum(values[bisect.bisect_right(values, 0.0):])

    def read(self) -> tuple[list[tuple[str, float]], float]:
        """The buckets as Prometheus wants them (upper bound, observations at or below),
        and the sum of the observations."""
        self.fold()
        found, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            found.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return found, self.total


__all__ = ["Histogram"]
