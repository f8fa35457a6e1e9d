"""One harness for every test (and ``bench/soak.py``) that runs the daemon the way users do:
``python -m jobrunner --config CFG run`` as a subprocess.

:class:`DaemonProcess` starts one, waits until it is ready on a real signal (its
``runner_started`` event line: every topic is running; and when it serves HTTP, ``GET
/topics`` answering with exactly its topics, so ours and not a stranger on the port),
exposes its pid, URL and an HTTP client, stops it (SIGTERM, then SIGKILL after a bound) or
kills it (SIGKILL), and puts the end of its output into every failure message.
:func:`wait_until` is the one deadline poll for state another process writes (a table, a
file): tests wait on that state, never on a guessed delay.

It lives in ``tests/`` rather than ``jobrunner.testing``: it drives our own command line
from a checkout (with httpx, a test dependency); users test their workers in-process with
``jobrunner.testing``, which needs no subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from tests import forkserver

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: The event every daemon logs (at INFO) once every topic is running.
READY_EVENT = "runner_started"
#: What a daemon logs when its HTTP port is taken (then a retry on another port is safe).
PORT_TAKEN = ("cannot listen", "already in use")
#: How often :func:`wait_until` looks again.
POLL_INTERVAL = 0.02

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """An environment for child processes: the repository importable, no inherited JOBRUNNER_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(config: Path | None, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m jobrunner [--config CONFIG] ARGS`` to its end, output captured as text
    (a fork of the fork server: :mod:`tests.forkserver`)."""
    config_option = ["--config", str(config)] if config is not None else []
    return forkserver.run([PYTHON, "-m", "jobrunner", *config_option, *args], env=env, cwd=cwd,
                          timeout=timeout, input=input)


def wait_until(what: str, predicate: Callable[[], T | None], *, timeout: float = 30.0,
               alive: Iterable[DaemonProcess] = (), describe: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy (so never None), and return that.

    Fails (AssertionError naming ``what``) when ``timeout`` seconds pass first, or at once
    when a daemon of ``alive`` exits meanwhile (with the end of its output). ``describe``
    adds the state seen last to the timeout message.
    """
    watched = list(alive)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for daemon in watched:
            daemon.assert_alive(f"waiting for {what}")
        if time.monotonic() > deadline:
            seen = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{seen}")
        time.sleep(POLL_INTERVAL)


def holds_for(what: str, check: Callable[[], object], seconds: float, *,
              alive: Iterable[DaemonProcess] = (), interval: float = POLL_INTERVAL) -> None:
    """Run ``check`` (which asserts) again and again for ``seconds``: for tests whose point is
    that *nothing* happens for a while (a paused topic stays paused). The duration is the
    behaviour under test, not a guess that something has happened."""
    watched = list(alive)
    until = time.monotonic() + seconds
    while True:
        check()
        for daemon in watched:
            daemon.assert_alive(f"while checking that {what}")
        if time.monotonic() >= until:
            return
        time.sleep(interval)


class DaemonExited(AssertionError):
    """The daemon exited while it was expected to run (the message ends with its output)."""


class DaemonProcess:
    """One ``python -m jobrunner run`` subprocess; its output goes to ``log_path`` (appended)."""

    def __init__(
        self, config: Path, *, log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        options: Sequence[str] = (), run_options: Sequence[str] = (), http_port: int | None = None,
        topics: Collection[str] | None = None, headers: Mapping[str, str] | None = None,
        ready_event: str | None = READY_EVENT,
    ) -> None:
        """``options`` go before ``run`` (e.g. ``--log-level``), ``run_options`` after it
        (``--backend``); ``http_port`` adds ``--http-port`` and the HTTP readiness check,
        which also wants ``topics`` (the configured names) when given. ``ready_event=None``
        when the daemon does not log it (a log level above INFO)."""
        self.config = config
        self.log_path = log_path
        self.env = dict(env) if env is not None else child_env()
        self.cwd = cwd
        self.options = list(options)
        self.run_options = list(run_options)
        self.port = http_port
        self.topics = set(topics) if topics is not None else None
        self.headers = dict(headers or {})
        self.ready_event = ready_event
        self.proc: subprocess.Popen[bytes] | forkserver.ForkedProcess | None = None
        self._client: httpx.Client | None = None
        self._log_start = 0
        self._terminated = False

    # ------------------------------------------------------------ life cycle

    def command(self) -> list[str]:
        """The command line the daemon runs with."""
        http = ["--http-port", str(self.port)] if self.port is not None else []
        return [PYTHON, "-m", "jobrunner", "--config", str(self.config), *self.options,
                "run", *self.run_options, *http]

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> DaemonProcess:
        """Start the process; with ``wait``, return once it is ready (see :meth:`wait_ready`)."""
        assert self.proc is None or self.proc.poll() is not None, "this daemon is running already"
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._terminated = False
        with self.log_path.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = forkserver.spawn(self.command(), env=self.env, cwd=self.cwd, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every topic runs (the ready event is in the output) and, with HTTP, the API
        answers with exactly our topics. DaemonExited when the process exits first; on a
        timeout the process is killed and AssertionError raised, both with the output."""
        try:
            wait_until(f"daemon {self.pid} to be ready", self.is_ready, timeout=timeout, alive=[self])
        except DaemonExited:
            raise
        except AssertionError as exc:
            self.kill()
            raise AssertionError(f"{exc}:\n{self.output_tail()}") from None

    def is_ready(self) -> bool:
        """Whether the daemon has reported ready and (with HTTP) serves our topics."""
        if self.ready_event is not None and self.ready_event not in self.output(since_start=True):
            return False
        if self.port is None:
            return True
        try:
            response = httpx.get(f"{self.url}/topics", headers=self.headers, timeout=1)
        except httpx.TransportError:
            return False
        if response.status_code != 200:
            return False
        return self.topics is None or set(response.json()["topics"]) == self.topics

    def port_taken(self) -> bool:
        """Whether the daemon failed because another process holds its HTTP port."""
        return any(text in self.output(since_start=True) for text in PORT_TAKEN)

    def terminate(self) -> None:
        """Send SIGTERM (the graceful stop) without waiting; only once per start, as a second
        SIGTERM tells the daemon to stop at once."""
        assert self.proc is not None
        if self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit and return its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (unless it has exited), then SIGKILL when it has not exited after ``timeout``
        seconds; the exit code (None when never started)."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL (``kill -9``) and reap; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        """Stop the process if it runs and close the HTTP client."""
        self.stop()
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------ looking at it

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, None while it runs."""
        assert self.proc is not None
        return self.proc.poll()

    @property
    def url(self) -> str:
        """The HTTP API's base URL."""
        assert self.port is not None, "this daemon serves no HTTP"
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> httpx.Client:
        """An HTTP client for the API (base URL and headers set), closed by :meth:`close`."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, headers=self.headers, timeout=20)
        return self._client

    def output(self, *, since_start: bool = False) -> str:
        """What the daemon wrote (stdout and stderr); ``since_start``: by this run only."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            if since_start:
                log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def output_tail(self, chars: int = 5000) -> str:
        """The end of the output, for failure messages."""
        return self.output()[-chars:]

    def assert_alive(self, doing: str = "") -> None:
        """DaemonExited (with the output) when the process has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            during = f" {doing}" if doing else ""
            raise DaemonExited(f"daemon {self.pid} exited with {self.proc.returncode}{during}:\n{self.output_tail()}")


def requests_taken_in(server_port: int, client_ports: Collection[int]) -> bool:
    """Whether the server on 127.0.0.1:``server_port`` has accepted the connections from
    ``client_ports`` and read everything sent on them so far (Linux: ``/proc/net/tcp``).

    The way to know that a request which gets no answer yet (a long poll) has reached the
    daemon: the server side of its connection has nothing left in its receive queue."""
    pending = set(client_ports)
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)  # the header
        for line in table:
            fields = line.split()
            local_port, remote_port = (int(address.split(":")[1], 16) for address in fields[1:3])
            if local_port == server_port and remote_port in pending:
                if int(fields[4].split(":")[1], 16) == 0:  # rx_queue
                    pending.discard(remote_port)
    return not pending


def start_on_free_port(make: Callable[[int], DaemonProcess], *, attempts: int = 3,
                       timeout: float = 30.0) -> DaemonProcess:
    """``make(port).start()`` on a free port, again on another one when a process took the
    port between choosing and binding it."""
    for _ in range(attempts - 1):
        daemon = make(free_port())
        try:
            return daemon.start(timeout=timeout)
        except DaemonExited:
            if not daemon.port_taken():
                raise
    return make(free_port()).start(timeout=timeout)


def stop_all(daemons: Iterable[DaemonProcess], timeout: float = 30.0) -> list[int | None]:
    """SIGTERM every daemon at once, then wait for each; SIGKILL for one still running
    ``timeout`` seconds later."""
    daemons = [daemon for daemon in daemons if daemon.proc is not None]
    for daemon in daemons:
        daemon.terminate()
    codes: list[int | None] = []
    for daemon in daemons:
        try:
            codes.append(daemon.wait(timeout))
        except subprocess.TimeoutExpired:
            codes.append(daemon.kill())
    return codes


__all__ = ["PYTHON", "READY_EVENT", "DaemonExited", "DaemonProcess", "child_env", "free_port",
           "holds_for", "requests_taken_in", "start_on_free_port", "stop_all", "wait_until"]

