"""The shell topic: run an external command named in the configuration.

    [topics.shell.options.commands]
    java_version = ["java", "-version"]
    report = ["/opt/reports/build.sh", "--quiet"]

    python -m jobrunner enqueue topics.shell.RunCommand --args '{"command": "report", "args": ["2026-11"]}'

Which programs may run is decided by the configuration only: a job names a command and
may append arguments; they are passed as argv, never through a shell. The result holds
the exit code and the tail of stdout and stderr; a non-zero exit fails the attempt
(retried with the topic's backoff). The worker's timeout and cancellation terminate the
command's whole process group (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import subprocess
from typing import Any

import anyio

from jobrunner import Cancel, Job, ProcessFailed, Worker
from jobrunner.process import ExternalProcess

OUTPUT_TAIL = 4000


class RunCommand(Worker):
    """Run ``options.commands[args.command]`` with ``args.args`` appended."""

    topic = "shell"
    max_attempts = 3
    timeout = 600

    async def perform(self, job: Job) -> Any:
        commands = self.options.get("commands", {})
        name = job.args.get("command")
        if not isinstance(name, str) or name not in commands:
            allowed = ", ".join(sorted(commands)) or "none configured"
            return Cancel(f"command {name!r} is not allowed (allowed: {allowed})")
        extra = job.args.get("args", [])
        if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
            return Cancel("args.args must be a list of strings")
        argv = [*commands[name], *extra]
        try:
            process = await anyio.open_process(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
        except OSError as exc:
            return Cancel(f"command {name!r} cannot start: {exc.strerror or exc}")
        watched = ExternalProcess(process, kill_grace=float(self.options.get("kill_grace", 5.0)))
        stdout: list[bytes] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_collect, process.stdout, stdout)
                outcome = await watched.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await watched.terminate()
            raise
        out = b"".join(stdout).decode(errors="replace")[-OUTPUT_TAIL:]
        if not outcome.ok:
            raise ProcessFailed(outcome.exit_code, outcome.stderr_tail)
        return {"command": name, "exit_code": outcome.exit_code, "stdout": out, "stderr": outcome.stderr_tail}


async def _collect(stream: Any, into: list[bytes]) -> None:
    if stream is None:
        return
    async for chunk in stream:
        into.append(chunk)
        if sum(map(len, into)) > 4 * OUTPUT_TAIL:
            del into[: len(into) // 2]
