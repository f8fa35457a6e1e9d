"""Workers that hand back OS processes (ExternalProcess), for tests."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import anyio

from jobrunner import Job, Worker
from jobrunner.process import ExternalProcess, ProcessOutcome

#: after_async calls: (job id, exit code)
after_async_calls: list[tuple[int, int | None]] = []

SCRIPT = """
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(float(sys.argv[2]))
sys.stderr.write("exiting with " + sys.argv[3] + "\\n")
sys.exit(int(sys.argv[3]))
"""


class Sleep(Worker):
    """Starts `python -c SCRIPT pidfile seconds code` and returns the process."""

    topic = "procs"
    max_attempts = 2

    def backoff(self, job: Job) -> float:
        return 0.0

    async def perform(self, job: Job) -> Any:
        process = await anyio.open_process(
            [sys.executable, "-c", SCRIPT, job.args["pidfile"], str(job.args.get("seconds", 0)),
             str(job.args.get("code", 0))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        return ExternalProcess(process, kill_grace=1.0)

    async def after_async(self, job: Job, outcome: ProcessOutcome) -> Any:
        after_async_calls.append((job.id, outcome.exit_code))
        return {"exit_code": outcome.exit_code, "pidfile": job.args["pidfile"]}


class TimedSleep(Sleep):
    timeout = 1.0


class PidOnly(Worker):
    """Returns the bare pid of a child it spawned."""

    topic = "procs"

    async def perform(self, job: Job) -> Any:
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "import sys; sys.exit(0)"], os.environ,
                             setsid=True)
        return ExternalProcess(pid)


def _argv(job: Job) -> list[str]:
    return [sys.executable, "-c", SCRIPT, job.args["pidfile"], str(job.args.get("seconds", 0)),
            str(job.args.get("code", 0))]


class BareAnyio(Sleep):
    """Returns the started anyio process itself, not wrapped in ExternalProcess."""

    async def perform(self, job: Job) -> Any:
        return await anyio.open_process(_argv(job), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)


class BarePopen(Sleep):
    """A plain ``def perform`` that returns the ``subprocess.Popen`` itself."""

    def perform(self, job: Job) -> Any:
        return subprocess.Popen(_argv(job), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)


class ReturnsInt(Worker):
    """Returns a number that happens to be a pid: a plain result."""

    topic = "procs"

    async def perform(self, job: Job) -> Any:
        return os.getpid()
