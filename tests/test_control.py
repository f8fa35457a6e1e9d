"""Operator controls and failure handling in one process: cancel, pause, retry, rescue,
pruning, timeouts, and bad input that must not lose data or stop the runner."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobrunner import ConfigError, Job, Runner, Worker, events
from jobrunner.config import DatabaseSettings, Settings
from jobrunner.errors import JobStateError, StorageError
from jobrunner.executor import Executor
from jobrunner.housekeeping import Housekeeper
from jobrunner.producer import Producer
from jobrunner.storage import ClaimRequest, NewJob, Storage
from jobrunner.testing import EventRecorder, running, wait_for
from tests.helpers import MakeRunner, get_job, job_of
from tests.workers import Add, AlwaysFails, Noop, Sleeper

pytestmark = pytest.mark.anyio

FAST = {"t": {"parallelism": 2, "poll_interval": 0.05}}


def other_process_store(runner: Runner) -> Storage:
    """A second, independent connection pool on the same file (what another process has)."""
    return Storage(DatabaseSettings(url=runner.settings.database.url))


async def test_cancel_an_available_job_never_runs_it(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    runner.pause("t")
    job = runner.enqueue(Noop, {})
    cancelled = runner.cancel_job(job.id)
    assert cancelled is not None
    assert cancelled.state == "cancelled" and cancelled.errors[-1]["error"] == "cancelled: cancelled by request"
    runner.resume("t")
    runner.enqueue(Noop, {})
    with EventRecorder("t") as recorder:
        async with running(runner):
            await recorder.wait_for("job_completed")
    assert job.id not in {job_of(e).id for e in recorder.of("job_started")}
    assert get_job(runner, job.id).state == "cancelled"


async def test_cancel_a_running_job_in_this_process_interrupts_it(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    async with running(runner):
        job = runner.enqueue(Sleeper, {"seconds": 60})
        await wait_for(events.job_started, lambda p: p["job"].id == job.id)
        waiter = wait_for(events.job_cancelled, lambda p: p["job"].id == job.id, timeout=5)
        runner.cancel_job(job.id)
        event = await waiter
        assert job_of(event).state == "cancelled"
    stored = get_job(runner, job.id)
    assert stored.state == "cancelled" and stored.cancelled_at is not None


async def test_a_cancellation_is_announced_after_the_start_still_queued(make_runner: MakeRunner) -> None:
    """A job cancelled before the claim loop's announcer has sent its start: the start is
    sent first, then the cancellation."""
    runner = make_runner(FAST)
    job = runner.enqueue(Sleeper, {"seconds": 60})
    settings = runner.settings.topic("t")
    producer = Producer(settings, runner.storage, runner.node,
                        Executor(settings, anyio.CapacityLimiter(2), runner.clock), runner.clock)
    producer.announcer.running = True  # as while its task runs: deferred starts wait for it
    with EventRecorder("t") as recorder:
        async with anyio.create_task_group() as tg:
            assert await producer.cycle(tg, 1, defer=True) == 1
            assert recorder.of("job_started") == []  # queued for the announcer, not sent
            runner.store.operator.cancel(job.id, runner.clock())  # what a node does on cancel
            assert producer.cancel_job(job.id)
            await producer.wait_idle()
            tg.cancel_scope.cancel()
    seen = [e.name for e in recorder.events if e.name.startswith("job_") and job_of(e).id == job.id]
    assert seen == ["job_started", "job_cancelled"]
    assert get_job(runner, job.id).state == "cancelled"


async def test_cancel_from_another_process_is_noticed_within_the_poll_interval(make_runner: MakeRunner) -> None:
    runner = make_runner({"t": {"poll_interval": 0.1}}, database={"watch_interval": 0})
    other = other_process_store(runner)
    try:
        async with running(runner):
            job = runner.enqueue(Sleeper, {"seconds": 60})
            await wait_for(events.job_started, lambda p: p["job"].id == job.id)
            waiter = wait_for(events.job_cancelled, lambda p: p["job"].id == job.id, timeout=2)
            other.operator.cancel(job.id, time.time())  # another process's storage
            await waiter
            again = runner.enqueue(Add, {"a": 1, "b": 1})  # the slot was freed
            await wait_for(events.job_completed, lambda p: p["job"].id == again.id)
    finally:
        other.close()
    assert get_job(runner, job.id).state == "cancelled"


async def test_cancel_from_another_process_during_a_graceful_stop_ends_the_job_now(make_runner: MakeRunner) -> None:
    # Stopping claims nothing more but still reads the control: a job cancelled elsewhere
    # meanwhile stops at once instead of running out the grace and being put back.
    runner = make_runner({"t": {"poll_interval": 0.1}}, runner={"shutdown_grace": 60}, database={"watch_interval": 0})
    other = other_process_store(runner)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            job = runner.enqueue(Sleeper, {"seconds": 60})
            await wait_for(events.job_started, lambda p: p["job"].id == job.id)
            stopped = wait_for(events.runner_stopped, timeout=10)
            tg.start_soon(runner.stop)
            producer = runner.supervisor("t").producer
            with anyio.fail_after(5):
                while not producer.stopping:
                    await anyio.sleep(0.01)
            other.operator.cancel(job.id, time.time())  # another process's storage
            await stopped
    finally:
        other.close()
    assert get_job(runner, job.id).state == "cancelled"


async def test_cancel_of_finished_or_unknown_jobs_changes_nothing(runner: Runner) -> None:
    assert runner.cancel_job(12345) is None
    job = runner.enqueue(Add, {"a": 1, "b": 2})
    await _drain(runner)
    with pytest.raises(JobStateError, match="already completed"):
        runner.cancel_job(job.id)
    assert get_job(runner, job.id).state == "completed"


async def _drain(runner: Runner) -> None:
    from jobrunner.testing import drain

    await drain(runner, "t", with_scheduled=True)


class ClaimCycles:
    """Counts a producer's claim cycles (its flushes), so a test waits for cycles to pass
    instead of guessing how long they take."""

    def __init__(self, producer: Any) -> None:
        self.count = 0
        self._changed = anyio.Event()
        flush = producer.flush

        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await flush(*args, **kwargs)
            finally:
                self.count += 1
                self._changed.set()
                self._changed = anyio.Event()

        producer.flush = counted

    async def wait(self, cycles: int, timeout: float = 5.0) -> None:
        """Until ``cycles`` more cycles have ended (a cycle under way counts once it ends)."""
        target = self.count + cycles
        with anyio.fail_after(timeout):
            while self.count < target:
                await self._changed.wait()


async def test_paused_topic_claims_nothing_until_resumed_by_another_process(make_runner: MakeRunner) -> None:
    runner = make_runner({"t": {"poll_interval": 0.05}, "u": {"poll_interval": 0.05}})
    other = other_process_store(runner)
    try:
        async with running(runner):
            other.operator.set_paused("t", True, time.time())
            # After a full control check the pause is in force.
            with anyio.fail_after(5):
                while not runner.supervisor("t").producer.paused:
                    await anyio.sleep(0.01)
            producer = runner.supervisor("t").producer
            cycles = ClaimCycles(producer)
            job = runner.enqueue(Add, {"a": 1, "b": 1})
            # Two more control checks and claim cycles (begun after the insert) pass without a claim.
            for _ in range(3):
                producer.notify_external()
                await cycles.wait(1)
            assert get_job(runner, job.id).state == "available"
            waiter = wait_for(events.job_completed, lambda p: p["job"].id == job.id, timeout=5)
            other.operator.set_paused("t", False, time.time())
            await waiter
    finally:
        other.close()
    check = other_process_store(runner)
    try:
        assert check.operator.paused_topics() == set()
    finally:
        check.close()


async def test_retry_discarded_and_cancelled_jobs(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    failed = runner.enqueue(AlwaysFails, {})
    cancelled = runner.enqueue(Add, {"a": 1, "b": 2}, delay=3600)
    runner.cancel_job(cancelled.id)
    await _drain(runner)
    assert get_job(runner, failed.id).state == "discarded"
    assert runner.retry_jobs([failed.id]) == [failed.id]
    retried = get_job(runner, failed.id)
    assert retried.state == "available" and retried.max_attempts == 3 and retried.discarded_at is None
    assert runner.retry_jobs(topic="t", states=["cancelled"]) == [cancelled.id]
    assert runner.retry_jobs([cancelled.id]) == []  # already available
    await _drain(runner)
    assert get_job(runner, cancelled.id).state == "completed"
    assert get_job(runner, failed.id).state == "discarded" and get_job(runner, failed.id).attempt == 3


async def test_jobs_of_a_dead_node_are_rescued_and_run_again(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST, runner={"heartbeat_interval": 0.05, "rescue_after": 0.5})
    stored = runner.enqueue_many([(Add, {"a": 1, "b": 1}), (Add, {"a": 2, "b": 2}, {"max_attempts": 1})])
    # A node claims both, then "dies": its heartbeat is older than rescue_after.
    claimed = runner.store.jobs.cycle((), ClaimRequest("t", 10, "dead-node", time.time())).claimed
    assert len(claimed) == 2
    runner.store.nodes.heartbeat("dead-node", time.time() - 10)
    runner.store.nodes.heartbeat("live-node", time.time() + 3600)
    live = runner.enqueue(Noop, {})
    runner.store.jobs.cycle((), ClaimRequest("t", 1, "live-node", time.time()))
    with EventRecorder("t") as recorder:
        async with running(runner):
            await recorder.wait_count("job_rescued", 2)
            await recorder.wait_for("job_completed", lambda p: p["job"].id == stored[0].id)
    first, last = get_job(runner, stored[0].id), get_job(runner, stored[1].id)
    assert first.state == "completed" and first.attempt == 2
    assert "dead-node died" in first.errors[0]["error"]
    assert last.state == "discarded" and "died" in last.errors[0]["error"]  # that was its only attempt
    assert get_job(runner, live.id).state == "executing"  # the live node's job is left alone
    assert {job_of(e).id for e in recorder.of("job_rescued")} == {stored[0].id, stored[1].id}


async def test_node_heartbeat_row_lives_while_running(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    async with running(runner):
        assert runner.node in runner.store.nodes.live(time.time() - 60)
    assert runner.node not in runner.store.nodes.live(0)


async def test_pruning_deletes_old_finished_jobs_in_batches(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST, runner={"prune_after": 3600, "prune_limit": 7})
    old = runner.enqueue_many([(Add, {"a": i, "b": 0}) for i in range(20)])
    await _drain(runner)
    cancelled = runner.enqueue(Noop, {}, delay=60)
    runner.cancel_job(cancelled.id)
    waiting = runner.enqueue(Noop, {}, delay=60)
    later = Housekeeper(runner.storage, runner.settings.runner, runner.node, lambda jobs: None,
                        clock=lambda: time.time() + 7200)
    assert await later.prune() == 21
    assert runner.get_job(old[0].id) is None and get_job(runner, waiting.id).state == "scheduled"
    recent = Housekeeper(runner.storage, runner.settings.runner, runner.node, lambda jobs: None)
    fresh = runner.enqueue(Add, {"a": 1, "b": 1})
    await _drain(runner)
    assert await recent.prune() == 0 and get_job(runner, fresh.id).state == "completed"
    again = runner.enqueue(Noop, {})
    assert again.id > fresh.id  # ids are never reused after pruning


class SlowThread(Worker):
    topic = "t"
    timeout = 0.2
    release = threading.Event()

    # Worker.perform is typed async, but a plain def perform (run in a thread) is supported.
    def perform(self, job: Job) -> None:
        SlowThread.release.wait(30)


async def test_overrunning_sync_perform_times_out_and_keeps_its_slot_until_it_returns(make_runner: MakeRunner) -> None:
    runner = make_runner({"t": {"parallelism": 1, "poll_interval": 0.05}})
    SlowThread.release.clear()
    try:
        async with running(runner):
            slow = runner.enqueue(SlowThread, {}, max_attempts=1)
            event = await wait_for(events.job_discarded, lambda p: p["job"].id == slow.id, timeout=5)
            assert isinstance(event.payload["error"], TimeoutError)
            cycles = ClaimCycles(runner.supervisor("t").producer)
            quick = runner.enqueue(Add, {"a": 1, "b": 1})
            # Claim cycles begun after the insert pass, and claim nothing: the thread still holds the only slot.
            await cycles.wait(3)
            assert get_job(runner, quick.id).state == "available"
            completed = wait_for(events.job_completed, lambda p: p["job"].id == quick.id, timeout=5)
            SlowThread.release.set()
            await completed
    finally:
        SlowThread.release.set()
    assert "timeout of 0.2s" in get_job(runner, slow.id).errors[0]["error"]


class ExoticFailure(BaseException):
    """Not an Exception subclass."""


class RaisesBase(Worker):
    topic = "t"
    max_attempts = 1

    async def perform(self, job: Job) -> None:
        raise ExoticFailure("weird")


class WrongArgs(Worker):
    topic = "t"
    max_attempts = 1

    async def perform(self, job: Job) -> Any:
        return job.args["a"] + job.args["b"]


async def test_bad_jobs_fail_alone_and_the_runner_goes_on(make_runner: MakeRunner) -> None:
    runner = make_runner(FAST)
    with EventRecorder("t") as recorder:
        async with running(runner):
            base = runner.enqueue(RaisesBase, {})
            wrong = runner.enqueue(WrongArgs, {"a": 1})
            gone = runner.store.jobs.insert([NewJob(
                topic="t", worker="tests.workers_that_do_not_exist.Job", args="{}",
                state="available", priority=0, attempt=0, max_attempts=50, errors="[]",
                inserted_at=time.time(), scheduled_at=time.time(),
            )])[0]
            await recorder.wait_count("job_discarded", 3)
            good = runner.enqueue(Add, {"a": 1, "b": 1})
            await recorder.wait_for("job_completed", lambda p: p["job"].id == good.id)
    assert get_job(runner, base.id).errors[0]["error"] == "ExoticFailure: weird"
    assert get_job(runner, wrong.id).errors[0]["error"] == "KeyError: 'b'"
    assert "no module named 'tests.workers_that_do_not_exist'" in get_job(runner, gone.id).errors[0]["error"]
    assert get_job(runner, gone.id).attempt == 1


async def test_a_module_that_fails_to_import_is_a_clear_config_error(make_runner: MakeRunner, tmp_path: Path) -> None:
    (tmp_path / "broken_workers.py").write_text("raise RuntimeError('syntax of the day')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        runner = make_runner(FAST, runner={"modules": ["broken_workers"]})
        with pytest.raises(ConfigError, match="importing 'broken_workers' failed: RuntimeError: syntax of the day"):
            await runner.run()
        with pytest.raises(ConfigError, match="importing 'no_such_module_here' failed"):
            await make_runner(FAST, runner={"modules": ["no_such_module_here"]}).run()
    finally:
        sys.path.remove(str(tmp_path))
    assert not runner.running


def test_read_only_database_gives_a_clear_error_and_keeps_the_data(make_runner: MakeRunner, tmp_path: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not available to make the file immutable")
    runner = make_runner(FAST)
    job = runner.enqueue(Add, {"a": 1, "b": 2})
    runner.store.close()
    path = runner.store.db.engine.url.database
    assert path is not None
    if subprocess.run(["chattr", "+i", path], capture_output=True).returncode != 0:
        pytest.skip("this filesystem does not support immutable files")
    try:
        with pytest.raises(StorageError, match="readonly"):
            Runner(runner.settings).enqueue(Add, {"a": 3, "b": 4})
    finally:
        subprocess.run(["chattr", "-i", path], check=True)
    again = Runner(runner.settings)
    assert again.get_job(job.id) == job and len(again.list_jobs()) == 1
    again.store.close()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        Storage(DatabaseSettings(url=f"sqlite:///{tmp_path}/nowhere/jobs.db"))


def test_rescue_after_must_exceed_two_heartbeats(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="rescue_after"):
        make_settings(FAST, runner={"heartbeat_interval": 10, "rescue_after": 15})
