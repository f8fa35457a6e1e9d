"""Workers with typed arguments (``args_type``), importable as tests.typed_workers.*."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NotRequired, TypedDict

import msgspec

from jobrunner import Job, Worker

#: What each job's perform saw: job id → (type of args_of(job), job.args).
seen: dict[int, tuple[type, Any]] = {}


@dataclass
class Order:
    """A dataclass args type; ``when`` travels as an ISO 8601 string."""

    sku: str
    quantity: int = 1
    when: datetime | None = None


class Point(msgspec.Struct):
    """A Struct args type with a nested list."""

    x: int
    y: int
    tags: list[str] = []


class Greeting(TypedDict):
    """A TypedDict args type."""

    name: str
    polite: NotRequired[bool]


class TakeOrder(Worker):
    """Returns the order's quantity; records what perform saw."""

    topic = "t"
    args_type = Order

    async def perform(self, job: Job) -> int:
        order: Order = self.args_of(job)
        seen[job.id] = (type(order), job.args)
        again: object = self.args_of(job)  # (not Any: `is` against an Any would make `order` Any)
        assert again is order  # converted once per execution
        return order.quantity


class Plot(Worker):
    """A plain ``def perform`` (worker thread) reading a Struct."""

    topic = "t"
    args_type = Point

    # Worker.perform is typed async, but a plain def perform (run in a thread) is supported.
    def perform(self, job: Job) -> int:
        point: Point = self.args_of(job)
        seen[job.id] = (type(point), job.args)
        return point.x + point.y


class Greet(Worker):
    """Reads a TypedDict."""

    topic = "t"
    args_type = Greeting

    async def perform(self, job: Job) -> str:
        greeting: Greeting = self.args_of(job)
        seen[job.id] = (type(greeting), job.args)
        return ("Dear " if greeting.get("polite") else "Hi ") + greeting["name"]


class Untyped(Worker):
    """No args_type: any JSON, and args_of gives job.args itself."""

    topic = "t"

    async def perform(self, job: Job) -> Any:
        assert self.args_of(job) is job.args
        return job.args
