"""Job dependencies and workflows on SQLite and PostgreSQL: blocked until every dependency
completed, cancelled (or run) when one fails, released by the finishing transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobrunner import EnqueueError, Job, Runner, Worker, Workflow, events
from jobrunner.config import parse
from jobrunner.storage import Ack, ClaimRequest
from jobrunner.testing import drain
from jobrunner.transitions import Transition
from tests.workers import Add, seen


def _stored(runner: Runner) -> int:
    """How many jobs the table holds."""
    return sum(sum(states.values()) for states in runner.stats().values())



class Boom(Worker):
    topic = "t"
    max_attempts = 1

    async def perform(self, job: Job) -> None:
        raise RuntimeError("boom")


@pytest.fixture
def runner(any_db_url: str) -> Iterator[Runner]:
    made = Runner(parse({"database": {"url": any_db_url}, "topics": {"t": {"parallelism": 4}}}, source="test"))
    made.migrate()
    yield made
    made.store.close()


def state(runner: Runner, job: Job) -> str:
    found = runner.get_job(job.id)
    assert found is not None
    return found.state


@pytest.mark.anyio
async def test_a_job_waits_blocked_until_its_dependencies_completed(runner: Runner) -> None:
    first = runner.enqueue(Add, {"a": 1, "b": 1})
    second = runner.enqueue(Add, {"a": 2, "b": 2})
    last = runner.enqueue(Add, {"a": 3, "b": 3}, depends_on=[first, second.id])
    assert last.state == "blocked"
    assert runner.list_jobs(state="blocked") == [last]
    counts = await drain(runner, "t")
    assert counts["completed"] == 3
    assert list(seen)[-1] == last.id  # ran after both
    assert state(runner, last) == "completed"


@pytest.mark.anyio
async def test_a_failed_dependency_cancels_its_dependents_in_a_chain(runner: Runner) -> None:
    failing = runner.enqueue(Boom, {})
    child = runner.enqueue(Add, {"a": 1, "b": 1}, depends_on=[failing])
    grandchild = runner.enqueue(Add, {"a": 1, "b": 2}, depends_on=[child])
    anyway = runner.enqueue(Add, {"a": 1, "b": 3}, depends_on=[failing], on_dependency_failure="run")
    reasons: dict[int, str] = {}

    def record(sender: str, job: Job, reason: str, **_: Any) -> None:
        reasons[job.id] = reason

    events.job_cancelled.connect(record)
    try:
        await drain(runner, "t")
    finally:
        events.job_cancelled.disconnect(record)
    assert state(runner, failing) == "discarded"
    assert reasons == {child.id: f"dependency {failing.id} was discarded",
                       grandchild.id: f"dependency {child.id} was cancelled"}
    stored = runner.get_job(child.id)
    assert stored is not None and stored.errors[-1]["error"] == f"cancelled: dependency {failing.id} was discarded"
    assert state(runner, grandchild) == "cancelled"
    assert state(runner, anyway) == "completed"


def test_cancelling_a_blocked_job_cancels_what_waits_for_it(runner: Runner) -> None:
    first = runner.enqueue(Add, {"a": 1, "b": 1}, delay=3600)
    middle = runner.enqueue(Add, {"a": 1, "b": 2}, depends_on=[first])
    last = runner.enqueue(Add, {"a": 1, "b": 3}, depends_on=[middle])
    runner.cancel_job(middle.id)
    assert (state(runner, middle), state(runner, last)) == ("cancelled", "cancelled")
    assert state(runner, first) == "scheduled"


def test_dependencies_already_finished_decide_at_enqueue(runner: Runner) -> None:
    done = runner.enqueue(Add, {"a": 1, "b": 1})
    cancelled = runner.enqueue(Add, {"a": 1, "b": 2})
    runner.cancel_job(cancelled.id)
    runner.store.jobs.cycle((), ClaimRequest("t", 1, "node", done.inserted_at or 0.0))  # claims `done`
    running = runner.get_job(done.id)
    assert running is not None and running.state == "executing"
    runner.store.jobs.cycle([Ack(Transition.COMPLETE, running, at=running.attempted_at, result="2")])
    assert runner.enqueue(Add, {"a": 2, "b": 2}, depends_on=[done]).state == "available"
    assert runner.enqueue(Add, {"a": 2, "b": 2}, depends_on=[done], delay=60).state == "scheduled"
    refused = runner.enqueue(Add, {"a": 2, "b": 3}, depends_on=[cancelled])
    assert refused.state == "cancelled"
    assert refused.errors[-1]["error"] == f"cancelled: dependency {cancelled.id} was cancelled"
    assert runner.enqueue(Add, {"a": 2, "b": 4}, depends_on=[cancelled], on_dependency_failure="run").state \
        == "available"


def test_unknown_dependencies_are_refused_and_store_nothing(runner: Runner) -> None:
    known = runner.enqueue(Add, {"a": 1, "b": 1})
    with pytest.raises(EnqueueError, match=r"unknown job id.*: 424242"):
        runner.enqueue(Add, {"a": 1, "b": 2}, depends_on=[known, 424242])
    with pytest.raises(EnqueueError, match="is not a job or a job id"):
        runner.enqueue(Add, {"a": 1, "b": 2}, depends_on=["first"])  # type: ignore[list-item]
    with pytest.raises(EnqueueError, match="must be a list"):
        runner.enqueue(Add, {"a": 1, "b": 2}, depends_on=known)  # type: ignore[arg-type]
    with pytest.raises(EnqueueError, match="on_dependency_failure"):
        runner.enqueue(Add, {"a": 1, "b": 2}, depends_on=[known], on_dependency_failure="ignore")
    assert _stored(runner) == 1


@pytest.mark.anyio
async def test_a_workflow_fans_out_and_in_in_one_transaction(runner: Runner) -> None:
    flow = Workflow()
    flow.add("report", Add, {"a": 9, "b": 9}, depends_on=["left", "right"])  # any order
    flow.add("fetch", Add, {"a": 1, "b": 1})
    flow.add("left", Add, {"a": 2, "b": 2}, depends_on=["fetch"])
    flow.add("right", Add, {"a": 3, "b": 3}, depends_on=["fetch"], tags=["r"])
    jobs = runner.enqueue_workflow(flow)
    assert {name: job.state for name, job in jobs.items()} == {
        "fetch": "available", "left": "blocked", "right": "blocked", "report": "blocked"}
    links = runner.job_links(jobs["fetch"].id)
    assert links == {"depends_on": [], "dependents": [{"id": jobs["left"].id, "state": "blocked"},
                                                      {"id": jobs["right"].id, "state": "blocked"}]}
    assert runner.job_links(jobs["report"].id)["depends_on"] == [
        {"id": jobs["left"].id, "state": "blocked", "on_failure": "cancel"},
        {"id": jobs["right"].id, "state": "blocked", "on_failure": "cancel"}]
    await drain(runner, "t")
    order = list(seen)
    assert order[0] == jobs["fetch"].id and order[-1] == jobs["report"].id
    assert all(state(runner, job) == "completed" for job in jobs.values())


def test_workflows_refuse_cycles_and_unknown_steps_storing_nothing(runner: Runner) -> None:
    loop = Workflow()
    loop.add("a", Add, {"a": 1, "b": 1}, depends_on=["c"])
    loop.add("b", Add, {"a": 1, "b": 1}, depends_on=["a"])
    loop.add("c", Add, {"a": 1, "b": 1}, depends_on=["b"])
    with pytest.raises(EnqueueError, match=r"form a cycle: (a|b|c) -> .* -> \1"):
        runner.enqueue_workflow(loop)
    unknown = Workflow()
    unknown.add("a", Add, {"a": 1, "b": 1}, depends_on=["nope"])
    with pytest.raises(EnqueueError, match="depends on 'nope', which is no step"):
        runner.enqueue_workflow(unknown)
    bad_step = Workflow()
    bad_step.add("a", Add, {"a": 1, "b": 1})
    bad_step.add("b", Add, {"a": 1, "b": 1}, depends_on=["a", 999999])
    with pytest.raises(EnqueueError, match="999999"):
        runner.enqueue_workflow(bad_step)
    with pytest.raises(EnqueueError, match="already has a step named 'a'"):
        bad_step.add("a", Add, {})
    assert _stored(runner) == 0


def test_a_retried_dependent_waits_again_for_its_dependencies(runner: Runner) -> None:
    first = runner.enqueue(Add, {"a": 1, "b": 1}, delay=3600)
    second = runner.enqueue(Add, {"a": 1, "b": 2}, depends_on=[first])
    runner.cancel_job(second.id)
    assert runner.retry_jobs([second.id]) == [second.id]
    assert state(runner, second) == "blocked"


def test_pruning_a_job_forgets_its_links(runner: Runner) -> None:
    first = runner.enqueue(Add, {"a": 1, "b": 1}, delay=3600)
    second = runner.enqueue(Add, {"a": 1, "b": 2}, depends_on=[first])
    runner.cancel_job(first.id)  # cancels second too
    assert runner.store.operator.prune(float("inf"), 10) == 2
    assert runner.job_links(second.id) == {"depends_on": [], "dependents": []}


def test_dependencies_finishing_at_once_in_two_transactions_release_the_dependent(runner: Runner) -> None:
    """Two writers complete a dependent's two dependencies at the same moment: whichever
    commits second sees the first and releases it (none stays blocked)."""
    import threading
    import time


    pairs = [(runner.enqueue(Add, {"a": i, "b": 0}), runner.enqueue(Add, {"a": i, "b": 1})) for i in range(40)]
    dependents = [runner.enqueue(Add, {"a": i, "b": 2}, depends_on=list(pair)) for i, pair in enumerate(pairs)]
    request = ClaimRequest("t", 80, "node", pairs[-1][1].inserted_at or 0.0)
    claimed = {job.id: job for job in runner.store.jobs.cycle((), request).claimed}
    assert len(claimed) == 80
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def complete(side: int) -> None:
        try:
            start.wait(timeout=30)
            for pair in pairs:
                job = claimed[pair[side].id]
                runner.store.jobs.cycle([Ack(Transition.COMPLETE, job, at=time.time(), result=None)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    writers = [threading.Thread(target=complete, args=(side,)) for side in (0, 1)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert not failures, failures
    assert [state(runner, job) for job in dependents] == ["available"] * len(dependents)


def test_cancels_racing_through_a_diamond_cancel_it_all_without_deadlock(runner: Runner) -> None:
    """Two operators cancel the two sides of a diamond (a → b, c → d → e) at the same
    moment: both cascades reach d and e. Each ends cancelled, no transaction deadlocks,
    and the loser is told the job is already cancelled (or cancels it itself)."""
    import threading

    from jobrunner import JobStateError

    def cancel(job: Job, start: threading.Barrier, failures: list[BaseException]) -> None:
        try:
            start.wait(timeout=30)
            runner.cancel_job(job.id)
        except JobStateError:
            pass  # the other cascade got there first
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    for _ in range(15):
        top = runner.enqueue(Add, {"a": 0, "b": 0}, delay=3600)
        left = runner.enqueue(Add, {"a": 1, "b": 0}, depends_on=[top])
        right = runner.enqueue(Add, {"a": 2, "b": 0}, depends_on=[top])
        join = runner.enqueue(Add, {"a": 3, "b": 0}, depends_on=[left, right])
        last = runner.enqueue(Add, {"a": 4, "b": 0}, depends_on=[join, left, right])
        start = threading.Barrier(2)
        failures: list[BaseException] = []
        operators = [threading.Thread(target=cancel, args=(job, start, failures)) for job in (left, right)]
        for operator in operators:
            operator.start()
        for operator in operators:
            operator.join(timeout=60)
        assert not failures, failures
        assert [state(runner, job) for job in (top, left, right, join, last)] == ["scheduled"] + ["cancelled"] * 4
