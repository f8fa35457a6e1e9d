"""A scratch checkout where README examples run: a copy of config.toml and topics/, the
session's shared daemon (HTTP on a free port), and the jobs table the examples fill."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

from tests.daemon_harness import DaemonProcess, free_port, start_on_free_port, wait_until
from tests.readme_blocks import REPO, Block
from tests.readme_toml import merge, toml_text

PYTHON = sys.executable
FINAL_STATES = ("completed", "cancelled", "discarded")
BLOCK_TIMEOUT = 45.0
README_PORT = re.compile(r"\b(localhost|127\.0\.0\.1):8630\b")
# Reap whatever the block left in the background (`python -m jobrunner run &` … `kill %1`)
# and fail when it did not end cleanly: a daemon answers SIGTERM with exit code 0.
REAP_BACKGROUND = """
for _pid in $(jobs -p); do
  wait "$_pid" || { _rc=$?; echo "readme-test: background process $_pid exited with $_rc" >&2; exit 1; }
done
"""


@dataclass
class Outcome:
    """What running one block gave."""

    returncode: int
    output: str

    def tail(self, lines: int = 60) -> str:
        """The end of the output, for assertion messages."""
        return "\n".join(self.output.splitlines()[-lines:])


class Running:
    """A started command whose output a thread collects as it comes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.chunks: list[bytes] = []
        self.ended = False
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        stdout = cast(io.BufferedReader, self.proc.stdout)  # a pipe with Popen's default buffering
        for chunk in iter(lambda: stdout.read1(65536), b""):
            with self.changed:
                self.chunks.append(chunk)
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def text(self) -> str:
        """The output so far."""
        with self.changed:
            return b"".join(self.chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` is in the output (AssertionError when it never comes)."""
        with self.changed:
            self.changed.wait_for(lambda: text in b"".join(self.chunks).decode(errors="replace") or self.ended,
                                  timeout)
        if text not in self.text():
            raise AssertionError(f"no {text!r} in the block's output within {timeout:g}s:\n{self.text()}")

    def end(self) -> None:
        """Kill whatever is left of the command's process group (a daemon started with ``&``
        by a block that failed before its ``kill %1``) and collect the rest of the output."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class ReadmeSession:
    """One scratch directory shared by every README block of a test run, in README order:
    what one block enqueued or configured, the next one sees."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        shutil.copy2(REPO / "config.toml", workdir / "config.toml")
        shutil.copytree(REPO / "topics", workdir / "topics", ignore=shutil.ignore_patterns("__pycache__"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
        self.env["PATH"] = os.pathsep.join([str(Path(PYTHON).parent), self.env.get("PATH", "")])
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        self.settings = tomllib.loads((workdir / "config.toml").read_text(encoding="utf-8"))
        # The README's 8630 becomes this port: in the blocks' text and in every config we write.
        self.port = free_port()
        self.daemon: DaemonProcess | None = None
        self.daemon_log = workdir / "daemon.log"
        self.problems: list[str] = []  # daemons that did not stop cleanly
        self.probes: set[int] = set()  # jobs the harness itself enqueued
        self.last_output = ""  # what the last example printed

    # ------------------------------------------------------------ the shared daemon
    @property
    def url(self) -> str:
        """The shared daemon's HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start_daemon(self) -> None:
        """Start the shared daemon (if it is not running) and wait until its API answers."""
        if self.daemon is not None:
            return
        cfg = self.workdir / "readme-daemon.toml"

        def make(port: int) -> DaemonProcess:
            if port != self.port:  # the README's 8630 in later blocks becomes this port
                self.port = port
                self._write_config()
            settings = merge(self.settings, {"http": {"enabled": True, "host": "127.0.0.1", "port": port}})
            cfg.write_text(toml_text(settings), encoding="utf-8")
            # Readiness on the API alone: a README block may change the log level or format.
            return DaemonProcess(cfg, log_path=self.daemon_log, env=self.env, cwd=self.workdir, http_port=port,
                                 topics=set(settings.get("topics", {})), ready_event=None)

        # The first try on the port the blocks were localized to; on another only when it was taken.
        ports = iter([self.port])
        self.daemon = start_on_free_port(lambda fresh: make(next(ports, fresh)))

    def stop_daemon(self) -> None:
        """SIGTERM the shared daemon; anything but a clean exit 0 is recorded as a problem."""
        if self.daemon is None:
            return
        daemon, self.daemon = self.daemon, None
        code = daemon.stop(timeout=30)
        if code != 0:
            self.problems.append(f"the shared daemon exited with {code}:\n{self.daemon_output()}")

    def add_config(self, block: Block) -> None:
        """A README block of configuration to add: from now on the scratch config.toml (and
        the shared daemon, restarted when it runs) has it."""
        self.settings = merge(self.settings, tomllib.loads(block.text))
        self._write_config()
        if self.daemon is not None:
            self.stop_daemon()
            self.start_daemon()

    def _write_config(self) -> None:
        settings = self.settings
        if settings.get("http", {}).get("enabled"):
            settings = merge(settings, {"http": {"port": self.port}})
        (self.workdir / "config.toml").write_text(toml_text(settings), encoding="utf-8")

    def daemon_output(self) -> str:
        """Everything the shared daemon logged so far."""
        return self.daemon_log.read_text(errors="replace") if self.daemon_log.exists() else ""

    # ------------------------------------------------------------ the jobs table
    def jobs(self, after: int = 0) -> list[dict[str, Any]]:
        """Rows of the session's jobs table with an id above ``after`` (none before it exists)."""
        db = self.workdir / "jobrunner.db"
        if not db.exists():
            return []
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            conn.row_factory = sqlite3.Row
            try:
                rows = conn.execute("SELECT * FROM jobrunner_jobs WHERE id > ? ORDER BY id", (after,)).fetchall()
            except sqlite3.OperationalError as exc:  # not migrated yet
                if "no such table" in str(exc):
                    return []
                raise
        return [dict(row) for row in rows]

    def last_id(self) -> int:
        """The highest job id so far (0 for none)."""
        rows = self.jobs()
        return rows[-1]["id"] if rows else 0

    def finish_due_jobs(self, after: int, timeout: float = 45.0) -> list[dict[str, Any]]:
        """Jobs created after id ``after`` that were due at once, once each is final (the shared
        daemon runs them when they are not final yet); external topics' jobs aside."""
        # Jobs of external topics wait for a program that claims them: not ours to finish.
        external = {name for name, topic in self.settings.get("topics", {}).items() if topic.get("external")}
        waiting: list[tuple[int, str, str]] = []

        def all_final() -> tuple[list[dict[str, Any]]] | None:
            due = [job for job in self.jobs(after) if job["scheduled_at"] <= job["inserted_at"] + 1.0
                   and job["id"] not in self.probes and job["topic"] not in external]
            waiting[:] = [(job["id"], job["worker"], job["state"]) for job in due if job["state"] not in FINAL_STATES]
            if waiting:
                self.start_daemon()
                return None
            return (due,)  # truthy even when nothing is due

        (due,) = wait_until("the jobs of the block to be final", all_final, timeout=timeout,
                         describe=lambda: f"not final: {waiting[:20]}")
        return due

    # ------------------------------------------------------------ running blocks
    def localize(self, text: str) -> str:
        """The block with the README's port 8630 replaced by the shared daemon's."""
        return README_PORT.sub(lambda m: f"{m.group(1)}:{self.port}", text)

    def spawn(self, args: list[str]) -> Running:
        """Start a command in the scratch directory, in a process group of its own."""
        proc = subprocess.Popen(args, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return Running(proc)

    def run(self, args: list[str], timeout: float = BLOCK_TIMEOUT) -> Outcome:
        """Run a command in the scratch directory; its output (stdout and stderr) as an Outcome.
        Whatever it leaves running in the background when it exits is killed."""
        running = self.spawn(args)
        try:
            running.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{args[:3]} did not finish within {timeout:g}s (a daemon in the foreground? "
                                 f"mark the block with a readme-test directive):\n{running.text()}") from None
        finally:
            running.end()
        return Outcome(running.proc.returncode, running.text())

    def run_shell(self, text: str) -> Outcome:
        """A shell block as one bash script (errexit, pipefail), then its background jobs reaped."""
        return self.run(["bash", "-e", "-o", "pipefail", "-c", self.localize(text) + REAP_BACKGROUND])

    def run_stream(self, text: str, topic: str | None) -> tuple[Outcome, int]:
        """A shell block whose last command follows ``/events``: once it is connected, enqueue a
        probe job (on ``topic`` when given), wait for its event, then stop the daemon, which
        ends the stream. Returns the outcome and the probe's id."""
        running = self.spawn(["bash", "-e", "-o", "pipefail", "-c", self.localize(text) + REAP_BACKGROUND])
        try:
            running.wait_for(": connected")
            probe = {"worker": "readme.Probe", "topic": topic} if topic else {"worker": "topics.demo.PrintMessage"}
            response = httpx.post(f"{self.url}/jobs", json={**probe, "args": {"message": "probe"}}, timeout=10)
            assert response.status_code == 201, response.text
            probe_id = int(response.json()["id"])
            self.probes.add(probe_id)
            running.wait_for(f'"id": {probe_id}')
            if topic:  # nobody serves the probe: cancel it so it leaves the table final
                httpx.post(f"{self.url}/jobs/{probe_id}/cancel", timeout=10)
            self.stop_daemon()
            running.proc.wait(timeout=BLOCK_TIMEOUT)
        finally:
            running.end()
        return Outcome(running.proc.returncode, running.text()), probe_id

    def run_python(self, block: Block) -> Outcome:
        """A Python block as a script (or, when it holds tests, as a pytest module) in the scratch dir."""
        is_tests = "pytest" in block.directive or re.search(r"^(async )?def test_", block.text, re.MULTILINE)
        name = f"{'test_' if is_tests else ''}readme_l{block.line}.py"
        (self.workdir / name).write_text(self.localize(block.text), encoding="utf-8")
        if is_tests:
            # schemathesis' plugin (installed for our own suite) only slows the start here
            return self.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:schemathesis", name])
        return self.run([PYTHON, name])
