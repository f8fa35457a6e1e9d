"""The fork server of the test suite (see :mod:`tests.forkserver`, which starts it).

Run as ``python tests/forkserver_serve.py SOCKET``: it imports jobrunner once, then, for
each request on the Unix socket ``SOCKET`` (arguments, environment, working directory,
and the three standard streams' descriptors passed with SCM_RIGHTS), forks a child that
becomes ``python -m jobrunner ARGS`` and answers with its pid, then with its exit status
once it has reaped it. It serves until its standard input closes, that is until the test
process that started it exits. Single-threaded, so that forking it is safe.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
from typing import Any

#: Each request: this header (the body's length) with the descriptors, then a JSON body.
HEADER = struct.Struct("!I")


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
    # typeshed declares sys.__stdin__ and the others Final: this forked child replaces them on purpose.
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")  # type: ignore[misc]
    out = io.FileIO(1, "w", closefd=False)
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(out if unbuffered else io.BufferedWriter(out),  # type: ignore[misc]
                                                   encoding="utf-8", write_through=unbuffered)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",  # type: ignore[misc]
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
    head, fds, _flags, _addr = socket.recv_fds(conn, HEADER.size, 3)
    (size,) = HEADER.unpack(head)
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


if __name__ == "__main__":
    sys.path.pop(0)  # this script's directory: not on a ``python -m jobrunner`` path
    serve(sys.argv[1])
