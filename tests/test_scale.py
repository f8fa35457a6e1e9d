"""Runtime scaling: a topic's parallelism changed on every running node without a
restart, from Python, the command line and HTTP; kept across restarts until reset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from jobrunner import Runner, ScaleError, events
from jobrunner.testing import running, wait_for
from tests.helpers import MakeRunner, get_job
from tests.limits_cluster import Cluster, make_cluster_fixture
from tests.workers import Sleeper


@pytest.fixture
def make_cluster(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator[Callable[..., Cluster]]:
    yield from make_cluster_fixture(tmp_path, subprocess_env)


async def started(runner: Runner, count: int) -> None:
    """Wait until ``count`` jobs of topic t are executing (read from the table)."""
    with anyio.fail_after(30):
        while runner.stats()["t"]["executing"] < count:
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_scale_up_and_back_in_one_process(make_runner: MakeRunner) -> None:
    # The sleepers still running at the end are cancelled after a short grace.
    runner = make_runner({"t": {"parallelism": 1, "poll_interval": 0.05}}, runner={"shutdown_grace": 0.2})
    jobs = runner.enqueue_many([(Sleeper, {"seconds": 60}) for _ in range(5)])
    async with running(runner):
        await started(runner, 1)
        assert runner.scale("t", 3) == 3 and runner.parallelism("t") == 3
        await started(runner, 3)
        assert runner.supervisor("t").producer.parallelism == 3
        assert runner.scale("t", None) == 1 and runner.parallelism("t") == 1
        # Scaling down cancels nothing: the three go on, and none starts until fewer run.
        ended = wait_for(events.job_cancelled, lambda p: True, timeout=10)
        runner.cancel_job(next(j.id for j in jobs if get_job(runner, j.id).state == "executing"))
        await ended
        await anyio.sleep(0.3)  # ten polls: nothing more may start
        assert runner.stats()["t"]["executing"] == 2


def test_scale_refuses_bad_numbers_and_unknown_topics(runner: Runner) -> None:
    for bad in (0, -1, 10_001, 2.5, True, "3"):
        with pytest.raises(ScaleError, match="a parallelism is a whole number from 1 to 10000"):
            runner.scale("t", bad)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="topic 'nope' is not configured"):
        runner.scale("nope", 2)
    assert runner.parallelism("t") == 4


def test_scale_reaches_running_daemons_and_outlives_restarts(
    any_db_url: str, make_cluster: Callable[..., Cluster]
) -> None:
    cluster = make_cluster(any_db_url, "parallelism = 1\npoll_interval = 0.05")
    cluster.enqueue([{"seconds": 60} for _ in range(12)])
    cluster.start(2)
    cluster.wait_until("one job per daemon", lambda: cluster.executing() == 2)
    scaled = cluster.cli("scale", "lim", "3")
    assert scaled.returncode == 0, scaled.stderr
    assert scaled.stdout.strip() == "topic lim scaled to parallelism 3 on every node"
    cluster.wait_until("three jobs per daemon", lambda: cluster.executing() == 6)
    cluster.stop()  # the running jobs go back to the queue
    cluster.start(1)
    cluster.wait_until("three jobs on the restarted daemon", lambda: cluster.executing() == 3)
    reset = cluster.cli("scale", "lim", "--reset")
    assert reset.stdout.strip() == "topic lim back to its configured parallelism 1 on every node"
    cluster.stop()
    cluster.start(1)
    cluster.wait_until("one job again", lambda: cluster.executing() == 1)


def test_a_daemon_scaled_down_before_it_starts_never_runs_more(
    any_db_url: str, make_cluster: Callable[..., Cluster]
) -> None:
    cluster = make_cluster(any_db_url, "parallelism = 4\npoll_interval = 0.05")
    assert cluster.cli("scale", "lim", "1").returncode == 0
    cluster.enqueue([{"seconds": 0.05} for _ in range(10)])
    cluster.start(1)
    assert max(cluster.sample_until_done(10, 60, cluster.executing)) == 1


@pytest.mark.parametrize("args", [[], ["lim"], ["lim", "0"], ["lim", "x"], ["lim", "2", "--reset"]])
def test_scale_usage_errors(sqlite_url: str, make_cluster: Callable[..., Cluster], args: list[str]) -> None:
    cluster = make_cluster(sqlite_url, "parallelism = 1")
    done = cluster.cli("scale", *args)
    assert done.returncode == 2 and done.stderr.strip(), done


def test_scale_of_an_unknown_topic_names_it(sqlite_url: str, make_cluster: Callable[..., Cluster]) -> None:
    done = make_cluster(sqlite_url, "parallelism = 1").cli("scale", "nope", "2")
    assert done.returncode == 2 and "topic 'nope' is not configured" in done.stderr
