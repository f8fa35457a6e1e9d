"""Workers that declare their own schedules (``Worker.cron``), for tests that list this module."""

from __future__ import annotations

from typing import Any

from jobrunner import Cron, Job, Worker


class Nightly(Worker):
    topic = "cron"
    cron = "@daily"

    async def perform(self, job: Job) -> Any:
        return None


class Twice(Worker):
    topic = "cron"
    cron = (Cron("0 9 * * MON", args={"when": "monday"}, timezone="Europe/Paris", missed="latest"), "*/10 * * * *")

    async def perform(self, job: Job) -> Any:
        return job.args
