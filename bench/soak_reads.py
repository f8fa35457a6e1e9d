"""The read flood of ``bench/soak.py --read-flood N``: N threads reading the daemons'
HTTP API as fast as they are answered, in turn ``GET /jobs?limit=1000`` (the newest
page, or the page after a random job), ``GET /topics`` and ``GET /jobs/{id}``.

What must hold is checked by the soak itself (reads must not starve a daemon's
heartbeat, so no live daemon's jobs are rescued); this module counts the reads served,
their latency per route, and answers other than 200.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from typing import Any

from soak_client import Client, Endpoints, percentile

ROUTES = ("jobs_page", "topics", "job")


class ReadFlood:
    """``count`` reader threads; ``job_ids`` is the pool of ids to read one by one."""

    def __init__(self, endpoints: Endpoints, count: int, job_ids: list[int], *, seed: int,
                 missing_ok: bool) -> None:
        self.endpoints = endpoints
        self.job_ids = job_ids
        self.seed = seed
        self.missing_ok = missing_ok
        self.stopping = threading.Event()
        self.latency: dict[str, list[float]] = {route: [] for route in ROUTES}
        self.bytes = 0
        self.lost = 0
        self.unexpected: list[str] = []
        self.statuses: Counter[int] = Counter()
        #: the most jobs seen executing at once per topic in GET /topics answers
        self.max_executing: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._read, args=(i,), name=f"soak-r{i}", daemon=True)
                        for i in range(count)]
        self.started = self.stopped = 0.0

    def start(self) -> None:
        """Start reading."""
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Stop reading and wait for the threads."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)
        self.stopped = time.monotonic()

    def _path(self, route: str, rng: random.Random) -> str:
        if route == "topics":
            return "/topics"
        if route == "job":
            return f"/jobs/{rng.choice(self.job_ids)}"
        if rng.random() < 0.5:
            return "/jobs?limit=1000"
        return f"/jobs?limit=1000&after={rng.choice(self.job_ids)}"

    def _read(self, index: int) -> None:
        rng = random.Random(f"{self.seed}:reader:{index}")
        client = Client(self.endpoints, rng)
        latency: dict[str, list[float]] = {route: [] for route in ROUTES}
        statuses: Counter[int] = Counter()
        executing: Counter[str] = Counter()
        unexpected: list[str] = []
        size = turn = 0
        try:
            while not self.stopping.is_set():
                route = ROUTES[turn % len(ROUTES)]
                turn += 1
                reply = client.call("GET", self._path(route, rng))
                if reply is None:
                    continue
                statuses[reply.status] += 1
                if reply.status == 200:
                    latency[route].append(reply.received - reply.sent)
                    size += len(reply.body)
                    if route == "topics":
                        for topic, counts in json.loads(reply.body)["topics"].items():
                            executing[topic] = max(executing[topic], counts["executing"])
                elif not (reply.status == 404 and route == "job" and self.missing_ok):
                    unexpected.append(f"GET {route}: {reply.status} {reply.body[:200]!r}")
        finally:
            client.close()
            with self._lock:
                for route in ROUTES:
                    self.latency[route].extend(latency[route])
                self.statuses.update(statuses)
                self.unexpected.extend(unexpected)
                self.bytes += size
                self.lost += len(client.failures)
                for topic, most in executing.items():
                    self.max_executing[topic] = max(self.max_executing[topic], most)

    def figures(self) -> dict[str, Any]:
        """Reads served, reads per second, latency (ms) overall and per route."""
        elapsed = max(self.stopped - self.started, 1e-9)
        every = [x for values in self.latency.values() for x in values]
        def ms(values: list[float], fraction: float) -> float:
            return round(percentile(values, fraction) * 1000, 1)
        return {
            "readers": len(self.threads), "reads": len(every), "reads_per_s": round(len(every) / elapsed, 1),
            "read_p50_ms": ms(every, 0.5), "read_p99_ms": ms(every, 0.99),
            "per_route": {route: {"reads": len(v), "p50_ms": ms(v, 0.5), "p99_ms": ms(v, 0.99)}
                          for route, v in self.latency.items()},
            "read_mb": round(self.bytes / 1e6, 1), "read_connection_failures": self.lost,
            "statuses": dict(self.statuses), "max_executing_seen": dict(self.max_executing),
        }

    def problems(self) -> list[str]:
        """Answers that were not 200 (a 404 for a pruned job aside)."""
        found = [f"read flood: {u}" for u in self.unexpected[:5]]
        if len(self.unexpected) > 5:
            found.append(f"read flood: ... {len(self.unexpected)} unexpected answers in all")
        return found
