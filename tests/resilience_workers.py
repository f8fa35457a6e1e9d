"""Workers for the multi-process resilience tests and ``bench/soak.py``.

Daemon subprocesses import this module (``[runner] modules = ["tests.resilience_workers"]``),
so every execution is visible outside the process that ran it: each one appends a row to
an *execution log*, a separate SQLite file named in the job's arguments (``args["log"]``).
The row is written when ``perform`` starts (job id, attempt, pid, node, start time) and
completed from a ``finally`` block with the end time and the outcome (``ok``, ``failed``
or ``cancelled``). A row whose outcome stays NULL belongs to an execution that was killed
(``kill -9``) before it could finish.

Behaviour is chosen by the job's arguments:

``sleep``          seconds to ``anyio.sleep`` (cancellable)
``fail``           true: always raise
``fail_p``         probability of failing this attempt (deterministic per job id + attempt)
``fail_if_exists`` a path: raise while that file exists
``wait_for``       a path: wait until that file exists (a gate the test opens)

Every log write opens its own connection (busy timeout, WAL) in a worker thread, so a
slow write never blocks the daemon's event loop (and with it its heartbeat).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from typing import Any

import anyio
import anyio.to_thread

from jobrunner import Job, Worker

#: The topic of every worker here; the test configs define it.
TOPIC = "r"

LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    pid      INTEGER NOT NULL,
    node     TEXT,
    started  REAL NOT NULL,
    ended    REAL,
    outcome  TEXT
);
CREATE INDEX IF NOT EXISTS ix_executions_job ON executions (job_id);
"""

BUSY_TIMEOUT = 30.0


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def create_log(path: str | os.PathLike[str]) -> None:
    """Create the execution log (WAL mode is persistent, so set it once here)."""
    with contextlib.closing(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(LOG_SCHEMA)
        conn.commit()


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every execution, in insertion order, as dicts."""
    with contextlib.closing(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM executions ORDER BY id")]


def _record_start(path: str, job: Job) -> int:
    with contextlib.closing(_connect(path)) as conn:
        cursor = conn.execute(
            "INSERT INTO executions (job_id, attempt, pid, node, started) VALUES (?, ?, ?, ?, ?)",
            (job.id, job.attempt, os.getpid(), job.attempted_by, time.time()),
        )
        return int(cursor.lastrowid)


def _record_end(path: str, row: int, ended: float, outcome: str) -> None:
    with contextlib.closing(_connect(path)) as conn:
        conn.execute("UPDATE executions SET ended = ?, outcome = ? WHERE id = ?", (ended, outcome, row))


def _unlucky(job: Job, probability: float) -> bool:
    digest = hashlib.blake2b(f"{job.id}:{job.attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < probability


class Task(Worker):
    """One logged execution; what it does is chosen by its arguments (see the module doc)."""

    topic = TOPIC
    max_attempts = 3

    async def perform(self, job: Job) -> Any:
        args = job.args
        log = args.get("log")
        row = await anyio.to_thread.run_sync(_record_start, log, job) if log else None
        outcome = "cancelled"
        try:
            if args.get("sleep"):
                await anyio.sleep(args["sleep"])
            gate = args.get("wait_for")
            if gate:
                while not os.path.exists(gate):
                    await anyio.sleep(0.02)
            if args.get("fail"):
                raise RuntimeError(f"designed to fail (attempt {job.attempt})")
            if args.get("fail_p") and _unlucky(job, args["fail_p"]):
                raise RuntimeError(f"unlucky attempt {job.attempt}")
            flag = args.get("fail_if_exists")
            if flag and os.path.exists(flag):
                raise RuntimeError(f"failing while {flag} exists")
            outcome = "ok"
            return {"pid": os.getpid()}
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            raise
        except BaseException:
            outcome = "failed"
            raise
        finally:
            if row is not None:
                ended = time.time()
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_record_end, log, row, ended, outcome)


class SyncTask(Worker):
    """A plain ``def perform`` (run in a worker thread, which nothing can interrupt), logged
    like :class:`Task`; it waits for ``args["wait_for"]`` to exist."""

    topic = TOPIC
    max_attempts = 3

    def perform(self, job: Job) -> Any:
        log, gate = job.args["log"], job.args["wait_for"]
        row = _record_start(log, job)
        outcome = "failed"
        try:
            while not os.path.exists(gate):  # a gate another process opens: its file is the signal
                time.sleep(0.02)
            outcome = "ok"
            return {"pid": os.getpid()}
        finally:
            _record_end(log, row, time.time(), outcome)
