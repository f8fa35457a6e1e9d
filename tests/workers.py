"""Workers used by the test suite (importable as tests.workers.*)."""

from __future__ import annotations

import threading
from typing import Any

import anyio

from jobrunner import Cancel, Job, Snooze, Worker

#: Filled by workers that record what they saw: job id → list of attempts.
seen: dict[int, list[int]] = {}
lock = threading.Lock()


def record(job: Job) -> None:
    with lock:
        seen.setdefault(job.id, []).append(job.attempt)


class Noop(Worker):
    topic = "t"

    async def perform(self, job: Job) -> None:
        record(job)


class Add(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        record(job)
        return job.args["a"] + job.args["b"]


class SyncAdd(Worker):
    topic = "t"

    def perform(self, job: Job) -> Any:
        record(job)
        return {"sum": job.args["a"] + job.args["b"], "thread": threading.current_thread().name}


class FailTimes(Worker):
    """Fails the first args['fails'] attempts."""

    topic = "t"
    max_attempts = 3

    def backoff(self, job: Job) -> float:
        return 0.0

    async def perform(self, job: Job) -> Any:
        record(job)
        if job.attempt <= job.args.get("fails", 1):
            raise ValueError(f"failing attempt {job.attempt}")
        return "ok"


class AlwaysFails(Worker):
    topic = "t"
    max_attempts = 2

    def backoff(self, job: Job) -> float:
        return 0.0

    async def perform(self, job: Job) -> Any:
        record(job)
        raise RuntimeError("always")


class SnoozeOnce(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        record(job)
        if len(seen.get(job.id, [])) == 1:
            return Snooze(0)
        return "woke"


class CancelMe(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        record(job)
        return Cancel("not needed")


class Sleeper(Worker):
    """Sleeps args['seconds'] (anyio sleep: cancellable)."""

    topic = "t"

    async def perform(self, job: Job) -> Any:
        record(job)
        await anyio.sleep(job.args.get("seconds", 60))
        return "slept"


def sum_of_squares(n: int) -> dict[str, int]:
    """CPU-bound work, importable so a worker process can run it."""
    import os

    return {"value": sum(i * i for i in range(n)), "pid": os.getpid()}


class CpuHeavy(Worker):
    """Runs its CPU-bound part in a separate process (anyio.to_process)."""

    topic = "t"

    async def perform(self, job: Job) -> Any:
        import anyio.to_process

        return await anyio.to_process.run_sync(sum_of_squares, job.args["n"])


class SyncChained(Worker):
    """A plain ``def perform`` that fails with a chained exception."""

    topic = "t"
    max_attempts = 1

    def perform(self, job: Job) -> Any:
        record(job)
        try:
            dict[str, int]()["missing"]
        except KeyError as exc:
            raise RuntimeError("lookup failed") from exc


class GateFile(Worker):
    """A plain ``def perform`` that waits for the file ``args["dir"]/gate``.

    It appends a line to ``dir/started`` when it begins and to ``dir/finished`` when it
    returns, so a test in another process can see where the perform is.
    """

    topic = "t"
    max_attempts = 3

    def perform(self, job: Job) -> Any:
        import os
        import time

        folder = job.args["dir"]
        with open(os.path.join(folder, "started"), "a") as fh:
            fh.write(f"{job.id} {job.attempt}\n")
        while not os.path.exists(os.path.join(folder, "gate")):
            time.sleep(0.01)
        with open(os.path.join(folder, "finished"), "a") as fh:
            fh.write(f"{job.id} {job.attempt}\n")
        return "through"
