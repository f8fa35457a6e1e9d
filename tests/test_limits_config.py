"""Configuration of limits across nodes: global_parallelism and rate_limit, and their errors."""

from __future__ import annotations

from typing import Any

import pytest

from jobrunner.config import parse
from jobrunner.errors import ConfigError
from jobrunner.limits import Capacity, GlobalParallelism, RateLimit, TopicLimits, partition_key


def topic(raw: dict[str, Any]) -> Any:
    return parse({"topics": {"api": raw}}, source="limits.toml").topics["api"]


def test_no_limits_by_default() -> None:
    assert topic({}).limits is None


def test_global_parallelism_as_a_number_and_as_a_table() -> None:
    assert topic({"global_parallelism": 2}).global_parallelism == GlobalParallelism(2)
    assert topic({"global_parallelism": {"allowed": 1, "partition": "args.account_id"}}).global_parallelism == \
        GlobalParallelism(1, "account_id")


def test_rate_limit_with_and_without_partition() -> None:
    assert topic({"rate_limit": {"allowed": 10, "period": 1}}).rate_limit == RateLimit(10, 1.0)
    limits = topic({"rate_limit": {"allowed": 3, "period": 0.5, "partition": "args.user-id"}}).limits
    assert limits == TopicLimits(None, RateLimit(3, 0.5, "user-id"))
    assert limits.partitioned


@pytest.mark.parametrize(("raw", "message"), [
    ({"global_parallelism": -1}, "[topics.api]: key 'global_parallelism' must be at least 1, got -1"),
    ({"global_parallelism": 0}, "key 'global_parallelism' must be at least 1"),
    ({"global_parallelism": 1.5}, "key 'global_parallelism' must be an integer, got float 1.5"),
    ({"global_parallelism": {"partition": "args.a"}}, "[topics.api] global_parallelism: key 'allowed' is required"),
    ({"global_parallelism": {"allowed": 2, "partition": "account"}},
     "[topics.api] global_parallelism: key 'partition' must be \"args.KEY\""),
    ({"rate_limit": 10}, "[topics.api]: key 'rate_limit' must be a table like { allowed = 10, period = 1.0 }"),
    ({"rate_limit": {"allowed": 10}}, "[topics.api] rate_limit: key 'period' is required"),
    ({"rate_limit": {"period": 1}}, "[topics.api] rate_limit: key 'allowed' is required"),
    ({"rate_limit": {"allowed": -3, "period": 1}}, "[topics.api] rate_limit: key 'allowed' must be at least 1, got -3"),
    ({"rate_limit": {"allowed": 1, "period": -1}}, "[topics.api] rate_limit: key 'period' must be greater than 0"),
    ({"rate_limit": {"allowed": 1, "period": "1s"}}, "[topics.api] rate_limit: key 'period' must be a number"),
    ({"rate_limit": {"allowed": 1, "period": 1, "burst": 2}}, "[topics.api] rate_limit: unknown key 'burst'"),
    ({"rate_limit": {"allowed": 1, "period": 1, "partition": "args.a.b"}},
     "[topics.api] rate_limit: key 'partition' must be \"args.KEY\""),
    ({"rate_limit": {"allowed": 1, "period": 1, "partition": "meta.a"}}, "key 'partition' must be \"args.KEY\""),
])
def test_bad_limits_name_the_table_and_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        topic(raw)
    assert str(caught.value).startswith("limits.toml: ")
    assert message in str(caught.value)


def test_partition_keys() -> None:
    assert partition_key({"a": 1}, None) == ""
    assert partition_key({"a": 1}, "a") == "1"
    assert partition_key({"a": "1"}, "a") == '"1"'
    assert partition_key({"b": 1}, "a") == partition_key([1], "a") == "null"


def test_capacity_books_jobs_against_every_limit() -> None:
    limits = TopicLimits(GlobalParallelism(2, "acct"), RateLimit(3, 1.0))
    room = Capacity(limits, total=10, executing={"1": 1}, started={"": 1})
    assert room.take({"acct": 1})            # acct 1: 2 of 2 executing; 2 of 3 started
    assert not room.take({"acct": 1})        # acct 1 full
    assert room.take({"acct": 2})            # 3 of 3 started
    assert not room.take({"acct": 3})        # the rate limit is reached
    assert room.total == 8


def test_unpartitioned_room_is_the_least_of_the_limits() -> None:
    limits = TopicLimits(GlobalParallelism(5), RateLimit(3, 1.0))
    assert Capacity(limits, total=10, executing={"": 1}, started={"": 1}).unpartitioned_room() == 2
    assert Capacity(limits, total=1, executing={}, started={}).unpartitioned_room() == 1
    assert Capacity(limits, total=4, executing={"": 6}, started={}).unpartitioned_room() == 0
