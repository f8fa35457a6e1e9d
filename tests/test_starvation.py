"""Liveness under a flood of reads: a node's heartbeat never waits behind user queries.

A daemon runs one long job while many clients list jobs over HTTP as fast as they can;
this test acts as a second node and runs the rescue pass against the shared file. Were
the flood to delay the daemon's heartbeat past ``rescue_after``, the second node would
declare it dead and put its running job back (a double execution).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobrunner import Runner
from jobrunner.config import parse
from jobrunner.storage import NewJob
from tests.daemon_harness import DaemonProcess, holds_for, start_on_free_port, wait_until
from tests.helpers import get_job

#: Ten heartbeat intervals (the defaults keep twelve: 5 s and 60 s). At five, a 2-core VM
#: running this flood, the daemon and the rescuing test sometimes left the heartbeat
#: thread without the GIL for a whole second, which says nothing about the reads.
RESCUE_AFTER = 2.0
CONFIG = """
[database]
url = "sqlite:///{db}"

[runner]
modules = ["tests.http_workers"]
shutdown_grace = 1
heartbeat_interval = 0.2
rescue_after = {rescue_after}

[http]
enabled = true
port = {port}

[topics.py]
parallelism = 1
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Runner]]:
    """A daemon with HTTP on a table holding 3,000 fat jobs of an unserved topic."""
    db = tmp_path / "jobs.db"
    observer = Runner(parse({"database": {"url": f"sqlite:///{db}"}, "topics": {"py": {}}}))
    observer.migrate()
    args = json.dumps({"blob": "x" * 1500})
    rows: list[dict[str, Any]] = [
        {"topic": "archive", "worker": "elsewhere.W", "args": args, "state": "available",
         "priority": 2, "attempt": 0, "max_attempts": 1, "errors": "[]", "inserted_at": 0.0, "scheduled_at": 0.0}
        for _ in range(3000)
    ]
    observer.store.jobs.insert([NewJob(**row) for row in rows])
    config = tmp_path / "config.toml"

    def make(port: int) -> DaemonProcess:
        config.write_text(CONFIG.format(db=db, port=port, rescue_after=RESCUE_AFTER))
        # No topics check: GET /topics also lists the unserved topic of the rows above.
        return DaemonProcess(config, log_path=tmp_path / "daemon.log", http_port=port)

    process = start_on_free_port(make)
    try:
        yield process.url, observer
    finally:
        process.stop()
        observer.store.close()


def test_a_flood_of_reads_never_gets_a_live_node_declared_dead(daemon: tuple[str, Runner]) -> None:
    url, observer = daemon
    sleep = {"worker": "tests.http_workers.Sleep", "args": {"seconds": 60}}
    job_id = httpx.post(f"{url}/jobs", json=sleep).json()["id"]
    wait_until(f"job {job_id} to be executing", lambda: get_job(observer, job_id).state == "executing", timeout=15)

    stop = threading.Event()
    served = [0]

    def flood() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                assert client.get("/jobs", params={"limit": 1000}).status_code == 200
                served[0] += 1

    readers = [threading.Thread(target=flood) for _ in range(24)]
    for reader in readers:
        reader.start()
    rescued = []
    try:
        # Act as a second node: rescue pass after rescue pass while the flood runs.
        def rescue_pass() -> None:
            now = time.time()
            rescued.extend(observer.store.nodes.rescue_orphans(now, now - RESCUE_AFTER))

        holds_for("the flood runs", rescue_pass, 2 * RESCUE_AFTER, interval=0.05)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert served[0] > 24, "the flood did not run"
    assert rescued == [], f"a live node was declared dead during the read flood: {rescued}"
    job = get_job(observer, job_id)
    assert job.state == "executing" and job.attempt == 1 and job.errors == []
