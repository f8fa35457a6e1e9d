"""Unique jobs on SQLite and PostgreSQL: duplicates within the period return the existing
job, ``keys`` and ``states`` narrow the match, and concurrent processes insert one job."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from jobrunner import EnqueueError, Runner, Worker, events
from jobrunner.config import parse
from tests.workers import Add, Noop


def _stored(runner: Runner) -> int:
    """How many jobs the table holds."""
    return sum(sum(states.values()) for states in runner.stats().values())



class Daily(Worker):
    topic = "t"
    unique: ClassVar[dict[str, Any]] = {"period": 86400, "keys": ["account"]}

    async def perform(self, job: Any) -> None:  # pragma: no cover - never runs
        return None


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runner(any_db_url: str, clock: Clock) -> Iterator[Runner]:
    made = Runner(parse({"database": {"url": any_db_url}, "topics": {"t": {}}}, source="test"), clock=clock)
    made.migrate()
    yield made
    made.store.close()


def test_a_duplicate_within_the_period_returns_the_existing_job(runner: Runner, clock: Clock) -> None:
    first = runner.enqueue(Add, {"a": 1, "b": 2}, unique={"period": 300})
    again = runner.enqueue(Add, {"a": 1, "b": 2}, unique={"period": 300})
    other = runner.enqueue(Add, {"a": 1, "b": 3}, unique={"period": 300})
    assert not first.duplicate and again.duplicate and not other.duplicate
    assert again.id == first.id and other.id != first.id
    assert _stored(runner) == 2

    clock.now += 301  # the period is over: a new job
    later = runner.enqueue(Add, {"a": 1, "b": 2}, unique={"period": 300})
    assert not later.duplicate and later.id not in (first.id, other.id)


def test_keys_narrow_the_match_and_the_worker_attribute_is_the_default(runner: Runner) -> None:
    first = runner.enqueue(Daily, {"account": 7, "note": "one"})
    same_account = runner.enqueue(Daily, {"account": 7, "note": "two"})
    other_account = runner.enqueue(Daily, {"account": 8, "note": "one"})
    assert same_account.duplicate and same_account.id == first.id
    assert not other_account.duplicate
    forced = runner.enqueue(Daily, {"account": 7}, unique=False)  # per enqueue: not unique
    assert not forced.duplicate and forced.id != first.id


def test_states_say_which_jobs_count(runner: Runner) -> None:
    only_waiting = {"period": None, "states": ["available", "scheduled"]}
    first = runner.enqueue(Noop, {"n": 1}, unique=only_waiting)
    runner.cancel_job(first.id)
    after_cancel = runner.enqueue(Noop, {"n": 1}, unique=only_waiting)
    assert not after_cancel.duplicate  # a cancelled job does not count

    default = runner.enqueue(Noop, {"n": 2}, unique={"period": None})
    runner.cancel_job(default.id)
    assert not runner.enqueue(Noop, {"n": 2}, unique={"period": None}).duplicate  # default: not cancelled
    kept = runner.enqueue(Noop, {"n": 3}, unique={"period": None, "states": ["cancelled"]})
    runner.cancel_job(kept.id)
    assert runner.enqueue(Noop, {"n": 3}, unique={"period": None, "states": ["cancelled"]}).id == kept.id


def test_duplicates_inside_one_batch_insert_one_job(runner: Runner) -> None:
    jobs = runner.enqueue_many([(Add, {"a": 1, "b": 1}, {"unique": {"period": 60}})] * 3 + [(Add, {"a": 2, "b": 2})])
    assert [j.duplicate for j in jobs] == [False, True, True, False]
    assert len({j.id for j in jobs[:3]}) == 1
    assert _stored(runner) == 2


def test_job_inserted_marks_duplicates(runner: Runner) -> None:
    seen: list[tuple[int, bool]] = []

    def record(sender: str, job: Any, duplicate: bool, **_: Any) -> None:
        seen.append((job.id, duplicate))

    events.job_inserted.connect(record)
    try:
        first = runner.enqueue(Noop, {}, unique={"period": 60})
        runner.enqueue(Noop, {}, unique={"period": 60})
    finally:
        events.job_inserted.disconnect(record)
    assert seen == [(first.id, False), (first.id, True)]


@pytest.mark.parametrize(("unique", "message"), [
    ({"keys": ["a"]}, "needs a period"),
    ({"period": 0}, "must be a number of seconds > 0"),
    ({"period": "1h"}, "must be a number of seconds > 0"),
    ({"period": 1, "keys": "a"}, "keys"),
    ({"period": 1, "states": ["done"]}, "'done' is not a job state"),
    ({"period": 1, "when": 1}, "unknown field 'when'"),
    ([300], "must be an object"),
])
def test_bad_unique_options_are_refused_and_store_nothing(runner: Runner, unique: Any, message: str) -> None:
    with pytest.raises(EnqueueError, match=message):
        runner.enqueue(Add, {"a": 1, "b": 1}, unique=unique)
    assert _stored(runner) == 0


def test_keys_need_arguments_that_are_an_object(runner: Runner) -> None:
    with pytest.raises(EnqueueError, match="arguments that are an object"):
        runner.enqueue(Noop, [1, 2], unique={"period": 1, "keys": ["a"]})


def test_a_worker_with_a_bad_unique_attribute_is_refused_when_defined() -> None:
    with pytest.raises(TypeError, match="needs a period"):
        class Bad(Worker):
            topic = "t"
            unique: ClassVar[dict[str, Any]] = {"keys": ["a"]}


RACER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from jobrunner import Runner
    from jobrunner.config import parse
    url, go, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    runner = Runner(parse({"database": {"url": url}, "topics": {"t": {}}}, source="racer"))
    runner.ensure_schema()
    out.with_suffix(".ready").write_text("ready")
    while not go.exists():
        time.sleep(0.001)
    ids = [runner.enqueue("tests.workers.Add", {"a": 1, "b": 1}, unique={"period": 600}).id for _ in range(20)]
    out.write_text(" ".join(map(str, ids)))
""")


def test_processes_enqueueing_at_once_insert_one_job(any_db_url: str, tmp_path: Path,
                                                      subprocess_env: dict[str, str]) -> None:
    setup = Runner(parse({"database": {"url": any_db_url}, "topics": {"t": {}}}, source="test"))
    setup.migrate()
    go = tmp_path / "go"
    outs = [tmp_path / f"racer{i}.txt" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", RACER, any_db_url, str(go), str(out)], env=subprocess_env)
             for out in outs]
    try:
        deadline = time.monotonic() + 60
        while not all(out.with_suffix(".ready").exists() for out in outs):  # every racer at the line
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.01)
        go.write_text("go")
        for proc in procs:
            assert proc.wait(timeout=120) == 0
        ids = {int(i) for out in outs for i in out.read_text().split()}
        assert len(ids) == 1
        assert _stored(setup) == 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()  # reaped: a Popen collected while running warns (an error under filterwarnings)
        setup.store.close()
