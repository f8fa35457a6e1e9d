"""Limits across nodes: global_parallelism and rate_limit (with partitions), enforced by
the database at claim, with three daemon processes on one SQLite file or PostgreSQL
database whose local parallelism sums to more than the limit.

The bounds are checked twice: by sampling the table while the jobs run (never more than
N executing), and afterwards from the timestamps the claims wrote (``attempted_at``):
no window of ``period`` seconds holds more than ``allowed`` starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.limits_cluster import Cluster, make_cluster_fixture, most_in_any_window, most_overlapping


@pytest.fixture
def make_cluster(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator[Callable[..., Cluster]]:
    yield from make_cluster_fixture(tmp_path, subprocess_env)


def test_global_parallelism_caps_three_daemons(any_db_url: str, make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(any_db_url, "parallelism = 3\nglobal_parallelism = 2\npoll_interval = 0.05")
    cluster.enqueue([{"seconds": 0.1} for _ in range(30)])
    cluster.start(3)  # 3 x 3 local slots, 2 allowed at once
    samples = cluster.sample_until_done(30, 120, cluster.executing)
    assert max(samples) == 2, samples  # reached, never passed
    rows = cluster.rows()
    assert all(r["attempt"] == 1 for r in rows)
    # Each job executed within [attempted_at, completed_at]: never more than 2 at once.
    assert most_overlapping([(r["attempted_at"], r["completed_at"]) for r in rows]) <= 2


def test_rate_limit_bounds_every_window_across_three_daemons(
    any_db_url: str, make_cluster: Callable[..., Cluster]
) -> None:
    cluster = make_cluster(any_db_url, "parallelism = 4\npoll_interval = 0.05\n"
                                       "rate_limit = { allowed = 5, period = 0.5 }")
    cluster.enqueue([{"seconds": 0.0} for _ in range(30)])
    cluster.start(3)
    cluster.sample_until_done(30, 120, lambda: None)
    rows = cluster.rows()
    starts = [r["attempted_at"] for r in rows]
    assert most_in_any_window(starts, 0.5) == 5
    assert max(starts) - min(starts) >= 2.5  # 30 jobs, 5 per half second: at least 6 windows
    assert all(r["attempt"] == 1 and r["state"] == "completed" for r in rows)  # waiting cost no attempt


def test_rate_limit_per_partition(any_db_url: str, make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(any_db_url, "parallelism = 6\npoll_interval = 0.05\n"
                                       'rate_limit = { allowed = 2, period = 0.5, partition = "args.account" }')
    cluster.enqueue([{"seconds": 0.0, "account": i % 3} for i in range(24)])
    cluster.start(2)
    cluster.sample_until_done(24, 120, lambda: None)
    rows = cluster.rows()
    for account in range(3):
        starts = [r["attempted_at"] for r in rows if r["args"]["account"] == account]
        assert most_in_any_window(starts, 0.5) == 2, account
    # The limit is per account: the three accounts start together in the first window.
    assert most_in_any_window([r["attempted_at"] for r in rows], 0.5) >= 4


def test_global_parallelism_per_partition(any_db_url: str, make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(any_db_url, "parallelism = 4\npoll_interval = 0.05\n"
                                       'global_parallelism = { allowed = 1, partition = "args.account" }')
    cluster.enqueue([{"seconds": 0.1, "account": f"a{i % 2}"} for i in range(12)])
    cluster.start(2)
    samples = cluster.sample_until_done(12, 120, lambda: cluster.executing_by("account"))
    assert max(max(s.values(), default=0) for s in samples) == 1
    rows = cluster.rows()
    for account in ("a0", "a1"):
        spans = [(r["attempted_at"], r["completed_at"]) for r in rows if r["args"]["account"] == account]
        assert most_overlapping(spans) == 1
    assert most_overlapping([(r["attempted_at"], r["completed_at"]) for r in rows]) == 2


def test_a_retry_inside_the_window_counts_as_a_second_start(
    any_db_url: str, make_cluster: Callable[..., Cluster]
) -> None:
    """attempted_at keeps only a job's last start: the limit counts a log of starts instead."""
    cluster = make_cluster(any_db_url, "parallelism = 4\npoll_interval = 0.02\n"
                                       "rate_limit = { allowed = 3, period = 2.0 }\n"
                                       'backoff = { strategy = "constant", base = 0.0, max = 0.0, jitter = 0.0 }')
    failing, plain = cluster.enqueue([{"seconds": 0.0, "fail_first": True}, {"seconds": 0.0}])
    cluster.start(1)
    cluster.sample_until_done(2, 60, lambda: None)
    (late,) = cluster.enqueue([{"seconds": 0.0}])  # three starts so far: this one must wait
    cluster.sample_until_done(3, 60, lambda: None)
    rows = {r["id"]: r for r in cluster.rows()}
    assert rows[failing]["attempt"] == 2
    # Counting attempted_at alone would see two starts in the window (the retry replaced
    # the first one's time) and start the late job at once.
    assert rows[late]["attempted_at"] - rows[plain]["attempted_at"] >= 2.0
