"""The demo topic: the classic example jobs, with typed arguments.

    python -m jobrunner enqueue topics.demo.PrintMessage --args '{"message": "hello"}'
    python -m jobrunner enqueue topics.demo.PrintSum --args '{"a": 1, "b": 2}'
    python -m jobrunner enqueue topics.demo.FlakyJob --args '{"fail_times": 2}'
    python -m jobrunner enqueue topics.demo.BuildReport --args '{"report": "daily", "steps": 4}'

Each declares ``args_type`` (one of each kind msgspec validates: a dataclass, a
``TypedDict``, a ``msgspec.Struct``), so arguments that do not match are refused at
enqueue with the field named, instead of failing every attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict

import anyio
import msgspec

from jobrunner import Job, Worker


class MessageArgs(TypedDict):
    """Arguments of :class:`PrintMessage`."""

    message: str


class PrintMessage(Worker):
    """Prints ``args["message"]`` and returns it."""

    topic = "demo"
    args_type = MessageArgs

    async def perform(self, job: Job) -> str:
        args: MessageArgs = self.args_of(job)
        print(f"[job {job.id}] {args['message']}", flush=True)
        return args["message"]


@dataclass(frozen=True)
class SumArgs:
    """Arguments of :class:`PrintSum`: two numbers."""

    a: int | float
    b: int | float


class PrintSum(Worker):
    """Prints and returns ``a + b``."""

    topic = "demo"
    args_type = SumArgs

    async def perform(self, job: Job) -> int | float:
        args: SumArgs = self.args_of(job)
        total = args.a + args.b
        print(f"[job {job.id}] {args.a} + {args.b} = {total}", flush=True)
        return total


class FlakyArgs(msgspec.Struct, frozen=True):
    """Arguments of :class:`FlakyJob`: how many attempts fail before one succeeds."""

    fail_times: int = 2


class FlakyJob(Worker):
    """Fails its first ``fail_times`` attempts (default 2), then succeeds.

    Shows retries: each failure is recorded in the job's ``errors`` and the job runs
    again after the topic's backoff.
    """

    topic = "demo"
    max_attempts = 5
    args_type = FlakyArgs

    async def perform(self, job: Job) -> dict[str, int]:
        fail_times = self.args_of(job).fail_times
        if job.attempt <= fail_times:
            raise RuntimeError(f"simulated failure on attempt {job.attempt} of {fail_times} planned")
        print(f"[job {job.id}] succeeded on attempt {job.attempt}", flush=True)
        return {"attempts": job.attempt}


class ReportArgs(TypedDict):
    """Arguments of :class:`BuildReport`: which report, in how many steps."""

    report: str
    steps: int


class BuildReport(Worker):
    """Builds ``report`` in ``steps`` steps, reporting its progress after each.

    Unique per report for a minute: enqueueing the same report again meanwhile (any
    ``steps``) returns the job already enqueued, marked ``duplicate``.
    """

    topic = "demo"
    args_type = ReportArgs
    unique: ClassVar[dict[str, Any]] = {"period": 60, "keys": ["report"]}

    async def perform(self, job: Job) -> dict[str, Any]:
        args: ReportArgs = self.args_of(job)
        for step in range(1, args["steps"] + 1):
            await anyio.sleep(0.01)  # the work of one step
            await self.progress(job, step / args["steps"])
        print(f"[job {job.id}] report {args['report']} built in {args['steps']} steps", flush=True)
        return {"report": args["report"], "steps": args["steps"]}
