"""Retry delays: exponential base·2^(n-1), linear base·n, constant base; capped; jittered."""

from __future__ import annotations

import math
import random

import pytest

from jobrunner.backoff import backoff_delay
from jobrunner.config import BackoffSettings


def settings(
    strategy: str = "exponential", base: float = 1.0, max: float = 1e9, jitter: float = 0.0
) -> BackoffSettings:
    return BackoffSettings(strategy=strategy, base=base, max=max, jitter=jitter)


@pytest.mark.parametrize("attempt, expected", [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (11, 512.0)])
def test_exponential(attempt: int, expected: float) -> None:
    assert backoff_delay(settings("exponential", base=0.5), attempt, random.Random(0)) == expected


@pytest.mark.parametrize("attempt, expected", [(1, 3.0), (2, 6.0), (3, 9.0), (10, 30.0)])
def test_linear(attempt: int, expected: float) -> None:
    assert backoff_delay(settings("linear", base=3.0), attempt, random.Random(0)) == expected


@pytest.mark.parametrize("attempt", [1, 2, 3, 50])
def test_constant(attempt: int) -> None:
    assert backoff_delay(settings("constant", base=7.5), attempt, random.Random(0)) == 7.5


def test_first_retry_waits_base_for_every_strategy() -> None:
    for strategy in ("exponential", "linear", "constant"):
        assert backoff_delay(settings(strategy, base=2.5), 1) == 2.5


@pytest.mark.parametrize("strategy", ["exponential", "linear", "constant"])
def test_capped_at_max(strategy: str) -> None:
    s = settings(strategy, base=4.0, max=10.0)
    delays = [backoff_delay(s, n, random.Random(0)) for n in range(1, 40)]
    assert max(delays) <= 10.0
    if strategy != "constant":
        assert delays[-1] == 10.0
    assert backoff_delay(settings(strategy, base=50.0, max=10.0), 1) == 10.0


def test_exponential_reaches_the_cap_exactly_and_stays_there() -> None:
    s = settings("exponential", base=1.0, max=32.0)
    assert [backoff_delay(s, n) for n in range(1, 9)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0, 32.0]


def test_zero_base_means_no_wait() -> None:
    for strategy in ("exponential", "linear", "constant"):
        assert backoff_delay(settings(strategy, base=0.0, jitter=0.5), 5, random.Random(1)) == 0.0


def test_zero_jitter_is_exact_and_ignores_the_random_source() -> None:
    class Exploding(random.Random):
        def uniform(self, a: float, b: float) -> float:
            raise AssertionError("jitter 0 must not draw a random number")

    s = settings("exponential", base=1.5, max=1000.0, jitter=0.0)
    assert [backoff_delay(s, n, Exploding()) for n in (1, 2, 3)] == [1.5, 3.0, 6.0]


@pytest.mark.parametrize("strategy", ["exponential", "linear", "constant"])
@pytest.mark.parametrize("jitter", [0.1, 0.25, 1.0])
def test_jitter_stays_within_the_fraction(strategy: str, jitter: float) -> None:
    rand = random.Random(1234)
    s = settings(strategy, base=2.0, max=1e6, jitter=jitter)
    for attempt in (1, 3, 6):
        nominal = backoff_delay(settings(strategy, base=2.0, max=1e6), attempt)
        samples = [backoff_delay(s, attempt, rand) for _ in range(2000)]
        low, high = nominal * (1 - jitter), nominal * (1 + jitter)
        assert all(low - 1e-9 <= d <= high + 1e-9 for d in samples), (min(samples), max(samples), low, high)
        # The spread really is used, on both sides of the nominal delay.
        assert min(samples) < nominal * (1 - jitter / 2)
        assert max(samples) > nominal * (1 + jitter / 2)
        assert abs(sum(samples) / len(samples) - nominal) < nominal * jitter * 0.1


def test_jitter_never_exceeds_max() -> None:
    rand = random.Random(99)
    s = settings("exponential", base=1.0, max=10.0, jitter=0.5)
    for attempt in range(1, 30):
        for _ in range(500):
            d = backoff_delay(s, attempt, rand)
            assert 0.0 <= d <= 10.0
    # Just below the cap, upward jitter is clipped to max.
    near = [backoff_delay(settings("constant", base=9.0, max=10.0, jitter=0.5), 1, rand) for _ in range(2000)]
    assert max(near) == 10.0
    assert min(near) >= 4.5


def test_same_seed_same_delays() -> None:
    s = settings("linear", base=1.0, max=100.0, jitter=0.3)
    first = [backoff_delay(s, n, random.Random(7)) for n in range(1, 20)]
    second = [backoff_delay(s, n, random.Random(7)) for n in range(1, 20)]
    assert first == second


def test_default_random_source_is_used_when_none_given() -> None:
    s = settings("constant", base=10.0, max=100.0, jitter=0.2)
    delays = {backoff_delay(s, 1) for _ in range(200)}
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(delays) > 1


def test_attempt_below_one_is_treated_as_the_first() -> None:
    s = settings("exponential", base=3.0)
    assert backoff_delay(s, 0) == 3.0
    assert backoff_delay(s, -5) == 3.0


# Huge attempt numbers must neither overflow a float nor exceed max.
_HUGE = [
    pytest.param(strategy, attempt, id=f"{strategy}-{attempt}")
    for strategy in ("exponential", "linear", "constant")
    for attempt in (60, 1023, 1024, 1025, 5000, 10**6, 2**63 - 1)
]


@pytest.mark.parametrize("strategy, attempt", _HUGE)
def test_huge_attempt_numbers_do_not_overflow(strategy: str, attempt: int) -> None:
    s = settings(strategy, base=1.0, max=3600.0, jitter=0.1)
    d = backoff_delay(s, attempt, random.Random(attempt % 1000))
    assert math.isfinite(d)
    assert 0.0 <= d <= 3600.0
    # Far enough past the cap that even the lowest jitter stays above it.
    if (strategy == "exponential" and attempt >= 20) or (strategy == "linear" and attempt >= 5000):
        assert d == 3600.0


def test_exponent_just_below_the_float_limit_is_capped() -> None:
    # 2.0 ** 1023 is finite; base * 2.0 ** 1023 overflows to inf, which must still be capped.
    s = settings("exponential", base=1e300, max=86400.0, jitter=0.5)
    assert backoff_delay(s, 1024, random.Random(3)) == 86400.0


def test_huge_attempt_with_a_big_base_stays_at_max() -> None:
    s = settings("exponential", base=1e300, max=86400.0, jitter=0.0)
    assert backoff_delay(s, 2000) == 86400.0
