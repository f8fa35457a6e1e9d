"""Jobs that hand back OS processes: slots held until exit, exit codes, after_async,
timeouts and shutdown terminating the process group, the ds topic end to end."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from jobrunner import events
from jobrunner.testing import EventRecorder, running, wait_for
from tests import process_workers
from tests.helpers import MakeRunner, get_job, job_of
from tests.process_workers import BareAnyio, BarePopen, PidOnly, ReturnsInt, Sleep, TimedSleep

pytestmark = pytest.mark.anyio

PROCS = {"procs": {"parallelism": 2, "poll_interval": 0.05}}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


async def test_a_process_keeps_its_slot_until_it_exits(make_runner: MakeRunner, tmp_path: Path) -> None:
    runner = make_runner(PROCS)
    timeline: list[tuple[str, int]] = []

    def track(name: str) -> Any:
        def receive(sender: str, job: Any, **payload: Any) -> None:
            timeline.append((name, job.id))
        return receive

    receivers = [(events.job_started, track("start")), (events.job_completed, track("end"))]
    for signal, receiver in receivers:
        signal.connect(receiver, sender="procs", weak=False)
    try:
        with EventRecorder("procs") as recorder:
            async with running(runner):
                jobs = runner.enqueue_many(
                    [(Sleep, {"pidfile": str(tmp_path / f"p{i}"), "seconds": 0.4}) for i in range(3)]
                )
                await recorder.wait_count("job_completed", 3, timeout=30)
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
    running_now = peak = 0
    for kind, _ in timeline:
        running_now += 1 if kind == "start" else -1
        peak = max(peak, running_now)
    assert peak == 2  # never three processes at once with parallelism 2
    for job in jobs:
        stored = get_job(runner, job.id)
        assert stored.state == "completed" and stored.result["exit_code"] == 0
    assert sorted(j for j, _ in process_workers.after_async_calls[-3:]) == [j.id for j in jobs]


async def test_nonzero_exit_fails_with_code_and_stderr_then_after_async_runs(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    runner = make_runner(PROCS)
    async with running(runner):
        job = runner.enqueue(Sleep, {"pidfile": str(tmp_path / "p"), "code": 3})
        await wait_for(events.job_discarded, lambda p: p["job"].id == job.id, timeout=30)
    stored = get_job(runner, job.id)
    assert stored.attempt == 2 and len(stored.errors) == 2
    assert "code 3" in stored.errors[0]["error"] and "exiting with 3" in stored.errors[0]["error"]
    assert (job.id, 3) in process_workers.after_async_calls


async def test_timeout_terminates_the_process(make_runner: MakeRunner, tmp_path: Path) -> None:
    runner = make_runner(PROCS)
    pidfile = tmp_path / "p"
    async with running(runner):
        job = runner.enqueue(TimedSleep, {"pidfile": str(pidfile), "seconds": 60}, max_attempts=1)
        event = await wait_for(events.job_discarded, lambda p: p["job"].id == job.id, timeout=30)
    assert isinstance(event.payload["error"], TimeoutError)
    assert not alive(int(pidfile.read_text()))


async def test_shutdown_terminates_processes_and_puts_their_jobs_back(make_runner: MakeRunner, tmp_path: Path) -> None:
    runner = make_runner(PROCS, runner={"shutdown_grace": 0.3})
    pidfile = tmp_path / "p"
    async with running(runner):
        job = runner.enqueue(Sleep, {"pidfile": str(pidfile), "seconds": 60})
        await wait_for(events.job_started, lambda p: p["job"].id == job.id)
        deadline = time.monotonic() + 20
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline
            await anyio_sleep(0.02)
    stored = get_job(runner, job.id)
    assert stored.state == "available" and stored.attempt == 0
    assert not alive(int(pidfile.read_text()))


async def anyio_sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


async def test_a_bare_pid_is_watched_until_it_exits(make_runner: MakeRunner) -> None:
    runner = make_runner(PROCS)
    async with running(runner):
        job = runner.enqueue(PidOnly, {})
        await wait_for(events.job_completed, lambda p: p["job"].id == job.id, timeout=30)
    assert get_job(runner, job.id).result == {"exit_code": 0}


async def test_ds_topic_computes_statistics_in_its_own_process(make_runner: MakeRunner, tmp_path: Path) -> None:
    from topics.ds import DescribeCsv

    runner = make_runner({"ds": {"parallelism": 2, "poll_interval": 0.05, "options": {"output_dir": str(tmp_path)}}})
    csv = tmp_path / "given.csv"
    csv.write_text("a,b\n1,10\n2,20\n3,30\n4,40\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("a\n1\nnot-a-number\n")
    with EventRecorder("ds") as recorder:
        async with running(runner):
            generated = runner.enqueue(DescribeCsv, {"rows": 500, "seed": 3})
            given = runner.enqueue(DescribeCsv, {"csv": str(csv)})
            broken = runner.enqueue(DescribeCsv, {"csv": str(bad)}, max_attempts=1)
            await recorder.wait_count("job_completed", 2, timeout=60)
            await recorder.wait_for("job_discarded", timeout=60)
    result = get_job(runner, given.id).result
    stats = json.loads(Path(result["output"]).read_text())["columns"]
    assert stats["a"] == {"count": 4, "mean": 2.5, "stdev": pytest.approx(1.290994, rel=1e-5), "min": 1.0,
                          "median": 2.5, "max": 4.0}
    assert json.loads(Path(get_job(runner, generated.id).result["output"]).read_text())["columns"]["x"]["count"] == 500
    error = get_job(runner, broken.id).errors[0]["error"]
    assert "code 2" in error and "not a number" in error


@pytest.mark.parametrize("worker", [BareAnyio, BarePopen], ids=["anyio-process", "popen"])
async def test_a_bare_returned_process_is_held_like_external_process(
    make_runner: MakeRunner, tmp_path: Path, worker: type
) -> None:
    runner = make_runner({"procs": {"parallelism": 1, "poll_interval": 0.05}})
    pidfiles = [tmp_path / f"p{i}" for i in range(3)]
    process_workers.after_async_calls.clear()
    exits: dict[int, bool] = {}

    def on_end(sender: str, job: Any, **payload: Any) -> None:
        exits[job.id] = not alive(int(Path(job.args["pidfile"]).read_text()))

    with EventRecorder("procs") as recorder:
        events.job_completed.connect(on_end, sender="procs", weak=False)
        events.job_failed.connect(on_end, sender="procs", weak=False)
        try:
            async with running(runner):
                ok = runner.enqueue_many([(worker, {"pidfile": str(p), "seconds": 0.3}) for p in pidfiles[:2]])
                bad = runner.enqueue(worker, {"pidfile": str(pidfiles[2]), "code": 5}, max_attempts=1)
                await recorder.wait_count("job_completed", 2, timeout=30)
                await recorder.wait_for("job_discarded", timeout=30)
        finally:
            events.job_completed.disconnect(on_end)
            events.job_failed.disconnect(on_end)
    lifecycle = ("job_started", "job_completed", "job_discarded")
    starts = [(e.name, job_of(e).id) for e in recorder.events if e.name in lifecycle]
    for i in range(0, len(starts), 2):  # parallelism 1: each job ends before the next starts
        assert starts[i][0] == "job_started" and starts[i + 1][1] == starts[i][1], starts
    for job in ok:
        stored = get_job(runner, job.id)
        assert stored.state == "completed"
        assert stored.result == {"exit_code": 0, "pidfile": job.args["pidfile"]}  # after_async's value
        assert exits[job.id], "completed while its process was still running"
    for event in recorder.of("job_completed"):
        assert event.payload["duration"] >= 0.3
    stored = get_job(runner, bad.id)
    assert stored.state == "discarded" and "code 5" in stored.errors[0]["error"]
    assert sorted(process_workers.after_async_calls) == sorted([(j.id, 0) for j in ok] + [(bad.id, 5)])


async def test_a_returned_int_stays_a_plain_result(make_runner: MakeRunner) -> None:
    runner = make_runner(PROCS)
    async with running(runner):
        job = runner.enqueue(ReturnsInt, {})
        await wait_for(events.job_completed, lambda p: p["job"].id == job.id, timeout=30)
    assert get_job(runner, job.id).result == os.getpid()
