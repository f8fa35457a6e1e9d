"""Resilience with real processes, real signals and a real database (SQLite file or PostgreSQL).

Every test drives ``python -m jobrunner`` daemons (``tests/daemon_harness.py``) on one database and
watches two things from outside: the jobs table (the only state the daemons share) and
an execution log (files each execution appends to, see
``tests/resilience_workers.py``). Nothing sleeps to guess timing: the tests poll the
tables with a short interval and a generous deadline, or wait for a process to exit.
The only fixed-length waits are the deliberate "nothing happens for a while" checks
(a paused topic stays paused), which watch the table for their whole duration.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from jobrunner import Runner
from tests import resilience_workers as rw
from tests.daemon_harness import DaemonProcess, holds_for, run_cli, wait_until
from tests.resilience_workers import Task

T = TypeVar("T")

CONFIG = """
[database]
url = "{url}"

[runner]
modules = ["tests.resilience_workers"]
shutdown_grace = {grace}
heartbeat_interval = {heartbeat}
rescue_after = {rescue}

[topics.r]
parallelism = {parallelism}
poll_interval = {poll}
backoff = {{ strategy = "constant", base = 0.0, max = 1.0, jitter = 0.0 }}
"""

NON_FINAL = ("scheduled", "available", "executing", "retryable")
# Daemons plus a dozen or more CLI processes per test: each takes a second or more on a loaded machine.
pytestmark = pytest.mark.timeout(240)


# ------------------------------------------------------------------ harness


@dataclass
class Cluster:
    """Daemons on one database, plus the helpers to watch them from outside."""

    tmp: Path
    env: dict[str, str]
    url: str = ""
    poll: float = 0.1
    parallelism: int = 8
    grace: float = 2.0
    heartbeat: float = 5.0
    rescue: float = 60.0
    daemons: list[DaemonProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url = self.url or f"sqlite:///{self.tmp / 'jobs.db'}"
        self.engine = create_engine(self.url, poolclass=NullPool)
        self.log = self.tmp / "executions"
        self.cfg = self.tmp / "config.toml"
        self.cfg.write_text(CONFIG.format(
            url=self.url, grace=self.grace, heartbeat=self.heartbeat, rescue=self.rescue,
            parallelism=self.parallelism, poll=self.poll,
        ))
        rw.create_log(self.log)

    # -------------------------------------------------------- processes

    def start(self, *, wait: bool = True) -> DaemonProcess:
        """Start a daemon on the shared file; with ``wait``, return once every topic runs."""
        daemon = DaemonProcess(self.cfg, log_path=self.tmp / f"daemon-{len(self.daemons)}.log",
                               env=self.env, cwd=self.tmp)
        self.daemons.append(daemon)
        return daemon.start(wait=wait)

    def cli(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        proc = run_cli(self.cfg, *args, env=self.env, cwd=self.tmp)
        if expect is not None and proc.returncode != expect:
            raise AssertionError(f"{args}: exit {proc.returncode}, wanted {expect}: {proc.stdout}{proc.stderr}")
        return proc

    def terminate(self, daemon: DaemonProcess, timeout: float = 30) -> int:
        daemon.terminate()
        return daemon.wait(timeout=timeout)

    def cleanup(self) -> None:
        for daemon in self.daemons:
            daemon.kill()
        self.engine.dispose()

    # -------------------------------------------------------- the tables

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            with self.engine.connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql), params or {})]
        except DBAPIError as exc:
            if "no such table" in str(exc) or "does not exist" in str(exc):  # not migrated yet
                return []
            raise

    def counts(self) -> Counter[str]:
        return Counter(dict(self.query("SELECT state, count(*) FROM jobrunner_jobs GROUP BY state")))

    def state(self, job_id: int) -> str | None:
        rows = self.query("SELECT state FROM jobrunner_jobs WHERE id = :id", {"id": job_id})
        return rows[0][0] if rows else None

    def jobs(self) -> dict[int, dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(text("SELECT * FROM jobrunner_jobs ORDER BY id"))]
        jobs = {}
        for job in rows:
            job["errors"] = json.loads(job["errors"])
            jobs[job["id"]] = job
        return jobs

    def sessions_of(self, daemon: DaemonProcess) -> list[tuple[Any, ...]]:
        """PostgreSQL: the server's sessions of ``daemon`` (their ``application_name`` is
        ``jobrunner <node id>``, the node id holding the pid); SQLite: none."""
        if not self.url.startswith("postgresql"):
            return []
        return self.query("SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE :name",
                          {"name": f"jobrunner %:{daemon.pid}:%"})

    def wait_sessions_ended(self, daemon: DaemonProcess) -> None:
        """After a kill -9: until the server has ended the dead daemon's sessions. Until
        then a transaction whose COMMIT it sent just before dying may still commit
        (PostgreSQL); an SQLite writer has nothing in flight once its process is gone."""
        self.wait_until(f"the database sessions of daemon {daemon.pid} to end",
                        lambda: not self.sessions_of(daemon), alive=[])

    def executions(self) -> list[dict[str, Any]]:
        return rw.read_log(self.log)

    def executions_of(self, job_id: int) -> list[dict[str, Any]]:
        return [e for e in self.executions() if e["job_id"] == job_id]

    def show(self, job_id: int) -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(self.cli("show", str(job_id), "--json").stdout)
        return shown

    def enqueue(self, *args_list: dict[str, Any], **options: Any) -> list[int]:
        """Enqueue Task jobs from this (test) process, in one transaction."""
        runner = Runner.from_config(self.cfg)
        try:
            runner.migrate()
            jobs = runner.enqueue_many([(Task, {"log": str(self.log), **a}, options) for a in args_list])
        finally:
            runner.store.close()
        return [j.id for j in jobs]

    def enqueue_cli(self, args: dict[str, Any], *extra: str) -> int:
        out = self.cli("enqueue", "tests.resilience_workers.Task", "--args",
                       json.dumps({"log": str(self.log), **args}), *extra)
        return int(out.stdout)

    # -------------------------------------------------------- waiting

    def wait_until(self, what: str, predicate: Callable[[], T | None], timeout: float = 30,
                   alive: list[DaemonProcess] | None = None) -> T:
        """Poll ``predicate`` until truthy; fail early if a daemon that should live exits."""
        return wait_until(what, predicate, timeout=timeout, alive=self.daemons if alive is None else alive,
                          describe=lambda: f"states: {dict(self.counts())}")

    def wait_state(self, job_id: int, *states: str, timeout: float = 30) -> str:
        return self.wait_until(f"job {job_id} to be {'/'.join(states)}",
                               lambda: s if (s := self.state(job_id)) in states else None, timeout)

    def wait_started(self, job_id: int, timeout: float = 30) -> dict[str, Any]:
        """Until the job is executing and its perform has begun (its log row exists)."""
        def started() -> dict[str, Any] | None:
            rows = self.executions_of(job_id)
            return rows[-1] if rows and self.state(job_id) == "executing" else None
        return self.wait_until(f"job {job_id} to start", started, timeout)


@pytest.fixture
def make_cluster(tmp_path: Path, subprocess_env: dict[str, str], db_url: str) -> Iterator[Callable[..., Cluster]]:
    """Clusters on this test's database (each engine of ``SUITE_ENGINES``)."""
    made: list[Cluster] = []

    def make(**options: Any) -> Cluster:
        cluster = Cluster(tmp_path, subprocess_env, db_url, **options)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.cleanup()


def assert_clean_output(daemon: DaemonProcess) -> None:
    text = daemon.output()
    assert "Traceback" not in text, text[-5000:]
    assert "database is locked" not in text, text[-5000:]


# ------------------------------------------------------------------ 1. kill -9


def drain_on_every_daemon(
    c: Cluster, daemons: list[DaemonProcess], total: int
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]], float]:
    """Enqueue ``total`` no-op jobs, wait until all completed, stop the daemons cleanly and
    check that each job completed once, at its first attempt; the jobs, the executions and
    the seconds it took."""
    started = time.monotonic()
    ids = c.enqueue(*({} for _ in range(total)))
    c.wait_until(f"{total} jobs completed", lambda: c.counts()["completed"] == total, timeout=120)
    elapsed = time.monotonic() - started
    codes = [c.terminate(d) for d in daemons]
    assert codes == [0] * len(daemons), [d.output()[-2000:] for d in daemons]
    for daemon in daemons:
        assert_clean_output(daemon)
    jobs = c.jobs()
    assert sorted(jobs) == ids
    assert all(j["state"] == "completed" and j["attempt"] == 1 and not j["errors"] for j in jobs.values())
    executions = c.executions()
    per_job = Counter(e["job_id"] for e in executions)
    assert len(executions) == total and set(per_job) == set(ids), (
        f"re-executions: {[(j, n) for j, n in per_job.items() if n > 1][:10]}"
    )
    return jobs, executions, elapsed


def test_kill_9_then_restart_loses_nothing(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(heartbeat=0.2, rescue=1.0, grace=2, parallelism=8, poll=0.1)
    rnd = random.Random(1234)
    specs: list[dict[str, Any]] = []
    for i in range(300):
        if i % 60 == 7:
            specs.append({"fail": True})                            # 5 jobs: always fail
        elif i % 4 == 0:
            specs.append({"sleep": round(rnd.uniform(0.05, 0.5), 3)})  # 75 slow jobs
        else:
            specs.append({"sleep": round(rnd.uniform(0, 0.01), 4)})    # the rest: short
    ids = c.enqueue(*specs, max_attempts=3)
    designed_to_fail = {job_id for job_id, spec in zip(ids, specs, strict=True) if spec.get("fail")}
    assert len(ids) == 300 and len(designed_to_fail) == 5

    first = c.start()
    c.wait_until(
        "some jobs completed and some executing",
        lambda: (n := c.counts())["completed"] >= 30 and n["executing"] >= 3,
    )
    assert c.sessions_of(first) or not c.url.startswith("postgresql"), "a daemon's sessions carry its node id"
    assert first.kill() == -signal.SIGKILL
    c.wait_sessions_ended(first)

    left = {r[0] for r in c.query("SELECT id FROM jobrunner_jobs WHERE state = 'executing'")}
    assert left, "the killed daemon left no job executing"
    assert len(left) <= 8
    dead_nodes = {r[0] for r in c.query("SELECT DISTINCT attempted_by FROM jobrunner_jobs WHERE state = 'executing'")}
    assert len(dead_nodes) == 1 and f":{first.pid}:" in next(iter(dead_nodes))
    interrupted = {e["job_id"] for e in c.executions() if e["pid"] == first.pid and e["outcome"] is None}
    assert interrupted <= left, "an execution without an end must belong to a job left executing"

    second = c.start()
    c.wait_until(
        "every job to be final",
        lambda: sum(c.counts()[s] for s in NON_FINAL) == 0,
        timeout=120, alive=[second],
    )
    assert c.terminate(second) == 0
    assert_clean_output(second)

    jobs = c.jobs()
    assert sorted(jobs) == sorted(ids), "job count changed"
    log = defaultdict(list)
    for execution in c.executions():
        log[execution["job_id"]].append(execution)

    rescued = {job_id for job_id, job in jobs.items() if any("died" in e["error"] for e in job["errors"])}
    assert rescued == left, "exactly the jobs left executing by the dead node were rescued"
    for job_id, job in jobs.items():
        assert job["attempt"] <= job["max_attempts"] == 3, job
        executions = log[job_id]
        assert executions, f"job {job_id} never ran"
        assert [e["attempt"] for e in executions] == list(range(1, len(executions) + 1)) or job_id in left, executions
        if job_id in designed_to_fail:
            assert job["state"] == "discarded", job
            assert job["attempt"] == 3 and len(job["errors"]) == 3, job
        else:
            assert job["state"] == "completed", job
            assert job["completed_at"] is not None
            # One successful execution, by the survivor; a second one only if the
            # first executor died between the end of perform and the write of its ack.
            ok = [e["pid"] for e in executions if e["outcome"] == "ok"]
            if job_id in left:
                assert ok[-1:] == [second.pid] and ok[:-1] in ([], [first.pid]), executions
            else:
                assert len(ok) == 1 and job["attempt"] == 1, executions
        if job_id in left:
            died = [e for e in job["errors"] if "died" in e["error"]]
            assert len(died) == 1 and first_node_in(died[0]["error"], dead_nodes), job["errors"]
            assert any(e["pid"] == second.pid for e in executions), f"rescued job {job_id} did not run again"
        else:
            assert all(e["pid"] != first.pid or e["outcome"] is not None for e in executions)
        assert all(e["outcome"] is not None for e in executions if e["pid"] == second.pid), executions
    print(f"\nkill -9 left {len(left)} executing ({len(interrupted)} inside perform); all rescued and finished")


def first_node_in(text: str, nodes: set[str]) -> bool:
    return any(node in text for node in nodes)


# ------------------------------------------------------------------ 2. three processes


def test_three_processes_one_file(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(parallelism=4, poll=0.1, grace=5)
    # Three daemons start at once on a file that does not exist yet: they race on
    # creating it, switching it to WAL and migrating it.
    daemons = [c.start(wait=False) for _ in range(3)]
    for daemon in daemons:
        daemon.wait_ready()
    c.wait_until("three nodes registered", lambda: len(c.query("SELECT node FROM jobrunner_nodes")) == 3)

    total = 3000
    jobs, executions, elapsed = drain_on_every_daemon(c, daemons, total)
    assert all(e["outcome"] == "ok" and e["ended"] is not None for e in executions)
    # Each job ran once, so no two executions of a job can overlap; and every
    # execution happened in the process its job row names.
    pid_of_node = {j["attempted_by"]: int(j["attempted_by"].split(":")[-2]) for j in jobs.values()}
    for e in executions:
        assert pid_of_node[jobs[e["job_id"]]["attempted_by"]] == e["pid"]
    by_node = Counter(j["attempted_by"] for j in jobs.values())
    by_pid = Counter(e["pid"] for e in executions)
    print(f"\n{total} jobs on 3 processes in {elapsed:.1f}s ({total / elapsed:.0f}/s); per process {dict(by_pid)}")
    assert set(by_pid) == {d.pid for d in daemons}
    assert len(by_node) == 3, f"not every process did some work: {by_node}"


# ------------------------------------------------------------------ 3. cancel


def test_cancel_running_job_from_another_process(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(parallelism=2, poll=0.5)
    daemon = c.start()

    # A running job: the daemon notices the cancel and interrupts perform.
    job_id = c.enqueue_cli({"sleep": 60})
    c.wait_started(job_id)
    out = c.cli("cancel", str(job_id))
    asked = time.monotonic()
    assert out.stdout.strip() == f"job {job_id} cancelled"
    assert c.state(job_id) == "cancelled"
    execution = c.wait_until(
        "perform to be interrupted",
        lambda: (rows := c.executions_of(job_id)) and rows[-1]["outcome"] == "cancelled" and rows[-1],
    )
    latency = time.monotonic() - asked
    assert latency < 3 * c.poll, f"perform was interrupted {latency:.2f}s after the cancel"
    assert execution["ended"] - execution["started"] < 30
    shown = c.show(job_id)
    assert shown["state"] == "cancelled" and shown["cancelled_at"] is not None
    assert shown["attempt"] == 1 and "cancelled" in shown["errors"][-1]["error"]

    # An available job (its topic paused) is cancelled without ever running.
    c.cli("pause", "r")
    waiting = c.enqueue_cli({})
    assert c.state(waiting) == "available"
    assert c.cli("cancel", str(waiting)).returncode == 0
    assert c.state(waiting) == "cancelled"
    c.cli("resume", "r")
    after = c.enqueue_cli({})
    c.wait_state(after, "completed")
    assert c.executions_of(waiting) == []
    assert c.show(waiting)["attempt"] == 0

    # Finished and unknown jobs: exit 1 with a message. (An already *cancelled* job is
    # covered by test_cancel_of_an_already_cancelled_job_exits_1 below.)
    proc = c.cli("cancel", str(after), expect=1)
    assert "already completed" in proc.stderr and proc.stdout == ""
    assert c.state(after) == "completed"
    proc = c.cli("cancel", "999999", expect=1)
    assert "no job with id 999999" in proc.stderr

    assert c.state(job_id) == "cancelled"  # no stale outcome overwrote the cancel
    assert len(c.executions_of(job_id)) == 1
    assert c.terminate(daemon) == 0
    assert_clean_output(daemon)
    print(f"\nrunning job interrupted {latency * 1000:.0f} ms after `cancel` returned")


# ------------------------------------------------------------------ 4. pause / resume


def test_pause_and_resume_from_another_process(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(parallelism=4, poll=0.1)
    daemon = c.start()
    gate = c.tmp / "gate"
    running = c.enqueue_cli({"wait_for": str(gate)})
    c.wait_started(running)

    assert c.cli("pause", "r").stdout.strip() == "topic r paused"
    paused_at = time.monotonic()
    held = c.enqueue(*({} for _ in range(6)))

    def still_held() -> None:
        states = {c.state(i) for i in held}
        assert states == {"available"}, f"jobs of a paused topic were claimed: {states}"

    # The job that was running when the topic was paused goes on and finishes...
    gate.touch()
    def running_finished() -> bool:
        still_held()
        return c.state(running) == "completed"

    c.wait_until("the running job to finish", running_finished)
    freed = time.monotonic()
    # ...and for many poll intervals after that (free slots, a paused topic), nothing is claimed.
    holds_for("the paused topic's jobs stay available", still_held,
              max(freed + 5 * c.poll, paused_at + 1.0) - time.monotonic(), alive=[daemon])
    assert all(c.executions_of(i) == [] for i in held)
    stats = json.loads(c.cli("stats", "--json").stdout)["topics"]["r"]
    assert stats["available"] == 6 and stats["executing"] == 0

    assert c.cli("resume", "r").stdout.strip() == "topic r resumed"
    c.wait_until("the held jobs to complete", lambda: all(c.state(i) == "completed" for i in held))
    assert all(len(c.executions_of(i)) == 1 for i in held)
    assert c.terminate(daemon) == 0
    assert_clean_output(daemon)


# ------------------------------------------------------------------ 5. retry


def test_retry_cli(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(parallelism=4, poll=0.1)
    flag = c.tmp / "failing"
    flag.touch()
    daemon = c.start()

    discarded = [c.enqueue_cli({"fail_if_exists": str(flag)}, "--max-attempts", "1") for _ in range(3)]
    for job_id in discarded:
        c.wait_state(job_id, "discarded")
    cancelled = c.enqueue_cli({"fail_if_exists": str(flag)}, "--delay", "3600")
    assert c.state(cancelled) == "scheduled"
    c.cli("cancel", str(cancelled))
    jobs = c.jobs()
    for job_id in discarded:
        assert jobs[job_id]["attempt"] == 1 and jobs[job_id]["max_attempts"] == 1
        assert len(jobs[job_id]["errors"]) == 1 and "failing while" in jobs[job_id]["errors"][0]["error"]

    # Retried jobs become available (the topic is paused so they stay so while we look).
    c.cli("pause", "r")
    out = c.cli("retry", str(discarded[0]))
    assert out.stdout.strip() == f"1 job(s) retried: {discarded[0]}"
    shown = c.show(discarded[0])
    assert shown["state"] == "available" and shown["discarded_at"] is None
    assert shown["attempt"] == 1 and shown["max_attempts"] == 2  # one more attempt than it used
    out = c.cli("retry", "--topic", "r", "--state", "discarded")
    assert out.stdout.strip() == f"2 job(s) retried: {discarded[1]} {discarded[2]}"
    assert [c.show(i)["state"] for i in discarded[1:]] == ["available"] * 2
    assert c.state(cancelled) == "cancelled"  # not selected by --state discarded
    c.cli("retry", str(cancelled))
    shown = c.show(cancelled)
    assert shown["state"] == "available" and shown["cancelled_at"] is None and shown["attempt"] == 0

    # Nothing to retry: unknown ids and unfinished jobs exit 1; no selection at all is a usage error.
    proc = c.cli("retry", "999999", str(cancelled), expect=1)
    assert "999999" in proc.stderr and "not retryable" in proc.stderr
    assert "give job ids" in c.cli("retry", expect=2).stderr

    # The worker succeeds now: every retried job completes.
    flag.unlink()
    c.cli("resume", "r")
    for job_id in [*discarded, cancelled]:
        c.wait_state(job_id, "completed")
    jobs = c.jobs()
    for job_id in discarded:
        assert jobs[job_id]["attempt"] == 2 and len(jobs[job_id]["errors"]) == 1
        assert [e["outcome"] for e in c.executions_of(job_id)] == ["failed", "ok"]
    assert jobs[cancelled]["attempt"] == 1
    assert [e["outcome"] for e in c.executions_of(cancelled)] == ["ok"]
    proc = c.cli("retry", str(discarded[0]), expect=1)
    assert "not retryable" in proc.stderr

    assert c.terminate(daemon) == 0
    assert_clean_output(daemon)


def test_cancel_of_an_already_cancelled_job_exits_1(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster()
    job_id = c.enqueue_cli({}, "--delay", "3600")
    c.cli("cancel", str(job_id))
    errors_before = c.show(job_id)["errors"]
    proc = c.cli("cancel", str(job_id), expect=None)
    assert c.show(job_id)["errors"] == errors_before
    assert proc.returncode == 1 and "already cancelled" in proc.stderr and proc.stdout == ""


def test_cancel_then_retry_of_a_running_job_never_runs_it_twice_at_once(
    make_cluster: Callable[..., Cluster]
) -> None:
    """The node re-claims a job it still runs (cancelled and retried elsewhere before it
    noticed): it stops the old execution and writes nothing for it, and the old one has
    unwound (``perform``'s ``finally`` ran) before the new one starts: the new execution
    waits for the old one's end (the old task may take a few loop steps to see its
    cancellation, e.g. when its sleep had just ended; see tests/test_slots.py). A plain
    ``def perform`` has no such guarantee (its thread cannot be interrupted)."""
    c = make_cluster(parallelism=2, poll=0.5)
    daemon = c.start()
    gate = c.tmp / "gate"
    job_id = c.enqueue_cli({"wait_for": str(gate)})
    c.wait_started(job_id)
    runner = Runner.from_config(c.cfg)
    try:
        # An operator cancels the job and changes their mind at once (another process).
        cancelled = runner.cancel_job(job_id)
        assert cancelled is not None and cancelled.state == "cancelled"
        assert runner.retry_jobs([job_id]) == [job_id]
    finally:
        runner.store.close()
    # Both rows written: the old execution's end and the new one's start (two threads, in
    # either order).
    first, second = c.wait_until(
        "the job to run again and its first execution to have ended",
        lambda: rows[:2] if len(rows := c.executions_of(job_id)) >= 2 and rows[0]["outcome"] is not None else None)
    assert first["outcome"] == "cancelled" and first["ended"] <= second["started"], (
        f"two executions of job {job_id} at once: {first} and {second}")
    assert (first["attempt"], second["attempt"]) == (1, 2)
    gate.touch()
    c.wait_state(job_id, "completed")
    after = c.enqueue_cli({})
    c.wait_state(after, "completed")
    assert c.terminate(daemon) == 0
    assert_clean_output(daemon)


def test_cancel_then_retry_of_a_running_sync_perform_never_runs_it_twice_at_once(
    make_cluster: Callable[..., Cluster]
) -> None:
    """A plain ``def perform`` runs in a thread nothing can interrupt: when its job is
    cancelled and retried while it runs, the node that claims it again starts the new
    execution only once the old thread has returned."""
    c = make_cluster(parallelism=2, poll=0.5)
    daemon = c.start()
    gate = c.tmp / "gate"
    job_id = int(c.cli("enqueue", "tests.resilience_workers.SyncTask", "--args",
                       json.dumps({"log": str(c.log), "wait_for": str(gate)})).stdout)
    c.wait_started(job_id)
    runner = Runner.from_config(c.cfg)
    try:
        cancelled = runner.cancel_job(job_id)
        assert cancelled is not None and cancelled.state == "cancelled"
        assert runner.retry_jobs([job_id]) == [job_id]
    finally:
        runner.store.close()
    # The node claims it again (attempt 2) while the first thread still waits at the gate:
    # the new execution waits for that thread before it starts.
    c.wait_until("the job to be claimed again", lambda: c.query(
        "SELECT attempt FROM jobrunner_jobs WHERE id = :id AND state = 'executing'", {"id": job_id}) == [(2,)])
    assert len(c.executions_of(job_id)) == 1, "the second execution started while the first thread runs"
    gate.touch()
    first, second = c.wait_until(
        "both executions to end",
        lambda: len(rows := c.executions_of(job_id)) >= 2 and rows[0]["ended"] and rows[1]["ended"] and rows[:2])
    c.wait_state(job_id, "completed")
    assert c.terminate(daemon) == 0
    assert first["ended"] <= second["started"], f"two executions of job {job_id} at once: {first} and {second}"
    assert (first["attempt"], second["attempt"]) == (1, 2)
