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

Run as a script, this module is the server (``python tests/forkserver.py SOCKET``): it
serves until its standard input closes, that is until the test process that started it
exits.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
#: Set to 1 to start every process cold (as before the fork server).
ENV_COLD = "JOBRUNNER_TESTS_COLD_START"
_HEADER = struct.Struct("!I")
StreamArg = int | IO[Any] | None


# ---------------------------------------------------------------- the server


def _preload() -> None:
    """Import what every ``python -m jobrunner`` imports (nothing that starts a thread)."""
    import jobrunner.cli
    import jobrunner.daemon  # noqa: F401


def _exit_code(exc: SystemExit) -> int:
    """The exit status the interpreter gives an uncaught SystemExit."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _std_streams(unbuffered: bool) -> None:
    """New sys.stdin/stdout/stderr on descriptors 0, 1 and 2 (just replaced)."""
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    out = io.FileIO(1, "w", closefd=False)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(out if unbuffered else io.BufferedWriter(out),
                                                   encoding="utf-8", write_through=unbuffered)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                                   errors="backslashreplace", write_through=True)


def _run_child(request: dict[str, Any], fds: list[int], base_path: list[str]) -> int:
    """In the forked child: become ``python -m jobrunner ARGS`` and run it; the exit code."""
    import atexit as child_atexit
    import random
    import runpy
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.getcwd(), *extra, *base_path]
    _std_streams(bool(request["env"].get("PYTHONUNBUFFERED")))
    random.seed()
    sys.argv = ["-m", *request["args"]]
    try:
        runpy.run_module("jobrunner", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:  # noqa: BLE001 - as the interpreter: print it, exit 1
        traceback.print_exc()
        code = 1
    # What the interpreter does at exit: wait for non-daemon threads, run atexit, flush.
    threading._shutdown()  # type: ignore[attr-defined]
    child_atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
    (size,) = _HEADER.unpack(head)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the request was cut short")
        body += chunk
    return json.loads(body), fds


def serve(path: str) -> None:
    """Serve fork requests on the Unix socket ``path`` until stdin closes."""
    _preload()
    own = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    base_path = [p for p in sys.path[1:] if p not in own]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    waiting: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "reap")
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    return
            elif key.data == "reap":
                os.read(wake_r, 4096)
                _reap(waiting)
            else:
                conn, _ = listener.accept()
                try:
                    request, fds = _read_request(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        selector.close()
                        for fd in (listener.fileno(), wake_r, wake_w, conn.fileno(),
                                   *(c.fileno() for c in waiting.values())):
                            os.close(fd)
                        code = _run_child(request, fds, base_path)
                    finally:
                        os._exit(code)
                for fd in fds:
                    os.close(fd)
                conn.sendall(f"{pid}\n".encode())
                waiting[pid] = conn
                _reap(waiting)


def _reap(waiting: dict[int, socket.socket]) -> None:
    """Collect every exited child and tell its requester how it ended."""
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            except OSError:
                pass
            conn.close()


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
        self.proc = subprocess.Popen([sys.executable, __file__, self.path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=self._dir)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline() != b"ready\n":
            raise RuntimeError("the fork server did not start")
        atexit.register(self.close)

    def spawn(self, args: Sequence[str], env: Mapping[str, str], cwd: str, fds: Sequence[int]) -> ForkedProcess:
        body = json.dumps({"args": list(args), "env": dict(env), "cwd": cwd}).encode()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        socket.send_fds(conn, [_HEADER.pack(len(body))], list(fds))
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


def spawn(command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
          stdin: StreamArg = None, stdout: StreamArg = None, stderr: StreamArg = None) -> Any:
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
        with tempfile.TemporaryFile() as given:
            if input is not None:
                given.write(input.encode())
                given.seek(0)
            self.proc = spawn(command, env=env, cwd=cwd, stdin=given if input is not None else subprocess.DEVNULL,
                              stdout=self._out, stderr=self._err)

    @property
    def returncode(self) -> int | None:
        """The exit code, None while it runs."""
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit (subprocess.TimeoutExpired after ``timeout`` seconds)."""
        return int(self.proc.wait(timeout=timeout))

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.proc.kill()
        self.proc.wait()

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


if __name__ == "__main__":
    sys.path.pop(0)  # this script's directory: not on a ``python -m jobrunner`` path
    serve(sys.argv[1])
