"""Workers of the cron tests (importable as tests.cron_workers.*); none declares ``cron``."""

from __future__ import annotations

from typing import Any, TypedDict

from jobrunner import Job, Worker


class Tick(Worker):
    """Returns its arguments."""

    topic = "cron"

    async def perform(self, job: Job) -> Any:
        return job.args


class Greeting(TypedDict):
    name: str


class Greet(Worker):
    topic = "cron"
    args_type = Greeting

    async def perform(self, job: Job) -> Any:
        return f"hello {job.args['name']}"
