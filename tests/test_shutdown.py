"""Shutdown while a plain ``def perform`` runs in a worker thread.

The daemon tests drive ``python -m jobrunner run`` with real signals and watch the jobs
table, the daemon's log lines and marker files the worker writes (``tests.workers.GateFile``);
nothing sleeps to guess timing. The in-process test pins down the race a signal can hit:
the thread returns at the moment its job is cancelled.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest

from jobrunner import Job, Worker
from jobrunner.config import TopicSettings
from jobrunner.executor import Executor, Finished
from jobrunner.threads import performs_in_threads
from tests.daemon_harness import DaemonProcess, run_cli, wait_until

CONFIG = """
[database]
url = "sqlite:///{db}"

[runner]
modules = ["tests.workers"]
shutdown_grace = {grace}

[topics.t]
parallelism = 2
poll_interval = 0.1
"""

BACKENDS = ["asyncio", "trio"]


class Daemon:
    """``python -m jobrunner run`` on a fresh SQLite file (``tests/daemon_harness.py``), started
    and ready; output goes to a log file."""

    def __init__(self, tmp: Path, env: dict[str, str], backend: str, grace: float) -> None:
        self.tmp = tmp
        self.env = env
        self.db = tmp / "jobs.db"
        self.cfg = tmp / "config.toml"
        self.cfg.write_text(CONFIG.format(db=self.db, grace=grace))
        self.log = tmp / "daemon.log"
        self.process = DaemonProcess(self.cfg, log_path=self.log, env=env, run_options=["--backend", backend])
        proc = self.process.start().proc
        assert proc is not None  # set by start()
        self.proc = proc

    def enqueue(self, worker: str, args: str) -> int:
        out = run_cli(self.cfg, "enqueue", worker, "--args", args, env=self.env)
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    def row(self, job_id: int) -> tuple[str, int, str | None]:
        with sqlite3.connect(self.db, timeout=30) as conn:
            row: tuple[str, int, str | None] | None = conn.execute(
                "SELECT state, attempt, result FROM jobrunner_jobs WHERE id = ?", (job_id,)).fetchone()
            assert row is not None, f"no job {job_id}"
            return row

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, what: str, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        return wait_until(what, predicate, timeout=timeout, alive=[self.process],
                          describe=lambda: f"output:\n{self.process.output_tail()}")

    def kill(self) -> None:
        self.process.kill()


@pytest.fixture
def daemons(subprocess_env: dict[str, str]) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(tmp: Path, backend: str, grace: float) -> Daemon:
        daemon = Daemon(tmp, subprocess_env, backend, grace)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def start_gated_job(daemon: Daemon, tmp: Path) -> int:
    """Enqueue a GateFile job and wait until its perform is running in a thread."""
    job_id = daemon.enqueue("tests.workers.GateFile", f'{{"dir": "{tmp}"}}')
    daemon.wait_until("the perform to start",
                      lambda: lines(tmp / "started") and daemon.row(job_id)[0] == "executing")
    return job_id


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_signal_stops_at_once_while_a_thread_perform_runs(
    tmp_path: Path, daemons: Callable[..., Daemon], backend: str
) -> None:
    daemon = daemons(tmp_path, backend, grace=60)
    job_id = start_gated_job(daemon, tmp_path)
    daemon.proc.send_signal(signal.SIGINT)
    daemon.wait_until("the first signal", lambda: "SIGINT received" in daemon.output())
    daemon.proc.send_signal(signal.SIGTERM)
    # The gate stays shut: the perform never returns, and the daemon must not wait for it.
    assert daemon.proc.wait(timeout=20) == 0, daemon.output()
    assert "SIGTERM again" in daemon.output()
    assert daemon.row(job_id)[:2] == ("available", 0)  # put back, the attempt not counted
    assert lines(tmp_path / "finished") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_thread_perform_past_the_grace_does_not_hold_the_exit(
    tmp_path: Path, daemons: Callable[..., Daemon], backend: str
) -> None:
    daemon = daemons(tmp_path, backend, grace=0.3)
    job_id = start_gated_job(daemon, tmp_path)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=20) == 0, daemon.output()
    assert "topic_grace_expired" in daemon.output()
    assert daemon.row(job_id)[:2] == ("available", 0)
    assert lines(tmp_path / "finished") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_job_finished_during_the_grace_is_recorded_not_run_again(
    tmp_path: Path, daemons: Callable[..., Daemon], backend: str
) -> None:
    daemon = daemons(tmp_path, backend, grace=60)
    job_id = start_gated_job(daemon, tmp_path)
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_until("the signal", lambda: "SIGTERM received" in daemon.output())
    (tmp_path / "gate").touch()  # the perform returns during the grace period
    assert daemon.proc.wait(timeout=30) == 0, daemon.output()
    assert daemon.row(job_id) == ("completed", 1, '"through"')
    assert lines(tmp_path / "started") == [f"{job_id} 1"] == lines(tmp_path / "finished")


# ---------------------------------------------------------------- the race, in-process


class Returns(Worker):
    """A plain perform that waits for ``gate``, then returns or raises."""

    topic = "t"
    entered = threading.Event()
    gate = threading.Event()
    hooked: ClassVar[list[str]] = []

    def perform(self, job: Job) -> Any:
        Returns.entered.set()
        Returns.gate.wait(30)
        if job.args.get("fail"):
            raise ValueError("failed just before the cancel")
        return "returned"

    async def after_error(self, job: Job, error: BaseException) -> None:
        await anyio.sleep(0)  # a hook that awaits still runs: the cancelled job shields it
        Returns.hooked.append(str(error))


@pytest.mark.anyio
@pytest.mark.parametrize("fail", [False, True], ids=["returns", "raises"])
async def test_a_thread_that_returned_as_its_job_was_cancelled_keeps_its_outcome(fail: bool) -> None:
    Returns.entered.clear()
    Returns.gate.clear()
    Returns.hooked.clear()
    executor = Executor(TopicSettings(name="t"), anyio.CapacityLimiter(1))
    now = time.time()
    job = Job(id=1, topic="t", worker=f"{__name__}.Returns", args={"fail": fail}, state="executing",
              priority=2, attempt=1, max_attempts=3, inserted_at=now, scheduled_at=now, attempted_at=now)
    finished: list[Finished] = []

    async def run(scope: anyio.CancelScope) -> None:
        with scope:
            finished.append(await executor.execute(job))

    busy = performs_in_threads()
    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, scope)
        await anyio.to_thread.run_sync(Returns.entered.wait)
        Returns.gate.set()
        # Without yielding to the event loop: wait until the thread has returned, then
        # cancel, so the cancellation reaches the job before the thread's result does.
        while performs_in_threads() >= busy + 1:
            time.sleep(0.001)
        scope.cancel()
    assert len(finished) == 1, "the outcome of a perform that had returned was dropped"
    if fail:
        assert finished[0].ack.kind == "retry" and Returns.hooked == ["failed just before the cancel"]
    else:
        assert finished[0].ack.kind == "complete" and finished[0].payload["result"] == "returned"
