"""Workers for the multi-process resilience tests and ``bench/soak.py``.

Daemon subprocesses import this module (``[runner] modules = ["tests.resilience_workers"]``),
so every execution is visible outside the process that ran it: each one is written to an
*execution log*, a directory named in the job's arguments (``args["log"]``). A record is
written when ``perform`` starts (job id, attempt, pid, node, start time) and another from a
``finally`` block with the end time and the outcome (``ok``, ``failed`` or ``cancelled``).
An execution without an end record was killed (``kill -9``) before it could finish.

Behaviour is chosen by the job's arguments:

``sleep``          seconds to ``anyio.sleep`` (cancellable)
``fail``           true: always raise
``fail_p``         probability of failing this attempt (deterministic per job id + attempt)
``fail_if_exists`` a path: raise while that file exists
``wait_for``       a path: wait until that file exists (a gate the test opens)

The log is plain files, not a database: each process appends JSON lines to a file of its
own, one ``write`` per record (atomic against ``kill -9``: a record is whole or absent).
The instrument that counts executions must not share a failure mode with the storage it
checks; an SQLite log opening a connection per write checkpoints its WAL on nearly every
close, which is where SQLite releases before 3.51.3 can lose a commit (the WAL-reset bug).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from jobrunner import Job, Worker

#: The topic of every worker here; the test configs define it.
TOPIC = "r"

_files: dict[tuple[int, str], int] = {}
_files_lock = threading.Lock()
_serial = itertools.count(1)


def create_log(path: str | os.PathLike[str]) -> None:
    """Create the execution log (a directory; each process writes its own file in it)."""
    Path(path).mkdir(parents=True, exist_ok=True)


def _append(log: str, record: dict[str, Any]) -> None:
    key = (os.getpid(), log)
    with _files_lock:
        fd = _files.get(key)
        if fd is None:  # opened once per process (a forked child opens its own)
            fd = _files[key] = os.open(os.path.join(log, f"{os.getpid()}.jsonl"),
                                       os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (json.dumps(record) + "\n").encode())


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every execution, in the order they started, as dicts (``ended`` and ``outcome``
    are None for one that never ended)."""
    starts: dict[str, dict[str, Any]] = {}
    ends: dict[str, dict[str, Any]] = {}
    for file in Path(path).glob("*.jsonl"):
        for line in file.read_text().splitlines():
            record = json.loads(line)
            (starts if record.pop("record") == "start" else ends)[record.pop("key")] = record
    executions: list[dict[str, Any]] = []
    for key, start in sorted(starts.items(), key=lambda item: (item[1]["started"], item[0])):
        end = ends.get(key, {})
        executions.append({"id": len(executions) + 1, **start,
                           "ended": end.get("ended"), "outcome": end.get("outcome")})
    return executions


def _record_start(log: str, job: Job) -> str:
    key = f"{os.getpid()}-{next(_serial)}"
    _append(log, {"record": "start", "key": key, "job_id": job.id, "attempt": job.attempt,
                  "pid": os.getpid(), "node": job.attempted_by, "started": time.time()})
    return key


def _record_end(log: str, key: str, ended: float, outcome: str) -> None:
    _append(log, {"record": "end", "key": key, "ended": ended, "outcome": outcome})


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
        row = _record_start(log, job) if log else None
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
                _record_end(log, row, time.time(), outcome)


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
