"""Workers run by the daemons of tests/test_http.py (imported by the daemon subprocess)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio

from jobrunner import Job, Worker


class Echo(Worker):
    """Returns its arguments."""

    topic = "py"

    async def perform(self, job: Job) -> Any:
        return job.args


class Sleep(Worker):
    """Sleeps args['seconds'] (cancellable), then returns 'slept'."""

    topic = "py"

    async def perform(self, job: Job) -> Any:
        await anyio.sleep(job.args.get("seconds", 60))
        return "slept"


class Doomed(Worker):
    """Fails once and is discarded (max_attempts 1)."""

    topic = "py"
    max_attempts = 1

    async def perform(self, job: Job) -> Any:
        raise RuntimeError("doomed")


class Elsewhere(Worker):
    """A job on another topic (for event filtering)."""

    topic = "other"

    async def perform(self, job: Job) -> Any:
        return "elsewhere"


class Pausable(Worker):
    """A job on the topic the pause test pauses."""

    topic = "pz"

    async def perform(self, job: Job) -> Any:
        return "ran"


@dataclass
class Count:
    """The arguments of :class:`Typed`."""

    n: int


class Typed(Worker):
    """Declares its arguments (``args_type``); returns ``n``."""

    topic = "py"
    args_type = Count

    async def perform(self, job: Job) -> Any:
        return self.args_of(job).n
