"""The plumbing of ``bench/soak.py``'s HTTP modes (``--http-workers``, ``--read-flood``):
their options, the daemons' configuration for them, and the client side.

The daemons come and go (``kill -9``, replacements on new ports), so a caller never
names a daemon: :class:`Endpoints` holds the ports of the live ones and each request
goes to one picked at random. A request that fails at the connection level (the daemon
was killed mid-request, or is not listening yet) is reported as ``None`` so the caller
decides whether retrying elsewhere is safe.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

HTTP_CONFIG = """
[http]
enabled = true
max_wait = 5

[topics.ext]
external = true
parallelism = {parallelism}
poll_interval = {poll}
backoff = {{ strategy = "constant", base = 0.0, max = 1.0, jitter = 0.0 }}
"""


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the HTTP modes."""
    http = parser.add_argument_group("HTTP modes (they turn on every daemon's HTTP API)")
    http.add_argument("--http-workers", type=int, default=0, help="external worker threads on topic ext")
    http.add_argument("--http-jobs", type=int, default=2500, help="with --http-workers: jobs of topic ext")
    http.add_argument("--http-parallelism", type=int, default=6,
                      help="topic ext's parallelism (below the workers, so claims wait for free slots)")
    http.add_argument("--lease", type=float, default=2.0, help="seconds of each lease an external worker takes")
    http.add_argument("--abandon-rate", type=float, default=0.03, help="leases never concluded")
    http.add_argument("--stale-rate", type=float, default=0.01, help="leases completed only after they ran out")
    http.add_argument("--http-fail-rate", type=float, default=0.1, help="leases concluded as failed")
    http.add_argument("--extend-rate", type=float, default=0.05, help="leases extended once before completing")
    http.add_argument("--read-flood", type=int, default=0, help="threads reading the API without pause")


def check_http_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error naming the option when an HTTP mode's option is out of range."""
    if min(args.http_workers, args.http_jobs, args.read_flood) < 0 or args.http_parallelism < 1 or args.lease <= 0:
        parser.error("--http-workers, --http-jobs, --read-flood must be >= 0, --http-parallelism >= 1, --lease > 0")
    rates = (args.abandon_rate, args.stale_rate, args.http_fail_rate, args.extend_rate)
    if min(rates) < 0 or sum(rates) > 1:
        parser.error("--abandon-rate, --stale-rate, --http-fail-rate and --extend-rate must be >= 0 and add up to 1 "
                     "at most")


def http_config(args: argparse.Namespace) -> str:
    """The configuration the HTTP modes add: the API on, and the external topic."""
    return HTTP_CONFIG.format(parallelism=args.http_parallelism, poll=args.poll)


#: Seconds a kept-alive connection may stay unused before it is replaced: below the
#: server's keep-alive timeout (Hypercorn: 5 s), so a request never meets a connection
#: the server has just closed (which would look like a request lost to a kill).
IDLE = 3.0


def epoch(text: str) -> float:
    """The epoch seconds of an ISO 8601 time the API returned."""
    return datetime.fromisoformat(text).timestamp()


def listens(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


class Endpoints:
    """The HTTP ports of the daemons that are meant to be alive (thread-safe): a daemon's
    port is handed out once it listens (:meth:`promote`), until it is killed or stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[int] = []
        self._starting: list[int] = []
        #: ports of the daemons killed with SIGKILL
        self.killed: set[int] = set()

    def add(self, port: int) -> None:
        """A daemon was started on ``port`` (it may take a moment to listen)."""
        with self._lock:
            self._starting.append(port)

    def promote(self) -> int:
        """Hand out the ports of the started daemons that listen by now; returns how many
        daemons are still starting."""
        with self._lock:
            starting = list(self._starting)
        for port in starting:
            if listens(port):
                with self._lock:
                    if port in self._starting:
                        self._starting.remove(port)
                        self._live.append(port)
        return len(self._starting)

    def remove(self, port: int, killed: bool = False) -> None:
        """The daemon on ``port`` was killed (``killed``) or is stopping."""
        with self._lock:
            for ports in (self._live, self._starting):
                if port in ports:
                    ports.remove(port)
            if killed:
                self.killed.add(port)

    def pick(self, rng: random.Random, avoid: int | None = None) -> int | None:
        """A live port, other than ``avoid`` when there is a choice; None when none is live."""
        with self._lock:
            choices = [p for p in self._live if p != avoid] or list(self._live)
        return rng.choice(choices) if choices else None


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer and when it was asked and answered (``time.time()``)."""

    status: int
    body: bytes
    port: int
    sent: float
    received: float

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class Client:
    """Keep-alive connections of one thread to the daemons, one per port."""

    def __init__(self, endpoints: Endpoints, rng: random.Random, timeout: float = 60.0) -> None:
        self.endpoints = endpoints
        self.rng = rng
        self.timeout = timeout
        self._conns: dict[int, http.client.HTTPConnection] = {}
        self._used: dict[int, float] = {}
        self.last_port: int | None = None
        #: failures after the request may have been sent: (port, exception type)
        self.failures: list[tuple[int, str]] = []
        #: connections refused (nothing sent)
        self.refused = 0

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
        avoid: int | None = None,
    ) -> Reply | None:
        """Send one request to a live daemon; None when the connection failed after the
        request may have been sent (so it may have been applied), or no daemon is live.
        A refused connection (a daemon not listening yet) is retried on another daemon."""
        payload = b"" if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        for _ in range(200):
            port = self.endpoints.pick(self.rng, avoid)
            if port is None:
                time.sleep(0.05)
                return None
            self.last_port = port
            if time.monotonic() - self._used.get(port, 0.0) > IDLE:
                self._drop(port)
            conn = self._conns.get(port)
            if conn is None:
                conn = self._conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
            sent = time.time()
            try:
                conn.request(method, path, body=payload if method == "POST" else None, headers=all_headers)
                response = conn.getresponse()
                data = response.read()
            except ConnectionRefusedError:
                self._drop(port)
                self.refused += 1
                avoid = port
                time.sleep(0.02)
                continue
            except (OSError, http.client.HTTPException) as exc:
                self._drop(port)
                self.failures.append((port, type(exc).__name__))
                return None
            self._used[port] = time.monotonic()
            if response.will_close:
                self._drop(port)
            return Reply(response.status, data, port, sent, time.time())
        return None

    def _drop(self, port: int) -> None:
        conn = self._conns.pop(port, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close every connection."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank), 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]
