"""The storage side of scaling and limits, on both engines: the claim capped to the
parallelism a topic was scaled to, limited claims (counts, partitions, the starts log,
the wake-up hint) and external-worker lease claims under the same limits."""

from __future__ import annotations

import pytest

from jobrunner.limits import GlobalParallelism, RateLimit, TopicLimits
from jobrunner.storage import AsyncStorage, ClaimRequest
from tests.test_storage_contract import NOW, api, claim, row

__all__ = ["api"]  # the fixture, shared with the contract suite

pytestmark = pytest.mark.anyio


async def test_a_scaled_topic_caps_the_claim_that_reads_the_control(api: AsyncStorage) -> None:
    await api.insert([row() for _ in range(10)])
    api.storage.operator.set_parallelism("t", 3, NOW)
    assert api.storage.operator.scaled_parallelism("t") == 3
    result = await api.cycle([], claim(limit=8, running=[], parallelism=8, taken=1))
    assert len(result.claimed) == 2 and result.control is not None and result.control.parallelism == 3
    api.storage.operator.set_parallelism("t", None, NOW)
    assert api.storage.operator.scaled_parallelism("t") is None
    result = await api.cycle([], claim(limit=8, running=[], parallelism=4, taken=2))
    assert len(result.claimed) == 2 and result.control is not None and result.control.parallelism is None


async def test_global_parallelism_counts_every_nodes_executing_jobs(api: AsyncStorage) -> None:
    limits = TopicLimits(GlobalParallelism(3))
    await api.insert([row() for _ in range(10)])
    first = await api.cycle([], claim(limit=2, node="n1", limits=limits))
    second = await api.cycle([], claim(limit=5, node="n2", limits=limits))
    assert (len(first.claimed), len(second.claimed)) == (2, 1)
    assert (await api.cycle([], claim(limit=5, node="n3", limits=limits))).claimed == []


async def test_partitions_are_chosen_in_claim_order_skipping_full_ones(api: AsyncStorage) -> None:
    limits = TopicLimits(GlobalParallelism(1, "account"))
    jobs = await api.insert([row(priority=p, account=a) for p, a in [(0, "x"), (1, "x"), (2, "x"), (3, "y"),
                                                                      (4, None), (5, "y")]])
    got = (await api.cycle([], claim(limit=10, limits=limits))).claimed
    assert [j.id for j in got] == [jobs[0].id, jobs[3].id, jobs[4].id]  # x, y and the args without a key
    assert (await api.cycle([], claim(limit=10, limits=limits))).claimed == []


async def test_rate_limit_counts_starts_per_window_and_says_when_it_has_room(api: AsyncStorage) -> None:
    limits = TopicLimits(rate_limit=RateLimit(2, 10.0))
    await api.insert([row() for _ in range(5)])
    first = await api.cycle([], claim(limit=5, limits=limits))
    assert len(first.claimed) == 2 and first.retry_at == NOW + 10.0
    later = await api.cycle([], ClaimRequest("t", 5, "n1", NOW + 9.9, limits=limits))
    assert later.claimed == [] and later.retry_at == NOW + 10.0
    after = await api.cycle([], ClaimRequest("t", 5, "n1", NOW + 10.0, limits=limits))
    assert len(after.claimed) == 2  # the first two starts left the window (it is half-open)


async def test_rate_limit_per_partition(api: AsyncStorage) -> None:
    limits = TopicLimits(rate_limit=RateLimit(1, 60.0, "account"))
    await api.insert([row(account=a) for a in (1, 1, 2, "1")])
    got = (await api.cycle([], claim(limit=10, limits=limits))).claimed
    assert sorted(str(j.args["account"]) for j in got) == ["1", "1", "2"]  # 1, 2 and "1" (another value)


async def test_lease_claims_obey_scale_and_limits(api: AsyncStorage) -> None:
    await api.insert([row(topic="x") for _ in range(6)])
    limits = TopicLimits(GlobalParallelism(2), RateLimit(3, 60.0))
    assert await api.lease_job("x", 5, "w1", 30, NOW, limits) is not None
    assert await api.lease_job("x", 5, "w2", 30, NOW, limits) is not None
    assert await api.lease_job("x", 5, "w3", 30, NOW, limits) is None  # 2 executing: the global cap
    api.storage.operator.set_parallelism("x", 1, NOW)
    assert await api.lease_job("x", 5, "w3", 30, NOW, None) is None  # scaled to 1, 2 executing
    api.storage.operator.set_parallelism("x", None, NOW)
    assert await api.lease_job("x", 5, "w3", 30, NOW, None) is not None
