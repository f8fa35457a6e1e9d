"""``python -m jobrunner top`` in a real pseudo-terminal, against a database a daemon works on."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_dashboard import MODULES, TOPICS, W
from tests.test_http import Daemon

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("top"), TOPICS, env=MODULES).start()
    yield d
    d.close()


class Terminal:
    """``top`` on the child side of a pseudo-terminal (its controlling terminal, so that
    Ctrl-C typed there interrupts it as it would a person's)."""

    def __init__(self, daemon: Daemon) -> None:
        argv = [sys.executable, "-m", "jobrunner", "--config", str(daemon.cfg), "top", "--interval", "0.2"]
        env = {**daemon.env, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec at once
            os.execvpe(argv[0], argv, env)
        self.screen = b""

    def read_until(self, text: bytes, timeout: float = 20.0) -> None:
        """Read the screen until ``text`` has been drawn."""
        deadline = time.monotonic() + timeout
        start = len(self.screen)
        while text not in self.screen[start:]:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared; screen so far:\n{self.screen[-3000:]!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"top exited before drawing {text!r}:\n{self.screen[-3000:]!r}"
                self.screen += chunk

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def exit_code(self, timeout: float = 10.0) -> int:
        """Wait for the child to exit (draining its output meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    self.screen += os.read(self.fd, 65536)
                except OSError:
                    pass
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError(f"top did not exit within {timeout}s:\n{self.screen[-3000:]!r}")


def test_top_shows_live_counts_and_quits_on_q(daemon: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    terminal = Terminal(daemon)
    terminal.read_until(b"q or Ctrl-C quits")
    terminal.read_until(b"web")
    job = daemon.enqueue({"worker": f"{W}.Gated", "args": {"gate": str(gate)}})
    daemon.wait_job(job["id"], lambda j: j["state"] == "executing")
    terminal.read_until(b"held")  # a redraw after the job started: one row per topic, every state counted
    assert b"run" in terminal.screen and b"err 1m" in terminal.screen
    gate.touch()
    daemon.wait_job(job["id"], lambda j: j["state"] == "completed")
    terminal.read_until(b"held")
    terminal.type(b"q")
    assert terminal.exit_code() == 0
    assert terminal.screen.rstrip().endswith(b"\x1b[?1049l") or b"\x1b[?1049l" in terminal.screen[-200:], \
        "the terminal's own screen was not given back"


def test_top_quits_on_ctrl_c(daemon: Daemon) -> None:
    terminal = Terminal(daemon)
    terminal.read_until(b"q or Ctrl-C quits")
    terminal.type(b"\x03")  # the terminal turns it into SIGINT for top
    assert terminal.exit_code() == 0
    assert b"Traceback" not in terminal.screen


def test_top_once_prints_the_table(daemon: Daemon) -> None:
    proc = daemon.cli("pause", "held")
    try:
        proc = subprocess.run([sys.executable, "-m", "jobrunner", "--config", str(daemon.cfg), "top", "--once"],
                              env={**daemon.env, "COLUMNS": "100"}, capture_output=True, text=True, timeout=60)
    finally:
        daemon.cli("resume", "held")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("topic"))
    assert header.split() == ["topic", "sched", "block", "avail", "run", "retry", "done", "disc", "canc",
                              "/s", "now", "/s", "1m", "err", "1m"]
    assert any(line.split()[:2] == ["held", "paused"] for line in lines)
    assert any(line.split()[0] == "web" for line in lines)
    assert "node(s) alive" in lines[-1] and "quits" not in proc.stdout
