"""Workers run by the daemons of the dashboard, metrics and top tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from jobrunner import Job, Worker


class Quick(Worker):
    """Returns its arguments."""

    topic = "web"

    async def perform(self, job: Job) -> Any:
        return job.args


class Gated(Worker):
    """Runs until the file args['gate'] exists (checked every 20 ms), then returns 'opened'."""

    topic = "web"

    async def perform(self, job: Job) -> Any:
        gate = Path(job.args["gate"])
        while not gate.exists():
            await anyio.sleep(0.02)
        return "opened"


def _check_config(path: Path) -> None:
    if not path.exists():
        raise RuntimeError(f"configuration {path.name} is missing")


class Fragile(Worker):
    """Fails (max_attempts 1: discarded at once) while the file args['fix'] is missing."""

    topic = "web"
    max_attempts = 1

    async def perform(self, job: Job) -> Any:
        _check_config(Path(job.args["fix"]))
        return "fixed"


class Held(Worker):
    """A worker of the topic the tests pause."""

    topic = "held"

    async def perform(self, job: Job) -> Any:
        return "ran"
