"""The command line contract, through real subprocesses on a real SQLite file."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from jobrunner.job import ALL_STATES
from tests.daemon_harness import run_cli, wait_until

CONFIG = """
[database]
url = "sqlite:///{db}"

[runner]
modules = ["tests.workers"]
shutdown_grace = {grace}

[topics.t]
parallelism = 2
poll_interval = 0.1
backoff = {{ strategy = "constant", base = 0.0, max = 1.0, jitter = 0.0 }}
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(db=tmp_path / "cli.db", grace=0.5))
    return path


def cli(cfg: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = run_cli(cfg, *args, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def job_state(db: Path, job_id: int) -> str | None:
    with sqlite3.connect(db) as conn:
        row: tuple[str] | None = conn.execute("SELECT state FROM jobrunner_jobs WHERE id = ?", (job_id,)).fetchone()
    return row and row[0]


def wait_state(db: Path, job_id: int, states: set[str], proc: subprocess.Popen[str], timeout: float = 20) -> str:
    """Poll the table (the daemon's only shared state) until the job reaches one of ``states``."""

    def reached() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited early with {proc.returncode}: {proc.communicate()[1]}")
        state = job_state(db, job_id)
        return state if state in states else None

    return wait_until(f"job {job_id} to be {'/'.join(sorted(states))}", reached, timeout=timeout,
                      describe=lambda: f"it is {job_state(db, job_id)}")


def test_enqueue_prints_the_id_and_show_stats_jobs_report_it(cfg: Path, subprocess_env: dict[str, str]) -> None:
    out = cli(cfg, subprocess_env, "enqueue", "tests.workers.Add", "--args", '{"a": 1, "b": 2}',
              "--priority", "0", "--max-attempts", "3")
    job_id = int(out.stdout)
    assert out.stdout == f"{job_id}\n"
    delayed = int(cli(cfg, subprocess_env, "enqueue", "tests.workers.Noop", "--delay", "60").stdout)

    shown = json.loads(cli(cfg, subprocess_env, "show", str(job_id), "--json").stdout)
    for key in ("id", "topic", "worker", "args", "state", "priority", "attempt", "max_attempts",
                "errors", "result", "inserted_at", "scheduled_at", "attempted_at", "completed_at"):
        assert key in shown
    assert shown["args"] == {"a": 1, "b": 2} and shown["priority"] == 0 and shown["max_attempts"] == 3
    assert shown["state"] == "available" and shown["inserted_at"].endswith("+00:00")

    stats = json.loads(cli(cfg, subprocess_env, "stats", "--json").stdout)
    assert set(stats["topics"]["t"]) == set(ALL_STATES)
    assert stats["topics"]["t"]["available"] == 1 and stats["topics"]["t"]["scheduled"] == 1

    listed = json.loads(cli(cfg, subprocess_env, "jobs", "--state", "scheduled", "--json").stdout)
    assert [j["id"] for j in listed["jobs"]] == [delayed]
    assert "tests.workers.Add" in cli(cfg, subprocess_env, "jobs").stdout
    assert "available" in cli(cfg, subprocess_env, "show", str(job_id)).stdout
    assert "demo" not in cli(cfg, subprocess_env, "stats").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "tests.workers.Add", "--args", "{nope"], "--args is not valid JSON"),
        (["enqueue", "tests.workers.Missing"], "no attribute 'Missing'"),
        (["enqueue", "tests.workers.Add", "--priority", "11"], "priority"),
        (["enqueue", "tests.workers.Add", "--delay", "soon"], "invalid"),
        (["jobs", "--state", "sleeping"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    cfg: Path, subprocess_env: dict[str, str], args: list[str], message: str
) -> None:
    proc = cli(cfg, subprocess_env, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stdout == ""


def test_unknown_job_exits_1(cfg: Path, subprocess_env: dict[str, str]) -> None:
    proc = cli(cfg, subprocess_env, "show", "999", check=False)
    assert proc.returncode == 1 and "no job with id 999" in proc.stderr


def test_config_errors_name_file_table_and_key(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[topics.t]\nparallelism = "many"\n')
    proc = cli(bad, subprocess_env, "stats", check=False)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "[topics.t]" in proc.stderr and "'parallelism'" in proc.stderr
    proc = cli(tmp_path / "absent.toml", subprocess_env, "stats", check=False)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_migrate_is_explicit_and_idempotent(cfg: Path, subprocess_env: dict[str, str]) -> None:
    assert "applied 0001_create_jobs" in cli(cfg, subprocess_env, "migrate").stdout
    assert "up to date" in cli(cfg, subprocess_env, "migrate").stdout


def start_daemon(cfg: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobrunner", "--config", str(cfg), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def stop(daemon: subprocess.Popen[str]) -> None:
    """Kill the daemon if a test failed midway, and close its pipes."""
    if daemon.poll() is None:
        daemon.kill()
    daemon.communicate(timeout=20)


@pytest.mark.parametrize("command", [["run"], [], ["run", "--backend", "trio"]])
def test_daemon_runs_jobs_and_stops_cleanly_on_sigterm(
    cfg: Path, subprocess_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    db = tmp_path / "cli.db"
    daemon = start_daemon(cfg, subprocess_env, *command)
    try:
        job_id = int(cli(cfg, subprocess_env, "enqueue", "tests.workers.FailTimes", "--args", '{"fails": 1}').stdout)
        assert wait_state(db, job_id, {"completed"}, daemon) == "completed"
        shown = json.loads(cli(cfg, subprocess_env, "show", str(job_id), "--json").stdout)
        assert shown["attempt"] == 2 and len(shown["errors"]) == 1
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    finally:
        stop(daemon)


def test_sigterm_puts_running_jobs_back_after_the_grace(
    cfg: Path, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "cli.db"
    daemon = start_daemon(cfg, subprocess_env, "run")
    try:
        job_id = int(cli(cfg, subprocess_env, "enqueue", "tests.workers.Sleeper", "--args", '{"seconds": 300}').stdout)
        wait_state(db, job_id, {"executing"}, daemon)
        daemon.send_signal(signal.SIGINT)
        assert daemon.wait(timeout=20) == 0
    finally:
        stop(daemon)
    shown = json.loads(cli(cfg, subprocess_env, "show", str(job_id), "--json").stdout)
    assert shown["state"] == "available" and shown["attempt"] == 0
