"""Workers for the tests of scaling and limits across nodes (daemon subprocesses import this)."""

from __future__ import annotations

from typing import Any

import anyio

from jobrunner import Job, Worker


class Nap(Worker):
    """Sleeps ``args["seconds"]`` (default 0.05); fails its first attempt when ``args["fail_first"]``."""

    topic = "lim"
    max_attempts = 5

    async def perform(self, job: Job) -> Any:
        await anyio.sleep(job.args.get("seconds", 0.05))
        if job.args.get("fail_first") and job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return None
