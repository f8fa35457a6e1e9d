"""Start ``python -m jobrunner`` processes without paying the interpreter's start-up each time.

On a 2-core VM a cold ``python -m jobrunner`` spends about a second of CPU importing
SQLAlchemy, anyio and jobrunner before it does anything, and the suite starts hundreds of
them: that start-up was most of the suite's CPU. A fork server imports all of that once;
each ``python -m jobrunner ARGS`` the tests ask for is then a fork of it that takes the
caller's environment, working directory, arguments and standard streams and runs
jobrunner's real entry point (``runpy`` of ``jobrunner.__main__``). It is a real process:
its own pid, signals, exit code and output; kill -9 kills it.

:func:`spawn` returns a :class:`ForkedProcess` (the parts of ``subprocess.Popen`` the
harness uses); :func:`run` is ``subprocess.run(..., capture_output=True, text=True)``.
Both fall back to a cold ``subprocess`` start for any other command, when the server
cannot start, or everywhere with ``JOBRUNNER_TESTS_COLD_START=1`` (the README examples and
the packaging test always start cold: they prove what a user's shell does).

The server itself is :mod:`tests.forkserver_serve`, started once per test process.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tests.forkserver_serve import HEADER

REPO = Path(__file__).resolve().parent.parent
#: Set to 1 to start every process cold (as before the fork server).
ENV_COLD = "JOBRUNNER_TESTS_COLD_START"
StreamArg = int | IO[Any] | None


# ---------------------------------------------------------------- the client


class ForkedProcess:
    """A process the fork server started: what the harness uses of ``subprocess.Popen``."""

    def __init__(self, args: Sequence[str], conn: socket.socket) -> None:
        self.args = list(args)
        self._conn = conn
        self._buffer = b""
        self.returncode: int | None = None
        self.pid = int(self._line(None))

    def _line(self, timeout: float | None) -> str:
        self._conn.settimeout(timeout)
        while b"\n" not in self._buffer:
            chunk = self._conn.recv(64)
            if not chunk:
                raise ConnectionError(f"the fork server is gone (process {self.args})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        if self.returncode is None:
            try:
                self.returncode = int(self._line(0))
            except (BlockingIOError, TimeoutError):
                return None
            self._conn.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit; subprocess.TimeoutExpired after ``timeout`` seconds."""
        if self.returncode is None:
            try:
                self.returncode = int(self._line(timeout))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
            self._conn.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` unless the process is known to have exited."""
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


class _Server:
    """The fork server of this test process, started on first use."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="jobrunner-fork-")
        self.path = os.path.join(self._dir, "socket")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
        env["PYTHONPATH"] = str(REPO)
        script = Path(__file__).with_name("forkserver_serve.py")
        self.proc = subprocess.Popen([sys.executable, str(script), self.path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=self._dir)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline() != b"ready\n":
            raise RuntimeError("the fork server did not start")
        atexit.register(self.close)

    def spawn(self, args: Sequence[str], env: Mapping[str, str], cwd: str, fds: Sequence[int]) -> ForkedProcess:
        body = json.dumps({"args": list(args), "env": dict(env), "cwd": cwd}).encode()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        socket.send_fds(conn, [HEADER.pack(len(body))], list(fds))
        conn.sendall(body)
        return ForkedProcess([sys.executable, "-m", "jobrunner", *args], conn)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        for name in os.listdir(self._dir):
            os.unlink(os.path.join(self._dir, name))
        os.rmdir(self._dir)


_server: _Server | None = None
_server_failed = False
_lock = threading.Lock()


def _the_server() -> _Server | None:
    global _server, _server_failed
    with _lock:
        if _server is None and not _server_failed and os.environ.get(ENV_COLD) != "1":
            try:
                _server = _Server()
            except (OSError, RuntimeError) as exc:
                _server_failed = True
                print(f"forkserver: starting cold from now on ({exc})", file=sys.stderr)
        return _server


def _fd(stream: StreamArg, default: int, opened: list[int]) -> int:
    if stream is None:
        return default
    if stream == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR)
        opened.append(fd)
        return fd
    if isinstance(stream, int):
        return stream
    return stream.fileno()


def spawn(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
    stdin: StreamArg = None, stdout: StreamArg = None, stderr: StreamArg = None,
) -> subprocess.Popen[bytes] | ForkedProcess:
    """Start ``command`` like ``subprocess.Popen``: a fork of the server when it is
    ``[sys.executable, "-m", "jobrunner", ...]``, else (or without a server) cold.
    ``stderr=subprocess.STDOUT`` joins it to stdout; pipes are not supported forked."""
    forkable = list(command[:3]) == [sys.executable, "-m", "jobrunner"] and subprocess.PIPE not in (
        stdin, stdout, stderr)
    server = _the_server() if forkable else None
    if server is None:
        return subprocess.Popen(list(command), env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr)
    opened: list[int] = []
    try:
        fds = [_fd(stdin, 0, opened), _fd(stdout, 1, opened)]
        fds.append(fds[1] if stderr == subprocess.STDOUT else _fd(stderr, 2, opened))
        return server.spawn(command[3:], os.environ if env is None else env, str(cwd or os.getcwd()), fds)
    finally:
        for fd in opened:
            os.close(fd)


class Captured:
    """A ``python -m jobrunner`` started with its output captured (to files, as text):
    ``wait`` and ``communicate`` as on ``subprocess.Popen(..., stdout=PIPE, stderr=PIPE)``."""

    def __init__(self, command: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None, input: str | None = None) -> None:
        self.args = list(command)
        self._out, self._err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        if input is None:
            self.proc = spawn(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err)
            return
        with tempfile.TemporaryFile() as given:
            given.write(input.encode())
            given.seek(0)
            self.proc = spawn(command, env=env, cwd=cwd, stdin=given, stdout=self._out, stderr=self._err)

    @property
    def returncode(self) -> int | None:
        """The exit code, None while it runs."""
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit (subprocess.TimeoutExpired after ``timeout`` seconds)."""
        return int(self.proc.wait(timeout=timeout))

    def kill(self) -> None:
        """SIGKILL, reap, and drop what it wrote."""
        self.proc.kill()
        self.proc.wait()
        self._out.close()
        self._err.close()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the exit; then what it wrote to stdout and to stderr."""
        self.wait(timeout)
        texts = []
        for captured in (self._out, self._err):
            captured.seek(0)
            texts.append(captured.read().decode(errors="replace"))
            captured.close()
        return texts[0], texts[1]


def run(command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(command, capture_output=True, text=True)``, forked where :func:`spawn` can."""
    started = Captured(command, env=env, cwd=cwd, input=input)
    try:
        out, err = started.communicate(timeout)
    except subprocess.TimeoutExpired:
        started.kill()
        raise
    return subprocess.CompletedProcess(started.args, started.wait(), out, err)
