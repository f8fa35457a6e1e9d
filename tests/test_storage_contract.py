"""The storage contract: every verb of the storage API, on SQLite and on PostgreSQL.

The async methods (:class:`jobrunner.storage.AsyncStorage`, what the engine calls) are
exercised through a thread hop like the engine's; the sync verbs that only operators
and the embedding API use are called on the verb groups directly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from jobrunner import events
from jobrunner.config import DatabaseSettings
from jobrunner.job import Job, JobState, iso
from jobrunner.storage import INSERTED, Ack, AsyncStorage, ClaimRequest, NewJob, Storage
from jobrunner.storage.notices import CHANNEL
from jobrunner.summary import OUTCOMES
from jobrunner.transitions import Transition

pytestmark = pytest.mark.anyio

NOW = 1_000_000.0


@pytest.fixture
async def api(any_db_url: str) -> AsyncIterator[AsyncStorage]:
    """The async storage API on a fresh, migrated database of each engine."""
    storage = Storage(DatabaseSettings(url=any_db_url))
    storage.db.migrate()
    made = AsyncStorage(storage)
    yield made
    storage.close()


def row(topic: str = "t", *, priority: int = 0, state: str = "available", at: float = NOW,
        max_attempts: int = 5, **args: Any) -> NewJob:
    """A new job of ``topic`` with ``args`` (available at ``at`` unless told otherwise)."""
    return NewJob(topic, "w", json.dumps(args), state, priority, 0, max_attempts, "[]", NOW, at)


def claim(topic: str = "t", limit: int = 10, node: str = "n1", **more: Any) -> ClaimRequest:
    """A claim of up to ``limit`` jobs of ``topic`` for ``node`` at NOW."""
    return ClaimRequest(topic, limit, node, NOW, **more)


async def test_insert_returns_the_stored_jobs_in_order_one_or_many(api: AsyncStorage) -> None:
    (one,) = await api.insert([row(i=0)])
    later = row("u", state="scheduled", at=NOW + 60)
    many = await api.insert([row(i=i, priority=i % 3) for i in range(1, 6)] + [later])
    assert [j.args for j in [one, *many]] == [{"i": i} for i in range(6)] + [{}]
    assert [j.id for j in many] == sorted(j.id for j in many) and many[0].id > one.id
    for job in [one, *many]:
        assert await api.get_job(job.id) == job
    assert many[-1].state == JobState.SCHEDULED and many[-1].topic == "u"
    assert await api.get_job(many[-1].id + 1000) is None
    counts = await api.stats(["t", "empty"])
    assert counts["t"][JobState.AVAILABLE] == 6 and counts["u"][JobState.SCHEDULED] == 1
    assert set(counts["empty"].values()) == {0} and set(counts["empty"]) == set(JobState)


async def test_reads_list_and_page_newest_first(api: AsyncStorage) -> None:
    jobs = await api.insert([row(i=i) for i in range(5)] + [row("u")])
    verbs = api.storage.jobs
    assert [j.id for j in verbs.listing(topic="t", limit=3)] == [j.id for j in jobs[4:1:-1]]
    assert [j.id for j in verbs.listing(topic="t", newest_first=False)] == [j.id for j in jobs[:5]]
    assert verbs.listing(worker="nobody") == [] and len(verbs.listing(state="available")) == 6
    first, cursor = verbs.page("t", None, 2)
    second, cursor2 = verbs.page("t", None, 2, cursor)
    last, end = verbs.page("t", None, 2, cursor2)
    assert [j.id for j in first + second + last] == [j.id for j in reversed(jobs[:5])] and end is None


async def test_the_cycle_claims_by_priority_then_fifo_and_stamps_the_claim(api: AsyncStorage) -> None:
    low, high, high_later = await api.insert([row(priority=5), row(priority=1), row(priority=1)])
    result = await api.cycle((), claim(limit=2))
    assert result.applied == () and result.control is None
    assert [j.id for j in result.claimed] == [high.id, high_later.id]
    for job in result.claimed:
        assert (job.state, job.attempt, job.attempted_at, job.attempted_by) == (JobState.EXECUTING, 1, NOW, "n1")
    assert (await api.get_job(low.id)) == low
    assert (await api.cycle((), claim(limit=0))).claimed == []
    assert [j.id for j in (await api.cycle((), claim(limit=5))).claimed] == [low.id]


@pytest.mark.parametrize("transition", list(Transition))
async def test_each_transition_writes_its_state_and_stamp(api: AsyncStorage, transition: Transition) -> None:
    await api.insert([row()])
    (running,) = (await api.cycle((), claim())).claimed
    ack = Ack(transition, running, at=NOW + 5, result='"r"', errors='[{"error": "e"}]')
    assert (await api.cycle([ack])).applied == (True,)
    after = await api.get_job(running.id)
    assert after is not None and after.state == transition.state
    if transition.stamp is not None:
        assert getattr(after, transition.stamp) == NOW + 5
    assert after.attempt == (0 if transition.uncounts else 1)
    assert after.result == ("r" if transition is Transition.COMPLETE else None)
    written = transition not in (Transition.COMPLETE, Transition.SNOOZE, Transition.RELEASE)
    assert after.errors == ([{"error": "e"}] if written else [])


async def test_a_stale_ack_is_not_applied_and_the_rest_of_the_batch_is(api: AsyncStorage) -> None:
    await api.insert([row(), row()])
    first, second = (await api.cycle((), claim())).claimed
    (await api.cycle([Ack(Transition.RELEASE, first)]))  # first left executing: its next ack is stale
    result = await api.cycle([Ack(Transition.COMPLETE, first, at=NOW), Ack(Transition.COMPLETE, second, at=NOW)],
                             claim(limit=1))
    assert result.applied == (False, True)
    assert [j.id for j in result.claimed] == [first.id]  # claimed again, attempt 1 once more
    again = await api.get_job(first.id)
    assert again is not None and again.state == JobState.EXECUTING and again.attempt == 1
    done = await api.get_job(second.id)
    assert done is not None and done.state == JobState.COMPLETED


async def test_staging_makes_due_jobs_available(api: AsyncStorage) -> None:
    due, later = await api.insert([row(state="scheduled", at=NOW - 1), row(state="scheduled", at=NOW + 60)])
    assert await api.stage_due("t", NOW) == 1
    assert (await api.get_job(due.id)) == due.evolve(state=JobState.AVAILABLE)
    result = await api.cycle((), ClaimRequest("t", 10, "n1", NOW + 61, stage=True))
    assert [j.id for j in result.claimed] == [due.id, later.id]


async def test_control_reports_pause_cancellations_and_lost_jobs(api: AsyncStorage) -> None:
    await api.insert([row(), row(), row()])
    kept, cancelled, lost = (await api.cycle((), claim())).claimed
    api.storage.operator.cancel(cancelled.id, NOW)
    (await api.cycle([Ack(Transition.RELEASE, lost)]))
    running = [(j.id, j.attempt) for j in (kept, cancelled, lost)]
    control = await api.control("t", running, "n1")
    assert (control.paused, control.cancelled, control.lost) == (False, frozenset({cancelled.id}), frozenset({lost.id}))
    assert (await api.control("t", running, "another-node")).lost == {kept.id, lost.id}
    api.storage.operator.set_paused("t", True, NOW)
    assert api.storage.operator.paused_topics() == {"t"}
    paused = await api.cycle((), claim(running=running))
    assert paused.control is not None and paused.control.paused and paused.claimed == []
    api.storage.operator.set_paused("t", False, NOW)
    resumed = await api.cycle((), claim(running=running))
    assert resumed.control is not None and not resumed.control.paused and [j.id for j in resumed.claimed] == [lost.id]


async def test_cancel_retry_and_prune(api: AsyncStorage) -> None:
    operator = api.storage.operator
    waiting, done = await api.insert([row(), row("u")])
    (running,) = (await api.cycle((), claim("u"))).claimed
    await api.cycle([Ack(Transition.COMPLETE, running, at=NOW)])
    cancelled, changed = operator.cancel(waiting.id, NOW, "no longer wanted")
    assert changed and cancelled is not None and cancelled.state == JobState.CANCELLED
    assert cancelled.errors[-1]["error"] == "cancelled: no longer wanted"
    assert operator.cancel(waiting.id, NOW) == (cancelled, False)
    assert operator.cancel(done.id, NOW)[1] is False and operator.cancel(10**9, NOW) == (None, False)
    assert operator.retry(NOW + 1, ids=[waiting.id, done.id]) == [waiting.id]  # completed is not retryable
    assert (await api.get_job(waiting.id)) is not None
    operator.cancel(waiting.id, NOW + 2)
    assert operator.retry(NOW + 3, topic="t", states=["discarded"]) == []
    assert operator.retry(NOW + 3, topic="t") == [waiting.id]
    assert await api.prune(NOW + 10, 10) == 1  # the completed job
    assert await api.get_job(done.id) is None and await api.get_job(waiting.id) is not None


async def test_heartbeats_and_rescue_by_heartbeat(api: AsyncStorage) -> None:
    await api.heartbeat("dead", NOW - 100)
    await api.heartbeat("alive", NOW)
    assert api.storage.nodes.live(NOW - 10) == ["alive"]
    await api.insert([row(), row(max_attempts=1)])
    orphan, last_try = (await api.cycle((), claim(node="dead"))).claimed
    rescued = {j.id: j for j in await api.rescue_orphans(NOW, NOW - 10)}
    assert rescued[orphan.id].state == JobState.AVAILABLE and rescued[last_try.id].state == JobState.DISCARDED
    assert "node dead died" in rescued[orphan.id].errors[-1]["error"]
    assert await api.get_job(orphan.id) == rescued[orphan.id].evolve(
        errors=rescued[orphan.id].errors)  # as stored
    assert sorted(api.storage.nodes.live(0)) == ["alive"]  # the dead node's row is gone
    await api.remove_node("alive")
    assert api.storage.nodes.live(0) == []


async def test_leases_claim_extend_conclude_and_expire(api: AsyncStorage) -> None:
    low, high, top = await api.insert([row("x", priority=3), row("x", priority=1), row("x", priority=0)])
    first = await api.lease_job("x", 2, "worker-a", 30.0, NOW)  # the producers' claim order
    assert first is not None and first.job.id == top.id and first.job.attempted_by == "worker-a"
    assert first.expires_at == NOW + 30 and first.token
    second = await api.lease_job("x", 2, "worker-b", 30.0, NOW)
    assert second is not None and second.job.id == high.id
    assert await api.lease_job("x", 2, "worker-c", 30.0, NOW) is None  # parallelism 2 reached
    assert api.storage.leases.leased_job_ids() == {top.id, high.id}
    assert await api.get_lease(top.id) == first
    assert await api.extend_lease(top.id, first.token, 60.0, NOW + 1) == NOW + 61
    assert await api.extend_lease(top.id, "wrong", 60.0, NOW + 1) is None
    done = Ack(Transition.COMPLETE, first.job, at=NOW + 2, result="1")
    assert await api.conclude_lease(done, "wrong") is False
    assert await api.conclude_lease(done, first.token) is True  # the ack and the release, together
    assert await api.get_lease(top.id) is None and api.storage.leases.leased_job_ids() == {high.id}
    finished = await api.get_job(top.id)
    assert finished is not None and finished.state == JobState.COMPLETED and finished.result == 1
    (back,) = await api.expire_leases(NOW + 31)
    assert back.id == high.id and back.state == JobState.AVAILABLE and "expired" in back.errors[-1]["error"]
    assert api.storage.leases.leased_job_ids() == set()
    api.storage.operator.set_paused("x", True, NOW)
    assert await api.lease_job("x", 2, "worker-a", 30.0, NOW + 32) is None
    api.storage.operator.set_paused("x", False, NOW)
    again = await api.lease_job("x", 2, "worker-a", 30.0, NOW + 32)
    assert again is not None and again.job.id == high.id and again.job.attempt == 2
    assert low.id not in api.storage.leases.leased_job_ids()


async def test_register_names_the_topics_and_the_listing_counts_running_jobs(api: AsyncStorage) -> None:
    await api.register_node("n1", NOW, ["b", "a"])
    await api.heartbeat("n1", NOW + 1)  # a heartbeat keeps the topics
    await api.heartbeat("n2", NOW)  # registered by its heartbeat alone: no topics known
    await api.insert([row(), row(), row("u")])
    await api.cycle((), claim(limit=1, node="n1"))
    await api.cycle((), claim("u", node="n1"))
    first, second = api.storage.nodes.listing(NOW - 10)
    assert (first.node, first.topics, first.running) == ("n1", ["a", "b"], {"t": 1, "u": 1})
    assert first.heartbeat_at == NOW + 1 and (second.node, second.topics, second.running) == ("n2", [], {})
    assert first.as_json()["running_total"] == 2 and first.as_json()["started_at"] == iso(NOW)
    assert [n.node for n in api.storage.nodes.listing(NOW + 0.5)] == ["n1"]


async def test_insert_on_a_callers_connection_commits_or_rolls_back_with_it(api: AsyncStorage) -> None:
    storage = api.storage
    with storage.db.engine.connect() as conn:
        with conn.begin() as outer:
            storage.jobs.insert_on(conn, [row(i=1)])
            outer.rollback()
        with conn.begin():
            kept = storage.jobs.insert_on(conn, [row(i=2), row("u", state="scheduled", at=NOW + 60)])
    assert storage.jobs.listing(newest_first=False) == kept and kept[0].args == {"i": 2}  # nothing of {"i": 1}


async def test_notices_ride_in_the_transaction_that_makes_the_change(api: AsyncStorage) -> None:
    """Where the database notifies, each change tells every node at commit, and a rolled
    back change tells nobody; elsewhere the same verbs send nothing and fail nothing."""
    storage = api.storage
    if not storage.notices.notifies:
        assert storage.notices.notification_listener(lambda kind, topic: None) is None
        storage.notices.announce(INSERTED, ["t"])  # a no-op
        return
    import psycopg

    url = storage.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listening:
        listening.execute(f"LISTEN {CHANNEL}")

        def heard(count: int) -> list[str]:
            got = []
            for notice in listening.notifies(timeout=10, stop_after=count):
                got.append(notice.payload)
            return got

        await api.insert([row(), row(), row("u"), row("later", state="scheduled", at=NOW + 60)])
        assert sorted(heard(2)) == ["insert:t", "insert:u"]  # once per topic with available jobs
        with storage.db.engine.connect() as conn, conn.begin() as rolled_back:
            storage.jobs.insert_on(conn, [row("gone")])
            rolled_back.rollback()
        (job,) = await api.insert([row("v")])
        assert heard(1) == ["insert:v"]  # nothing from the rolled-back insert
        storage.operator.set_paused("t", True, NOW)
        storage.operator.cancel(job.id, NOW)
        assert heard(2) == ["control:t", "control:v"]
        storage.operator.retry(NOW, ids=[job.id])
        assert heard(1) == ["insert:v"]
        await api.heartbeat("dead", NOW - 100)
        await api.cycle((), claim("u", node="dead"))
        await api.rescue_orphans(NOW, NOW - 10)
        assert heard(1) == ["insert:u"]


async def test_blocking_work_runs_in_the_storage_threads(api: AsyncStorage) -> None:
    jobs = await api.run_blocking(lambda: api.storage.jobs.insert([row()]))
    assert await api.read_blocking(lambda: api.storage.jobs.get(jobs[0].id)) == jobs[0]


def test_every_transition_names_a_documented_event_and_its_state() -> None:
    for transition in Transition:
        if transition.event is not None:
            assert events.signal_named(transition.event).name == transition.event
            assert OUTCOMES[transition] == transition.event.removeprefix("job_")
        assert isinstance(transition.state, JobState)
    assert Transition.RELEASE.event is None and Transition.RELEASE.state == JobState.AVAILABLE
    assert {t for t in Transition if t.uncounts} == {Transition.SNOOZE, Transition.RELEASE}


def test_ack_kind_is_its_transition() -> None:
    job = Job.of(1, "t", "w", {}, "executing", 0, 1, 5, [], None, NOW, NOW)
    assert Ack(Transition.RETRY, job).kind == "retry"
