"""Blocking and CPU-heavy work: threads bounded by parallelism, the loop never blocked,
CPU-bound work in a separate process."""

from __future__ import annotations

import os
import threading
import time

import pytest

from jobrunner import Job, Worker, events
from jobrunner.testing import EventRecorder, running, wait_for
from tests.helpers import MakeRunner, get_job
from tests.workers import CpuHeavy, Noop

pytestmark = pytest.mark.anyio


class BlockingSleep(Worker):
    topic = "blocking"
    lock = threading.Lock()
    active = 0
    peak = 0
    release = threading.Event()

    # Worker.perform is typed async, but a plain def perform (run in a thread) is supported.
    def perform(self, job: Job) -> None:
        with BlockingSleep.lock:
            BlockingSleep.active += 1
            BlockingSleep.peak = max(BlockingSleep.peak, BlockingSleep.active)
        try:
            BlockingSleep.release.wait(10)  # blocks its thread, not the event loop
        finally:
            with BlockingSleep.lock:
                BlockingSleep.active -= 1


async def test_blocking_jobs_use_at_most_parallelism_threads_and_never_block_the_loop(make_runner: MakeRunner) -> None:
    BlockingSleep.active = BlockingSleep.peak = 0
    BlockingSleep.release.clear()
    runner = make_runner({"blocking": {"parallelism": 2, "poll_interval": 0.05}, "t": {"poll_interval": 0.05}})
    blocking = runner.enqueue_many([(BlockingSleep, {}) for _ in range(6)])
    with EventRecorder() as recorder:
        async with running(runner):
            await recorder.wait_count("job_started", 2)
            # Both slots hold blocked threads; another topic's async job still runs at once.
            quick = runner.enqueue(Noop, {})
            started = time.monotonic()
            await recorder.wait_for("job_completed", lambda p: p["job"].id == quick.id, timeout=5)
            assert time.monotonic() - started < 2
            assert BlockingSleep.active == 2
            BlockingSleep.release.set()
            await recorder.wait_count("job_completed", len(blocking) + 1)
    assert BlockingSleep.peak == 2  # never more threads at once than the topic's parallelism


async def test_cpu_heavy_work_runs_in_a_separate_process(make_runner: MakeRunner) -> None:
    runner = make_runner({"t": {"poll_interval": 0.05}})
    async with running(runner):
        job = runner.enqueue(CpuHeavy, {"n": 20_000})
        await wait_for(events.job_completed, lambda p: p["job"].id == job.id, timeout=30)
    result = get_job(runner, job.id).result
    assert result["value"] == sum(i * i for i in range(20_000))
    assert result["pid"] != os.getpid()
