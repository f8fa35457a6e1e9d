"""Storage verbs racing each other, on SQLite and on PostgreSQL, with real concurrency.

Every test starts its racers together on a barrier (threads, each with connections of
its own), then checks the table: nothing lost, nothing counted twice, no error. On
SQLite the write lock serialises the racers; on PostgreSQL they truly overlap, which is
where these races were found.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobrunner.config import DatabaseSettings
from jobrunner.job import Job
from jobrunner.migrate import available_migrations
from jobrunner.storage import Ack, ClaimRequest, NewJob, Storage
from jobrunner.transitions import Transition

NOW = 1_000_000.0


@pytest.fixture
def store(any_db_url: str) -> Iterator[Storage]:
    """A migrated store on a fresh database of each engine."""
    made = Storage(DatabaseSettings(url=any_db_url))
    made.db.migrate()
    yield made
    made.close()


def insert(store: Storage, topic: str, count: int, **over: Any) -> list[Job]:
    """``count`` available jobs of ``topic`` (one transaction)."""
    row = {"topic": topic, "worker": "w", "args": "{}", "state": "available", "priority": 0, "attempt": 0,
           "max_attempts": 5, "errors": "[]", "inserted_at": NOW, "scheduled_at": NOW, **over}
    return store.jobs.insert([NewJob(**dict(row, args=json.dumps({"i": i}))) for i in range(count)])


def claim(store: Storage, topic: str, limit: int) -> list[Job]:
    """Claim up to ``limit`` jobs of ``topic`` for node ``n1``."""
    return store.jobs.cycle((), ClaimRequest(topic, limit, "n1", NOW)).claimed


def cancel_all(store: Storage, topic: str, count: int) -> list[int]:
    """``count`` jobs of ``topic``, cancelled at NOW (claimed, then cancelled in one batch)."""
    insert(store, topic, count)
    claimed = claim(store, topic, count)
    acks = [Ack(Transition.CANCEL, job, at=NOW, errors="[]") for job in claimed]
    assert all(store.jobs.cycle(acks).applied)
    return sorted(job.id for job in claimed)


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` at once (each in its own thread, released together); their results
    in order (Any: the calls of one race may return different types). An exception in any
    call fails the test."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = call()
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racer hung"
    if errors:
        raise errors[0]
    return results


def states(store: Storage, ids: list[int]) -> dict[int, str]:
    """The state of each of ``ids`` that still exists."""
    found = {}
    for job_id in ids:
        job = store.jobs.get(job_id)
        if job is not None:
            found[job_id] = job.state
    return found


# ---------------------------------------------------------------- leases: parallelism


def test_concurrent_lease_claims_never_exceed_parallelism(any_db_url: str) -> None:
    # Two daemons (stores) on one database, 40 claims at once on a topic of parallelism 2.
    stores = [Storage(DatabaseSettings(url=any_db_url)) for _ in range(2)]
    try:
        stores[0].db.migrate()
        insert(stores[0], "x", 20)
        held: set[int] = set()
        for parallelism in (2, 3, 4):  # each round allows one more
            leased = race(*(
                (lambda s=stores[i % 2], i=i, p=parallelism: s.leases.claim("x", p, f"w{i}", 60.0, NOW))
                for i in range(40)
            ))
            granted = {lease.job.id for lease in leased if lease is not None}
            assert not granted & held
            held |= granted
            executing = stores[0].jobs.stats(["x"])["x"]["executing"]
            assert executing == len(held) == parallelism, (parallelism, executing, len(granted))
    finally:
        for made in stores:
            made.close()


# ---------------------------------------------------------------- retry and prune


def test_prune_racing_a_bulk_retry_deletes_only_final_jobs(store: Storage) -> None:
    for round_ in range(4):
        topic = f"r{round_}"
        ids = cancel_all(store, topic, 200)
        retried, pruned = race(
            functools.partial(store.operator.retry, NOW + 1, topic=topic),
            lambda: store.operator.prune(NOW + 1, 1000),
        )
        left = states(store, ids)
        # Every retried job survived the pruner and is available; everything else was pruned.
        assert sorted(retried) == sorted(job_id for job_id, state in left.items() if state == "available")
        assert set(left.values()) <= {"available"}, left
        assert len(retried) + pruned == len(ids), (len(retried), pruned)


def test_two_bulk_retries_and_two_prunes_at_once(store: Storage) -> None:
    ids = cancel_all(store, "r", 400)
    first, second, pruned_a, pruned_b = race(
        lambda: store.operator.retry(NOW + 1, topic="r"),
        lambda: store.operator.retry(NOW + 1, topic="r"),
        lambda: store.operator.prune(NOW + 1, 1000),
        lambda: store.operator.prune(NOW + 1, 1000),
    )
    assert not set(first) & set(second)  # each job is reported by the retry that changed it
    left = states(store, ids)
    assert sorted(first + second) == sorted(left) and set(left.values()) <= {"available"}
    assert len(first) + len(second) + pruned_a + pruned_b == len(ids)


# ---------------------------------------------------------------- operator actions


def test_cancel_racing_a_completion_reports_what_happened(store: Storage) -> None:
    for _ in range(15):
        (job,) = insert(store, "c", 1)
        (running,) = claim(store, "c", 1)
        ack = Ack(Transition.COMPLETE, running, at=NOW, result="1")
        acked, (after, cancelled) = race(
            functools.partial(store.jobs.cycle, [ack]), functools.partial(store.operator.cancel, job.id, NOW)
        )
        (applied,) = acked.applied
        final = store.jobs.get(job.id)
        assert final is not None and after is not None
        assert applied != cancelled, (applied, cancelled)  # exactly one of them changed the job
        assert final.state == ("cancelled" if cancelled else "completed") == after.state


def test_concurrent_cancels_of_one_job_succeed_once(store: Storage) -> None:
    for _ in range(5):
        (job,) = insert(store, "c", 1)
        outcomes = race(*[lambda j=job.id: store.operator.cancel(j, NOW)] * 6)
        assert sum(changed for _, changed in outcomes) == 1
        assert all(after is not None and after.state == "cancelled" for after, _ in outcomes)
        final = store.jobs.get(job.id)
        assert final is not None and len(final.errors) == 1


def test_concurrent_retries_of_one_job_succeed_once(store: Storage) -> None:
    for _ in range(5):
        (job_id,) = cancel_all(store, "c", 1)
        outcomes = race(*[lambda j=job_id: store.operator.retry(NOW + 1, ids=[j])] * 6)
        assert sorted(outcomes) == [[]] * 5 + [[job_id]]
        assert states(store, [job_id]) == {job_id: "available"}


def test_concurrent_first_pauses_and_resumes_are_idempotent(store: Storage) -> None:
    for round_ in range(4):
        topic = f"p{round_}"
        race(*[lambda t=topic: store.operator.set_paused(t, True, NOW)] * 8)
        assert topic in store.operator.paused_topics()
        other = f"q{round_}"
        race(*[lambda t=topic: store.operator.set_paused(t, False, NOW)] * 4,
             *[lambda t=other: store.operator.set_paused(t, False, NOW)] * 4)
        assert not {topic, other} & store.operator.paused_topics()


def test_concurrent_first_heartbeats_register_the_node_once(store: Storage) -> None:
    for round_ in range(4):
        node = f"node-{round_}"
        race(*[lambda n=node: store.nodes.heartbeat(n, NOW)] * 8)
        assert store.nodes.live(NOW).count(node) == 1


# ---------------------------------------------------------------- migrations


def test_concurrent_first_migrations_apply_each_version_once(any_db_url: str) -> None:
    stores = [Storage(DatabaseSettings(url=any_db_url)) for _ in range(16)]
    try:
        applied = race(*(made.db.migrate for made in stores))
        versions = sorted(m.version for batch in applied for m in batch)
        expected = [m.version for m in available_migrations(stores[0].db.dialect.name)]
        assert versions == expected  # every version applied by exactly one of them
        assert all(made.db.pending_migrations() == [] for made in stores)
        insert(stores[0], "m", 1)  # the schema works
    finally:
        for made in stores:
            made.close()

