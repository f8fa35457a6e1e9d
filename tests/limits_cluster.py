"""Daemon subprocesses on one database (SQLite file or PostgreSQL), for the tests of
scaling and limits across nodes, and the readings those tests take of the jobs table."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from jobrunner import Runner
from tests import forkserver
from tests.daemon_harness import run_cli
from tests.limits_workers import Nap

POLL = 0.01  # how often the tests sample the table


@dataclass
class Cluster:
    """A config file for topic ``lim`` (worker :class:`Nap`), daemons that run it, and
    a connection of the test's own to the same database."""

    tmp: Path
    env: dict[str, str]
    url: str
    topic: str
    daemons: list[subprocess.Popen[bytes] | forkserver.ForkedProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cfg = self.tmp / "config.toml"
        self.cfg.write_text(
            f'[database]\nurl = "{self.url}"\n\n'
            '[runner]\nmodules = ["tests.limits_workers"]\nshutdown_grace = 1\n\n'
            f"[topics.lim]\n{self.topic}\n"
        )
        self.engine = create_engine(self.url)
        self.runner = Runner.from_config(self.cfg)
        self.runner.migrate()

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            out = (self.tmp / f"daemon-{len(self.daemons)}.log").open("wb")
            self.daemons.append(forkserver.spawn(
                [sys.executable, "-m", "jobrunner", "--config", str(self.cfg), "run"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp,
            ))
            out.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.cfg, *args, env=self.env, cwd=self.tmp)

    def stop(self) -> None:
        for proc in self.daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.daemons:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        self.daemons.clear()

    def close(self) -> None:
        self.stop()
        self.runner.store.close()
        self.engine.dispose()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("daemon-*.log")))

    # -------------------------------------------------------- the table

    def enqueue(self, args: list[dict[str, Any]]) -> list[int]:
        return [job.id for job in self.runner.enqueue_many([(Nap, a) for a in args])]

    def executing(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM jobrunner_jobs WHERE topic = 'lim' AND state = 'executing'")).scalar_one())

    def executing_by(self, key: str) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for job in self.rows("executing"):
            counts[job["args"].get(key)] = counts.get(job["args"].get(key), 0) + 1
        return counts

    def rows(self, state: str | None = None) -> list[dict[str, Any]]:
        import json

        query = "SELECT id, state, args, attempt, attempted_at, completed_at, attempted_by FROM jobrunner_jobs"
        with self.engine.connect() as conn:
            found = conn.execute(text(query + (" WHERE state = :s" if state else "")), {"s": state}).mappings().all()
        return [{**row, "args": json.loads(row["args"])} for row in found]

    def sample_until_done(self, total: int, timeout: float, sample: Callable[[], Any]) -> list[Any]:
        """Take ``sample()`` every POLL seconds until ``total`` jobs completed; the samples."""
        samples = []
        deadline = time.monotonic() + timeout
        while True:
            samples.append(sample())
            with self.engine.connect() as conn:
                done = conn.execute(text(
                    "SELECT count(*) FROM jobrunner_jobs WHERE state = 'completed'")).scalar_one()
            if done >= total:
                return samples
            for proc in self.daemons:
                assert proc.poll() is None, f"a daemon exited with {proc.returncode}:\n{self.logs()}"
            assert time.monotonic() < deadline, f"{done} of {total} jobs completed after {timeout} s\n{self.logs()}"
            time.sleep(POLL)

    def wait_until(self, what: str, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            for proc in self.daemons:
                assert proc.poll() is None, f"a daemon exited with {proc.returncode}:\n{self.logs()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.logs()}"
            time.sleep(POLL)
        return value


def most_in_any_window(times: list[float], period: float) -> int:
    """The most of ``times`` in any half-open window [t, t + period)."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - period:
            first += 1
        most = max(most, last - first + 1)
    return most


def most_overlapping(intervals: list[tuple[float, float]]) -> int:
    """The most of the [start, end) intervals that overlap at any instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = now = 0
    for _, step in edges:  # ends sort before starts at the same instant
        now += step
        most = max(most, now)
    return most


def make_cluster_fixture(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator[Callable[..., Cluster]]:
    """The body of a ``make_cluster(url, topic_toml)`` fixture."""
    made: list[Cluster] = []

    def make(url: str, topic: str) -> Cluster:
        cluster = Cluster(tmp_path, subprocess_env, url, topic)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()
