"""The fork server (tests/forkserver.py) gives what a cold ``python -m jobrunner`` gives.

Most command-line and daemon tests run jobrunner as forks of a server that imported it
once; these tests hold that a fork is indistinguishable, where it shows, from the cold
start a user's shell makes: output, exit codes, environment, working directory, the
import path, signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests import forkserver
from tests.daemon_harness import child_env, run_cli, wait_until


def cold(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobrunner", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_fork_prints_and_exits_as_a_cold_start(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "jobs.db"}"\n\n[runner]\nmodules = ["tests.workers"]\n\n'
                   "[topics.t]\n")
    env = child_env()
    for args in (["--help"], ["--config", str(cfg), "enqueue", "tests.workers.Noop", "--args", "{1"],
                 ["--config", str(cfg), "show", "12345"], ["--config", str(tmp_path / "missing.toml"), "stats"]):
        forked, started_cold = run_cli(None, *args, env=env, cwd=tmp_path), cold(*args, env=env, cwd=tmp_path)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            started_cold.returncode, started_cold.stdout, started_cold.stderr), args
    # Relative paths resolve in the caller's directory; the database was made there.
    assert run_cli(None, "--config", "config.toml", "stats", env=env, cwd=tmp_path).returncode == 0


def test_a_fork_takes_the_callers_environment_and_import_path(tmp_path: Path) -> None:
    """``JOBRUNNER_*`` variables configure it, and a worker module on the caller's
    PYTHONPATH (or in its working directory) is imported by the fork, not the server."""
    (tmp_path / "mine.py").write_text("from jobrunner import Worker\n\n"
                                      "class Mine(Worker):\n    topic = 't'\n\n    async def perform(self, job):\n"
                                      "        return 1\n")
    (tmp_path / "config.toml").write_text("[topics.t]\n")
    env = child_env(JOBRUNNER_DATABASE_URL=f"sqlite:///{tmp_path / 'env.db'}")
    out = run_cli(None, "--config", "config.toml", "enqueue", "mine.Mine", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "env.db").exists()
    assert "mine" not in sys.modules


def test_a_forked_daemon_is_a_process_of_its_own(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "jobs.db"}"\n\n[topics.t]\n')
    with (tmp_path / "daemon.log").open("wb") as log:
        proc = forkserver.spawn([sys.executable, "-m", "jobrunner", "--config", str(cfg), "run"], env=child_env(),
                                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_until("the daemon to start", lambda: "runner_started" in (tmp_path / "daemon.log").read_text())
    assert proc.pid != os.getpid() and proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "jobrunner stopped" in (tmp_path / "daemon.log").read_text()
    killed = forkserver.spawn([sys.executable, "-m", "jobrunner", "--config", str(cfg), "run"], env=child_env(),
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed.kill()
    assert killed.wait(timeout=30) == -signal.SIGKILL
