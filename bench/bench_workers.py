"""Workers used by ``bench/bench.py``.

They live in their own module so that a child process can resolve them by import path
(``bench_workers.Noop``, ``bench_workers.Stamp``): the benchmark puts ``bench/`` (and the
repository root) on ``sys.path`` of the child process too.
"""

from __future__ import annotations

import time

import msgspec

from jobrunner import Job, Worker

#: The topic every benchmark worker belongs to.
TOPIC = "bench"

#: When each :class:`Stamp` job began ``perform``: job id → (perf_counter, time.time).
#: Filled only in the process that runs the job; the benchmark pops entries as it reads them.
STARTS: dict[int, tuple[float, float]] = {}


class Noop(Worker):
    """Does nothing: measures the engine's own per-job cost."""

    topic = TOPIC

    async def perform(self, job: Job) -> None:
        return None


class NoopArgs(msgspec.Struct):
    """The arguments of :class:`TypedNoop`."""

    i: int


class TypedNoop(Worker):
    """Like :class:`Noop` with declared arguments: measures what their check costs."""

    topic = TOPIC
    args_type = NoopArgs

    async def perform(self, job: Job) -> None:
        return None


class Stamp(Worker):
    """Records when ``perform`` began, for enqueue → start latency."""

    topic = TOPIC

    async def perform(self, job: Job) -> None:
        STARTS[job.id] = (time.perf_counter(), time.time())
