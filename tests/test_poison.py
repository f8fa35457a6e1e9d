"""One bad job fails alone: poisoned worker modules, and shutdown that never waits on intervals."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobrunner import Job, Worker, events
from jobrunner.config import Settings
from jobrunner.errors import ConfigError
from jobrunner.runner import import_modules
from jobrunner.storage import NewJob
from jobrunner.testing import EventRecorder, running, wait_for
from tests.helpers import MakeRunner, about, get_job
from tests.workers import Add

pytestmark = pytest.mark.anyio

EXITING_MODULE = '''
import sys
from jobrunner import Worker

sys.exit("usage: exiting_worker_mod [-h]")   # e.g. argparse reading the daemon's argv


class Never(Worker):
    topic = "t"

    async def perform(self, job):
        return None
'''


@pytest.fixture
def exiting_module(tmp_path: Path) -> Iterator[str]:
    """A module of package ``poisonpkg`` that calls sys.exit when imported."""
    package = tmp_path / "poisonpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "exiting_worker_mod.py").write_text(EXITING_MODULE)
    sys.path.insert(0, str(tmp_path))
    yield "poisonpkg.exiting_worker_mod"
    sys.path.remove(str(tmp_path))
    for name in ("poisonpkg.exiting_worker_mod", "poisonpkg"):
        sys.modules.pop(name, None)


async def test_a_worker_module_that_exits_at_import_discards_only_its_job(
    make_runner: MakeRunner, exiting_module: str
) -> None:
    # Workers are only ever imported from the packages of [runner] modules.
    runner = make_runner({"t": {"parallelism": 2, "poll_interval": 0.05}}, runner={"modules": ["poisonpkg"]})
    row: dict[str, Any] = {
        "topic": "t", "worker": f"{exiting_module}.Never", "args": "{}", "state": "available",
        "priority": 0, "attempt": 0, "max_attempts": 50, "errors": "[]",
        "inserted_at": 0.0, "scheduled_at": 0.0,
    }
    [poisoned] = runner.store.jobs.insert([NewJob(**row)])
    good = runner.enqueue(Add, {"a": 1, "b": 2}, priority=9)
    async with running(runner):
        with anyio.fail_after(10):
            done = wait_for(events.job_completed, lambda p: p["job"].id == good.id)
            await wait_for(events.job_discarded, lambda p: p["job"].id == poisoned.id)
            await done
    stored = get_job(runner, poisoned.id)
    assert stored.state == "discarded" and stored.attempt == 1
    assert "SystemExit" in stored.errors[0]["error"] and "usage" in stored.errors[0]["error"]
    assert get_job(runner, good.id).state == "completed"


def test_a_configured_module_that_exits_at_import_is_a_config_error(
    make_settings: Callable[..., Settings], exiting_module: str
) -> None:
    settings = make_settings(runner={"modules": [exiting_module]})
    with pytest.raises(ConfigError, match=r"poisonpkg\.exiting_worker_mod.*SystemExit"):
        import_modules(settings)


async def test_stop_returns_well_within_the_watch_interval(make_runner: MakeRunner) -> None:
    runner = make_runner(database={"watch_interval": 30})
    start = anyio.current_time()
    with anyio.fail_after(10):
        async with running(runner):
            await anyio.sleep(0)
    assert anyio.current_time() - start < 5


class DeepResult(Worker):
    """Returns a value nested far deeper than JSON encoding allows."""

    topic = "t"

    async def perform(self, job: Job) -> Any:
        value: Any = []
        for _ in range(5000):
            value = [value]
        return value


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class RaisesUnprintable(Worker):
    """Raises an exception whose ``__str__`` raises."""

    topic = "t"
    max_attempts = 1

    async def perform(self, job: Job) -> Any:
        raise Unprintable()


async def test_outcomes_that_are_hard_to_record_fail_alone(make_runner: MakeRunner) -> None:
    runner = make_runner({"t": {"parallelism": 2, "poll_interval": 0.05}})
    deep = runner.enqueue(DeepResult, {})
    unprintable = runner.enqueue(RaisesUnprintable, {})
    async with running(runner):
        with anyio.fail_after(10):
            done = wait_for(events.job_completed, lambda p: p["job"].id == deep.id)
            await wait_for(events.job_discarded, lambda p: p["job"].id == unprintable.id)
            await done
        after = runner.enqueue(Add, {"a": 1, "b": 1})  # the runner is still serving
        with anyio.fail_after(10):
            await wait_for(events.job_completed, lambda p: p["job"].id == after.id)
    assert get_job(runner, deep.id).state == "completed" and get_job(runner, deep.id).result is None
    stored = get_job(runner, unprintable.id)
    assert stored.state == "discarded" and stored.errors[0]["error"].startswith("Unprintable")


class _Bodies:
    """How many bodies of OverrunningSync run at once, and the most ever seen."""

    lock = threading.Lock()
    active = 0
    most = 0
    ended = 0


class OverrunningSync(Worker):
    """A plain def perform that runs on well past its timeout (Python cannot stop it)."""

    topic = "t"
    timeout = 0.05
    max_attempts = 1

    def perform(self, job: Job) -> Any:
        with _Bodies.lock:
            _Bodies.active += 1
            _Bodies.most = max(_Bodies.most, _Bodies.active)
        time.sleep(0.3)  # the work itself, not test synchronisation
        with _Bodies.lock:
            _Bodies.active -= 1
            _Bodies.ended += 1


async def test_a_timed_out_thread_keeps_its_slot_until_it_returns(make_runner: MakeRunner) -> None:
    _Bodies.active = _Bodies.most = _Bodies.ended = 0
    runner = make_runner({"t": {"parallelism": 1, "poll_interval": 0.05}})
    jobs = [runner.enqueue(OverrunningSync, {}) for _ in range(3)]
    recorder = EventRecorder()
    with recorder:
        async with running(runner):
            with anyio.fail_after(20):
                for job in jobs:
                    await recorder.wait_for("job_discarded", about(job))
                while _Bodies.ended < len(jobs):  # the last thread still runs after its failure
                    await anyio.sleep(0.01)
    assert _Bodies.most == 1, f"{_Bodies.most} bodies ran at once with parallelism 1"
    for job in jobs:
        stored = get_job(runner, job.id)
        assert stored.state == "discarded" and "timeout" in stored.errors[0]["error"]


@pytest.mark.parametrize("job_id", [0, -1, 2**63, 10**30])
def test_ids_no_job_can_have_are_unknown_not_errors(runner: Any, job_id: int) -> None:
    assert runner.get_job(job_id) is None
    assert runner.cancel_job(job_id) is None
    assert runner.retry_jobs([job_id]) == []
