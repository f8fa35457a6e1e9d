"""Lease tokens fence external workers, on SQLite and PostgreSQL.

Every claim hands out a new token; completing, failing or extending the job needs it.
A worker whose lease expired (and whose job was claimed again) or a client that never
claimed the job gets 409 and changes nothing. Storage verbs first, then the HTTP API of
a real runner.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from jobrunner import Runner
from jobrunner.config import DatabaseSettings, parse
from jobrunner.storage import Ack, Lease, Storage
from jobrunner.testing import EventRecorder, running
from jobrunner.transitions import Transition
from tests.daemon_harness import free_port
from tests.test_races import NOW, insert, race


@pytest.fixture
def store(any_db_url: str) -> Iterator[Storage]:
    """A migrated store on a fresh database of each engine."""
    made = Storage(DatabaseSettings(url=any_db_url))
    made.db.migrate()
    yield made
    made.close()


def lease(store: Storage, holder: str = "a", seconds: float = 60.0, now: float = NOW) -> Lease:
    """Lease the next job of topic ``x`` (parallelism 4)."""
    leased = store.leases.claim("x", 4, holder, seconds, now)
    assert leased is not None
    return leased


def completion(leased: Lease, result: str = "1") -> Ack:
    return Ack(Transition.COMPLETE, leased.job, at=NOW, result=result)


# ---------------------------------------------------------------- storage verbs


def test_every_claim_hands_out_a_new_token(store: Storage) -> None:
    insert(store, "x", 2)
    first, second = lease(store), lease(store, "b")
    assert first.token and second.token and first.token != second.token
    assert len(first.token) >= 20  # unguessable, not a counter
    found = store.leases.get(first.job.id)
    assert found is not None and found.token == first.token and found.holder == "a"


def test_a_wrong_token_concludes_and_extends_nothing(store: Storage) -> None:
    insert(store, "x", 1)
    leased = lease(store)
    for token in ("", "made-up", leased.token[:-1]):
        ack = completion(leased)
        assert store.leases.conclude(ack, token) is False
        assert store.leases.extend(leased.job.id, token, 600.0, NOW) is None
    still = store.leases.get(leased.job.id)
    assert still is not None and still.expires_at == leased.expires_at and still.token == leased.token
    job = store.jobs.get(leased.job.id)
    assert job is not None and job.state == "executing" and job.result is None


def test_concluding_writes_the_outcome_and_releases_the_lease_together(store: Storage) -> None:
    insert(store, "x", 1)
    leased = lease(store)
    assert store.leases.extend(leased.job.id, leased.token, 120.0, NOW + 1) == NOW + 121
    assert store.leases.conclude(completion(leased, '"done"'), leased.token) is True
    job = store.jobs.get(leased.job.id)
    assert job is not None and job.state == "completed" and job.result == "done"
    assert store.leases.leased_job_ids() == set() and store.leases.get(leased.job.id) is None
    assert store.leases.conclude(completion(leased), leased.token) is False  # once only


def test_after_expiry_and_a_new_claim_the_old_token_is_stale(store: Storage) -> None:
    insert(store, "x", 1)
    old = lease(store, "a", seconds=1.0)
    (back,) = store.leases.expire(NOW + 2)
    assert back.id == old.job.id and back.state == "available"
    new = lease(store, "b", now=NOW + 3)
    assert new.job.id == old.job.id and new.job.attempt == 2
    fail = Ack(Transition.RETRY, old.job, at=NOW + 3, errors="[]")
    assert store.leases.conclude(fail, old.token) is False
    assert store.leases.conclude(completion(old), old.token) is False
    assert store.leases.extend(old.job.id, old.token, 600.0, NOW + 3) is None
    held = store.leases.get(new.job.id)
    assert held is not None and held.holder == "b" and held.expires_at == new.expires_at
    assert store.leases.conclude(completion(new), new.token) is True


def test_one_token_concludes_once_under_concurrency(store: Storage) -> None:
    for _ in range(4):
        insert(store, "x", 1)
        leased = lease(store)
        acks = [completion(leased, str(i)) for i in range(6)]
        applied = race(*((lambda a=a, t=leased.token: store.leases.conclude(a, t)) for a in acks))
        assert sum(applied) == 1
        job = store.jobs.get(leased.job.id)
        assert job is not None and job.state == "completed" and store.leases.get(job.id) is None


def test_extend_racing_expiry_either_extends_or_puts_back(store: Storage) -> None:
    for _ in range(6):
        (job,) = insert(store, "x", 1)
        leased = lease(store, seconds=1.0)
        extended, put_back = race(
            functools.partial(store.leases.extend, job.id, leased.token, 60.0, NOW + 1),
            lambda: store.leases.expire(NOW + 1.5),
        )
        now = store.jobs.get(job.id)
        assert now is not None
        if extended is not None:  # the extension won: the lease lives on
            assert put_back == [] and now.state == "executing" and store.leases.get(job.id) is not None
            assert store.leases.conclude(completion(leased), leased.token)
        else:  # the expiry won: the job is back and the lease gone
            assert [j.id for j in put_back] == [job.id] and now.state == "available"
            assert store.leases.get(job.id) is None
            store.operator.cancel(job.id, NOW)


# ---------------------------------------------------------------- over HTTP


@pytest.fixture
def http_runner(any_db_url: str) -> Iterator[Runner]:
    """A migrated runner serving HTTP on a free port, with one external topic ``ext``."""
    settings = parse({
        "database": {"url": any_db_url},
        "topics": {"ext": {"external": True, "parallelism": 2, "poll_interval": 0.05,
                           "backoff": {"strategy": "constant", "base": 0.0, "max": 1.0, "jitter": 0.0}}},
        "http": {"enabled": True, "port": free_port()},
    }, source="test-config")
    made = Runner(settings)
    made.migrate()
    yield made
    made.store.close()


async def _serving(client: httpx.AsyncClient) -> None:
    with anyio.fail_after(10):
        while True:
            try:
                if (await client.get("/topics")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await anyio.sleep(0.02)


def _token(claimed: httpx.Response) -> dict[str, str]:
    assert claimed.status_code == 200, claimed.text
    return {"X-Jobrunner-Lease-Token": claimed.json()["lease_token"]}


@pytest.mark.anyio
async def test_stale_and_foreign_tokens_get_409_and_change_nothing(http_runner: Runner) -> None:
    url = f"http://127.0.0.1:{http_runner.settings.http.port}"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("complete", {"result": 1}), ("fail", {"error": "late"}), ("extend", {"seconds": 60})]
    with EventRecorder("ext") as recorder:
        async with running(http_runner), httpx.AsyncClient(base_url=url, timeout=10) as client:
            await _serving(client)
            job = (await client.post("/jobs", json={"worker": "convert", "topic": "ext"})).json()
            first = await client.post("/topics/ext/claim", params={"lease": 0.1},
                                      headers={"X-Jobrunner-Worker": "slow-worker"})
            stale = _token(first)
            await recorder.wait_for("job_rescued", lambda p: p["job"].id == job["id"])
            second = await client.post("/topics/ext/claim", params={"wait": 5},
                                       headers={"X-Jobrunner-Worker": "next-worker"})
            fresh = _token(second)
            assert second.json()["job"]["attempt"] == 2 and fresh != stale
            before = (await client.get(f"/jobs/{job['id']}")).json()

            for verb, body in calls:
                for headers in (stale, {"X-Jobrunner-Lease-Token": "never-claimed"}):
                    response = await client.post(f"/jobs/{job['id']}/{verb}", json=body, headers=headers)
                    assert response.status_code == 409, response.text
                    assert "nothing was changed" in response.json()["error"]
                response = await client.post(f"/jobs/{job['id']}/{verb}", json=body)
                assert response.status_code == 400 and "X-Jobrunner-Lease-Token" in response.json()["error"]
            assert (await client.get(f"/jobs/{job['id']}")).json() == before
            assert before["state"] == "executing" and before["attempted_by"] == "next-worker"

            extended = await client.post(f"/jobs/{job['id']}/extend", json={"seconds": 60}, headers=fresh)
            assert extended.status_code == 200
            done = await client.post(f"/jobs/{job['id']}/complete", json={"result": "ok"}, headers=fresh)
            assert done.status_code == 200 and done.json()["state"] == "completed" and done.json()["result"] == "ok"
            assert http_runner.store.leases.leased_job_ids() == set()
            again = await client.post(f"/jobs/{job['id']}/complete", json={"result": "twice"}, headers=fresh)
            assert again.status_code == 409
    assert [e.payload["job"].id for e in recorder.of("job_completed")] == [job["id"]]
