"""Several daemon processes on one PostgreSQL database: every job once, a dead node's
jobs rescued onto the others, no job run by two live nodes at once, the nodes listing.

The harness is the one of ``tests/test_resilience.py`` (daemons as subprocesses, the jobs
table and an execution log watched from outside).
"""

from __future__ import annotations

import itertools
import json
import signal
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_resilience import Cluster, assert_clean_output, drain_on_every_daemon

NON_FINAL = ("scheduled", "available", "executing", "retryable")


@pytest.fixture
def pg_cluster(tmp_path: Path, subprocess_env: dict[str, str], pg_url: str) -> Iterator[Callable[..., Cluster]]:
    """Clusters on a fresh PostgreSQL database."""
    made: list[Cluster] = []

    def make(**options: Any) -> Cluster:
        cluster = Cluster(tmp_path, subprocess_env, pg_url, **options)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.cleanup()


def _no_overlap_between_live_nodes(executions: list[dict[str, Any]], killed: set[int]) -> None:
    """No two executions of one job by live processes overlap in time."""
    by_job: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in executions:
        if e["pid"] not in killed:
            by_job[e["job_id"]].append(e)
    for job_id, runs in by_job.items():
        runs.sort(key=lambda e: e["started"])
        for earlier, later in itertools.pairwise(runs):
            assert earlier["ended"] is not None and earlier["ended"] <= later["started"], (job_id, runs)


@pytest.mark.timeout(240)
def test_three_nodes_drain_5000_jobs_each_completed_once(pg_cluster: Callable[..., Cluster]) -> None:
    # poll_interval 5: only the notifications make this fast.
    c = pg_cluster(parallelism=8, poll=5.0, grace=5)
    daemons = [c.start() for _ in range(3)]
    c.wait_until("three nodes registered", lambda: len(c.query("SELECT node FROM jobrunner_nodes")) == 3)
    listed = json.loads(c.cli("nodes", "--json").stdout)["nodes"]
    assert len(listed) == 3 and all(n["topics"] == ["r"] for n in listed)
    assert {int(n["node"].split(":")[-2]) for n in listed} == {d.pid for d in daemons}

    total = 5000
    _, executions, elapsed = drain_on_every_daemon(c, daemons, total)
    by_pid = Counter(e["pid"] for e in executions)
    assert set(by_pid) == {d.pid for d in daemons}, f"not every node did some work: {by_pid}"
    print(f"\n{total} jobs on 3 nodes (PostgreSQL) in {elapsed:.1f}s ({total / elapsed:.0f}/s); "
          f"per node {dict(by_pid)}")
    assert json.loads(c.cli("nodes", "--json").stdout) == {"nodes": []}  # clean stops unregister


def test_kill_9_of_one_node_rescues_its_jobs_onto_the_others(pg_cluster: Callable[..., Cluster]) -> None:
    c = pg_cluster(heartbeat=0.2, rescue=1.0, grace=2, parallelism=4, poll=5.0)
    daemons = [c.start() for _ in range(3)]
    c.wait_until("three nodes registered", lambda: len(c.query("SELECT node FROM jobrunner_nodes")) == 3)
    ids = c.enqueue(*({"sleep": 0.2} for _ in range(120)), max_attempts=3)
    victim = daemons[0]
    c.wait_until("the victim runs some jobs", lambda: any(
        f":{victim.pid}:" in (r[0] or "") for r in c.query(
            "SELECT attempted_by FROM jobrunner_jobs WHERE state = 'executing'")))
    assert c.sessions_of(victim), "a daemon's sessions carry its node id"
    assert victim.kill() == -signal.SIGKILL
    c.wait_sessions_ended(victim)
    left = {r[0] for r in c.query("SELECT id, attempted_by FROM jobrunner_jobs WHERE state = 'executing'")
            if f":{victim.pid}:" in (r[1] or "")}
    survivors = daemons[1:]
    c.wait_until("every job to be final", lambda: sum(c.counts()[s] for s in NON_FINAL) == 0,
                 timeout=60, alive=survivors)
    listed = json.loads(c.cli("nodes", "--json").stdout)["nodes"]
    assert {int(n["node"].split(":")[-2]) for n in listed} == {d.pid for d in survivors}
    assert [c.terminate(d) for d in survivors] == [0, 0]
    for daemon in survivors:
        assert_clean_output(daemon)

    jobs = c.jobs()
    assert sorted(jobs) == ids and all(j["state"] == "completed" for j in jobs.values())
    rescued = {job_id for job_id, job in jobs.items() if any("died" in e["error"] for e in job["errors"])}
    assert left and rescued >= left, "the dead node's executing jobs were rescued"
    executions = c.executions()
    for job_id in rescued:
        ok = [e["pid"] for e in executions if e["job_id"] == job_id and e["outcome"] == "ok"]
        assert ok and ok[-1] in {d.pid for d in survivors}, (job_id, ok)
    _no_overlap_between_live_nodes(executions, {victim.pid})
