"""Waiting for a job's final state: ``runner.wait`` / ``wait_async``, ``python -m jobrunner
wait`` and ``GET /jobs/{id}?wait=S``, on SQLite and PostgreSQL, in process and across
processes, and without reading the table in a loop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import httpx
import pytest

import jobrunner
from jobrunner import Job, JobNotFoundError, Runner, WaitTimeoutError
from jobrunner.config import parse
from jobrunner.testing import running
from tests import forkserver
from tests.conftest import PYTHON
from tests.daemon_harness import free_port
from tests.workers import Add, FailTimes

TOPICS = {"t": {"parallelism": 2, "poll_interval": 0.05}}


def make(url: str, **sections: Any) -> Runner:
    runner = Runner(parse({"database": {"url": url}, "topics": TOPICS, **sections}, source="wait-test"))
    runner.migrate()
    return runner


@pytest.fixture
def waiter(any_db_url: str) -> Iterator[Runner]:
    made = make(any_db_url)
    yield made
    made.store.close()


# ---------------------------------------------------------------- Python


@pytest.mark.anyio
async def test_wait_returns_the_final_job_with_its_result(waiter: Runner) -> None:
    async with running(waiter):
        job = waiter.enqueue(Add, {"a": 2, "b": 3})
        done = await waiter.wait_async(job, timeout=20)
        assert (done.id, done.state, done.result) == (job.id, "completed", 5)
        failed = waiter.enqueue(FailTimes, {"fails": 5}, max_attempts=1)
        discarded = await waiter.wait_async(failed.id, timeout=20)
        assert discarded.state == "discarded" and "failing attempt 1" in discarded.errors[0]["error"]
        later = waiter.enqueue(Add, {"a": 1, "b": 1}, delay=3600)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(anyio.to_thread.run_sync, waiter.cancel_job, later.id)
            cancelled = await waiter.wait_async(later, timeout=20)
        assert cancelled.state == "cancelled"
        # A job already final answers at once.
        assert (await waiter.wait_async(job, timeout=0)).state == "completed"


@pytest.mark.anyio
async def test_wait_times_out_with_the_last_state_seen(waiter: Runner) -> None:
    job = waiter.enqueue(Add, {"a": 1, "b": 1}, delay=3600)
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError, match=f"job {job.id} is still scheduled after 0.3s") as info:
        await waiter.wait_async(job, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    assert cast(Job, info.value.job).state == "scheduled"  # WaitTimeoutError.job is typed object
    assert isinstance(info.value, TimeoutError) and jobrunner.WaitTimeoutError is WaitTimeoutError
    with pytest.raises(JobNotFoundError, match="no job with id 987654"):
        await waiter.wait_async(987654, timeout=1)
    with pytest.raises(JobNotFoundError):
        await waiter.wait_async(0)


@pytest.mark.anyio
async def test_an_idle_wait_reads_the_job_a_few_times_not_in_a_loop(
    waiter: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = waiter.enqueue(Add, {"a": 1, "b": 1}, delay=3600)
    reads = 0
    get_job = waiter.get_job

    def counting(job_id: int) -> Any:
        nonlocal reads
        reads += 1
        return get_job(job_id)

    monkeypatch.setattr(waiter, "get_job", counting)
    with pytest.raises(WaitTimeoutError):
        await waiter.wait_async(job, timeout=2.0)
    # One read, then fallback reads after 0.05, 0.1, 0.2, 0.4, 0.8 and 1 s: at most 8 in 2 s.
    assert 2 <= reads <= 8


def test_sync_wait_from_a_thread_while_the_runner_runs(waiter: Runner) -> None:
    async def main() -> Any:
        async with running(waiter):
            job = waiter.enqueue(Add, {"a": 20, "b": 22})
            return await anyio.to_thread.run_sync(lambda: waiter.wait(job.id, timeout=20))

    assert anyio.run(main).result == 42


@pytest.mark.anyio
async def test_wait_in_the_loop_thread_is_refused(waiter: Runner) -> None:
    async with running(waiter):
        with pytest.raises(RuntimeError, match=r"use await runner\.wait_async"):
            waiter.wait(1)


def test_a_runner_that_is_not_running_waits_for_one_that_is(any_db_url: str) -> None:
    """Two runners on one database: the idle one waits (from a thread) for the other's work.
    (Waiters in other processes: see the CLI test below.)"""
    worker_side = make(any_db_url)
    waiting_side = make(any_db_url)
    try:
        job = worker_side.enqueue(Add, {"a": 1, "b": 2})

        async def main() -> None:
            async with anyio.create_task_group() as tasks:
                async def work() -> None:
                    async with running(worker_side):
                        await anyio.sleep(0.5)  # the waiter is waiting by then
                        await worker_side.wait_async(job, timeout=20)

                tasks.start_soon(work)
                done = await anyio.to_thread.run_sync(lambda: waiting_side.wait(job, timeout=20))
                assert done.result == 3

        anyio.run(main)
    finally:
        worker_side.store.close()
        waiting_side.store.close()


# ---------------------------------------------------------------- CLI


def write_config(path: Path, url: str) -> Path:
    path.write_text(f'[database]\nurl = "{url}"\n\n[runner]\nmodules = ["tests.workers"]\n\n'
                    "[topics.t]\nparallelism = 2\npoll_interval = 0.05\n")
    return path


def cli(config: Path, env: dict[str, str], *args: str) -> forkserver.Captured:
    return forkserver.Captured([PYTHON, "-m", "jobrunner", "--config", str(config), *args], env=env)


def test_wait_command_exit_codes(any_db_url: str, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    config = write_config(tmp_path / "config.toml", any_db_url)
    runner = make(any_db_url)
    try:
        ok = runner.enqueue(Add, {"a": 1, "b": 2})
        bad = runner.enqueue(FailTimes, {"fails": 5}, max_attempts=1)
        dropped = runner.enqueue(Add, {"a": 1, "b": 2}, delay=3600)
        idle = runner.enqueue(Add, {"a": 1, "b": 2}, delay=3600)
        # Waiters first (other processes), then the work they wait for.
        waits = {name: cli(config, subprocess_env, "wait", str(job.id), "--timeout", "60", "--json")
                 for name, job in (("ok", ok), ("bad", bad), ("dropped", dropped))}
        timed_out = cli(config, subprocess_env, "wait", str(idle.id), "--timeout", "0.5")
        unknown = cli(config, subprocess_env, "wait", "987654")

        async def work() -> None:
            async with running(runner):
                await runner.wait_async(ok, timeout=30)
                await runner.wait_async(bad, timeout=30)
                runner.cancel_job(dropped.id)

        anyio.run(work)
        results = {name: (proc.wait(timeout=60), *proc.communicate()) for name, proc in waits.items()}
        assert results["ok"][0] == 0 and json.loads(results["ok"][1])["result"] == 3
        assert results["bad"][0] == 3 and json.loads(results["bad"][1])["state"] == "discarded"
        assert results["dropped"][0] == 4 and json.loads(results["dropped"][1])["state"] == "cancelled"
        assert timed_out.wait(timeout=60) == 124
        assert f"job {idle.id} is still scheduled after 0.5s" in timed_out.communicate()[1]
        assert unknown.wait(timeout=60) == 1 and "no job with id 987654" in unknown.communicate()[1]
        shown = cli(config, subprocess_env, "wait", str(ok.id))
        out, _ = shown.communicate(timeout=60)
        assert shown.returncode == 0 and "completed" in out and "result: 3" in out
    finally:
        runner.store.close()


# ---------------------------------------------------------------- HTTP


async def serving(http: httpx.AsyncClient) -> None:
    """Until the daemon's HTTP server answers (it starts beside the topics)."""
    with anyio.fail_after(20):
        while True:
            try:
                if (await http.get("/topics")).status_code == 200:
                    return
            except httpx.TransportError:
                await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_get_job_with_wait_long_polls_until_final(any_db_url: str) -> None:
    port = free_port()
    runner = make(any_db_url, http={"enabled": True, "port": port, "max_wait": 30})
    try:
        async with running(runner), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=40) as http:
            await serving(http)
            later = runner.enqueue(Add, {"a": 2, "b": 2}, delay=3600)
            started = time.monotonic()
            response = await http.get(f"/jobs/{later.id}", params={"wait": 0.3})
            assert response.status_code == 200 and response.json()["state"] == "scheduled"
            assert time.monotonic() - started >= 0.3

            soon = runner.enqueue(Add, {"a": 2, "b": 2}, delay=1)  # runs in about a second
            response = await http.get(f"/jobs/{soon.id}", params={"wait": 20})
            assert response.status_code == 200
            assert (response.json()["state"], response.json()["result"]) == ("completed", 4)

            # Bounds: wait is a number from 0 to [http] max_wait; an unknown job is 404 at once.
            for bad in ("-1", "31", "soon", "nan"):
                answer = await http.get(f"/jobs/{later.id}", params={"wait": bad})
                assert answer.status_code == 400 and "wait" in answer.json()["error"], bad
            assert (await http.get("/jobs/987654", params={"wait": 5})).status_code == 404
            done = await http.get(f"/jobs/{soon.id}", params={"wait": 0})
            assert done.json()["state"] == "completed"
    finally:
        runner.store.close()
