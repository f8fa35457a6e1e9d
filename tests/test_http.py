"""The HTTP API contract, over real HTTP against real daemon subprocesses.

Every daemon here is ``python -m jobrunner --config CFG run`` with ``[http] enabled``
on a free port and a fresh SQLite file. Tests that do not interfere share a
module-scoped daemon; the external-worker protocol and the event stream run on both
anyio backends (Hypercorn on asyncio and on trio); auth and bind refusal get their own.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_harness import (
    PYTHON,
    REPO,
    DaemonProcess,
    child_env,
    free_port,
    holds_for,
    requests_taken_in,
    run_cli,
    start_on_free_port,
    wait_until,
)

W = "tests.http_workers"

CONSTANT_0 = '{ strategy = "constant", base = 0.0, max = 1.0, jitter = 0.0 }'


# ---------------------------------------------------------------- daemon harness


def topic(name: str, **keys: Any) -> str:
    """One ``[topics.NAME]`` table."""
    lines = [f"[topics.{name}]"]
    for key, value in keys.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def config_text(db: Path, port: int, topics: str, http: str = "", grace: float = 1) -> str:
    return (
        f'[database]\nurl = "sqlite:///{db}"\n\n'
        f'[runner]\nmodules = ["{W}"]\nshutdown_grace = {grace}\n\n'
        f"[http]\nenabled = true\nport = {port}\n{http}\n\n"
        f"{topics}"
    )


def topic_names(topics: str) -> set[str]:
    """The names of the ``[topics.NAME]`` tables in ``topics``."""
    return {line[len("[topics."):-1] for line in topics.splitlines() if line.startswith("[topics.")}


class Daemon:
    """One daemon subprocess (see ``tests/daemon_harness.py``) with its config and HTTP clients."""

    def __init__(self, directory: Path, topics: str, *, http: str = "", backend: str = "asyncio",
                 token: str | None = None, env: dict[str, str] | None = None, grace: float = 1) -> None:
        self.directory = directory
        self.grace = grace
        self.topics = topics
        self.http_extra = http
        self.backend = backend
        self.env = child_env(**(env or {}))
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.db = directory / "jobs.db"
        self.cfg = directory / "config.toml"
        self.log = directory / "daemon.log"
        self.process: DaemonProcess | None = None
        self.port = 0
        self.url = ""
        self.http = httpx.Client(timeout=20)
        # One connection per request, for answers given before the body is read (after which
        # the server drops the connection: see test_early_answers_do_not_break_keep_alive).
        self.fresh = httpx.Client(timeout=20, limits=httpx.Limits(max_keepalive_connections=0))

    def _process(self, port: int) -> DaemonProcess:
        # The port goes into the config too: `jobrunner events` reads it from there.
        self.cfg.write_text(config_text(self.db, port, self.topics, self.http_extra, self.grace))
        self.process = DaemonProcess(self.cfg, log_path=self.log, env=self.env, http_port=port,
                                     run_options=["--backend", self.backend], topics=topic_names(self.topics),
                                     headers=self.headers)
        return self.process

    def start(self) -> Daemon:
        process = start_on_free_port(self._process)
        self.port = process.port or 0
        self.url = process.url
        self.http.base_url = httpx.URL(self.url)
        self.http.headers.update(self.headers)
        return self

    @property
    def proc(self) -> DaemonProcess:
        """The running daemon process."""
        assert self.process is not None, "not started"
        return self.process

    def stop(self) -> int | None:
        return self.process.stop(timeout=20) if self.process is not None else None

    def close(self) -> None:
        self.stop()
        self.http.close()
        self.fresh.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = run_cli(self.cfg, *args, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} exited {proc.returncode}: {proc.stderr}")
        return proc

    def alive(self) -> None:
        self.proc.assert_alive()

    # -- API shortcuts

    def enqueue(self, body: Any) -> Any:
        response = self.http.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait_job(self, job_id: int, until: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        """Poll GET /jobs/{id} until ``until(job)`` holds (deadline ``timeout``)."""
        seen: list[dict[str, Any]] = []

        def satisfied() -> dict[str, Any] | None:
            seen[:] = [self.job(job_id)]
            return seen[0] if until(seen[0]) else None

        return wait_until(f"job {job_id} to satisfy the condition", satisfied, timeout=timeout,
                          alive=[self.proc], describe=lambda: f"last seen {seen}")

    def once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request on a connection of its own."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.fresh.request(method, f"{self.url}{path}", headers=headers, **kwargs)

    def claim(self, topic_name: str, **params: Any) -> httpx.Response:
        return self.http.post(f"/topics/{topic_name}/claim", params={"wait": 0, **params})


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """``response`` is a JSON error ``{"error": message}`` with ``status``; returns the message."""
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    message = response.json()["error"]
    assert isinstance(message, str) and message
    for fragment in fragments:
        assert fragment in message, message
    return message


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0), text
    return value


def state_is(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda job: job["state"] in states


def lease_of(claimed: httpx.Response) -> dict[str, str]:
    """The header that proves the lease a claim answered with (for complete, fail, extend)."""
    return {"X-Jobrunner-Lease-Token": claimed.json()["lease_token"]}


# ---------------------------------------------------------------- daemons

API_TOPICS = "\n".join([
    topic("py", parallelism=4, poll_interval=0.1, backoff=CONSTANT_0),
    topic("other", parallelism=2, poll_interval=0.1),
    topic("pz", parallelism=1, poll_interval=0.1),
    topic("page", external=True),
    topic("extq", external=True, priority=3),
    topic("atomic", external=True),
    topic("disc", external=True, parallelism=1, poll_interval=0.1, backoff=CONSTANT_0),
    topic("xpause", external=True, parallelism=2, poll_interval=0.1),
    topic("scl", parallelism=2, poll_interval=0.1),
])

MAX_BODY = 8192


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The shared asyncio daemon for the producer endpoints."""
    daemon = Daemon(tmp_path_factory.mktemp("api"), API_TOPICS, http=f"max_body = {MAX_BODY}")
    try:
        yield daemon.start()
    finally:
        daemon.close()


EXT_TOPICS = "\n".join([
    topic("py", parallelism=4, poll_interval=0.1, backoff=CONSTANT_0),
    topic("other", parallelism=2, poll_interval=0.1),
    *(topic(name, external=True, parallelism=2, poll_interval=0.1, backoff=CONSTANT_0)
      for name in ("claim", "poll", "slow", "par", "fail", "extend", "nolease", "lease")),
])


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def both(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon per anyio backend, for the external-worker protocol and the event stream."""
    daemon = Daemon(tmp_path_factory.mktemp(f"ext-{request.param}"), EXT_TOPICS, backend=request.param)
    try:
        yield daemon.start()
    finally:
        daemon.close()


# ---------------------------------------------------------------- 1. POST /jobs

SHOW_FIELDS = {"id", "topic", "worker", "args", "state", "priority", "attempt", "max_attempts", "errors",
               "result", "inserted_at", "scheduled_at", "attempted_at", "completed_at", "discarded_at",
               "cancelled_at"}


def test_enqueue_one_python_job_returns_the_job_like_show_json(api: Daemon) -> None:
    response = api.http.post("/jobs", json={"worker": f"{W}.Echo", "args": {"a": [1, "x"]},
                                            "priority": 0, "max_attempts": 3})
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    job = response.json()
    assert SHOW_FIELDS <= set(job)
    assert job["topic"] == "py" and job["worker"] == f"{W}.Echo"
    assert job["args"] == {"a": [1, "x"]} and job["priority"] == 0 and job["max_attempts"] == 3
    assert job["attempt"] == 0 and job["errors"] == [] and job["result"] is None
    assert job["state"] in ("available", "executing", "completed")
    inserted = parse_time(job["inserted_at"])
    assert abs((datetime.now(UTC) - inserted).total_seconds()) < 60

    done = api.wait_job(job["id"], state_is("completed"))
    assert done["result"] == {"a": [1, "x"]} and done["attempt"] == 1
    shown = json.loads(api.cli("show", str(job["id"]), "--json").stdout)
    assert set(done) == set(shown)
    assert done == shown


def test_enqueue_options_delay_and_scheduled_at(api: Daemon) -> None:
    delayed = api.enqueue({"worker": f"{W}.Echo", "delay": 3600})
    assert delayed["state"] == "scheduled"
    gap = parse_time(delayed["scheduled_at"]) - parse_time(delayed["inserted_at"])
    assert abs(gap.total_seconds() - 3600) < 1

    at = api.enqueue({"worker": f"{W}.Echo", "scheduled_at": "2099-01-02T03:04:05+00:00"})
    assert at["state"] == "scheduled"
    assert parse_time(at["scheduled_at"]) == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    naive = api.enqueue({"worker": f"{W}.Echo", "scheduled_at": "2099-01-02T03:04:05"})
    assert parse_time(naive["scheduled_at"]) == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    offset = api.enqueue({"worker": f"{W}.Echo", "scheduled_at": "2099-01-02T05:04:05+02:00"})
    assert parse_time(offset["scheduled_at"]) == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    for job in (delayed, at, naive, offset):
        assert api.http.post(f"/jobs/{job['id']}/cancel").status_code == 200


def test_enqueue_external_topic_job_takes_any_worker_string(api: Daemon) -> None:
    job = api.enqueue({"worker": "billing:charge v2 ✓", "topic": "extq", "args": [1, None, "ü"]})
    assert job["topic"] == "extq" and job["worker"] == "billing:charge v2 ✓"
    assert job["args"] == [1, None, "ü"] and job["state"] == "available"
    assert job["priority"] == 3 and job["max_attempts"] == 50  # the topic's priority, the default attempts
    assert api.job(job["id"]) == job
    # A Python worker may name its own topic explicitly.
    same = api.enqueue({"worker": f"{W}.Echo", "topic": "py", "args": {"n": 1}})
    assert same["topic"] == "py"


def test_enqueue_a_list_stores_all_in_order(api: Daemon) -> None:
    items = [{"worker": f"w{i}", "topic": "page", "args": {"i": i}, "priority": i % 3} for i in range(5)]
    items.insert(2, {"worker": f"{W}.Echo", "args": {"i": "python"}})
    response = api.http.post("/jobs", json=items)
    assert response.status_code == 201, response.text
    jobs = response.json()
    assert isinstance(jobs, list) and len(jobs) == len(items)
    assert [j["args"] for j in jobs] == [i["args"] for i in items]
    assert [j["worker"] for j in jobs] == [i["worker"] for i in items]
    ids = [j["id"] for j in jobs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for job in jobs:
        if job["topic"] == "page":
            assert api.job(job["id"]) == job
            assert api.http.post(f"/jobs/{job['id']}/cancel").status_code == 200


def atomic_ids(daemon: Daemon) -> list[int]:
    response = daemon.http.get("/jobs", params={"topic": "atomic", "limit": 1000})
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


@pytest.mark.parametrize("bad", [
    {"worker": f"{W}.Missing"},
    {"worker": 42},
    {"topic": "atomic"},
    {"worker": "x", "topic": "atomic", "priority": 12},
    {"worker": "x", "topic": "atomic", "colour": "red"},
    {"worker": "x", "topic": "no-such-topic"},
])
def test_a_list_with_one_invalid_item_stores_nothing(api: Daemon, bad: dict[str, Any]) -> None:
    before = atomic_ids(api)
    good = {"worker": "x", "topic": "atomic", "args": {"n": 1}}
    response = api.http.post("/jobs", json=[good, good, bad, good])
    assert_error(response, 400)
    assert atomic_ids(api) == before


def enqueue_error_cases() -> list[Any]:
    e = f"{W}.Echo"
    cases = [
        ("unknown worker class", {"worker": f"{W}.Missing"}, "Missing"),
        ("unknown worker module", {"worker": "no_such_module_xyz.Worker"}, "no_such_module_xyz"),
        ("not an import path", {"worker": "Echo"}, "Echo"),
        ("not a Worker class", {"worker": "json.JSONDecoder"}, "JSONDecoder"),
        ("unknown topic", {"worker": "anything", "topic": "no-such-topic"}, "no-such-topic"),
        ("worker of another topic", {"worker": e, "topic": "other"}, "other"),
        ("worker missing", {"args": {}}, "worker"),
        ("worker empty", {"worker": ""}, "worker"),
        ("worker not a string", {"worker": ["a"]}, "worker"),
        ("topic not a string", {"worker": e, "topic": 3}, "topic"),
        ("priority an unknown name", {"worker": e, "priority": "urgent"}, "priority"),
        ("priority a digit string", {"worker": e, "priority": "3"}, "priority"),
        ("priority too big", {"worker": e, "priority": 10}, "priority"),
        ("priority negative", {"worker": e, "priority": -1}, "priority"),
        ("priority a float", {"worker": e, "priority": 1.5}, "priority"),
        ("priority a boolean", {"worker": e, "priority": True}, "priority"),
        ("delay a string", {"worker": e, "delay": "soon"}, "delay"),
        ("delay negative", {"worker": e, "delay": -1}, "delay"),
        ("max_attempts zero", {"worker": e, "max_attempts": 0}, "max_attempts"),
        ("max_attempts a string", {"worker": e, "max_attempts": "3"}, "max_attempts"),
        ("max_attempts a float", {"worker": e, "max_attempts": 2.5}, "max_attempts"),
        ("scheduled_at not a date", {"worker": e, "scheduled_at": "tomorrow"}, "scheduled_at"),
        ("scheduled_at a number", {"worker": e, "scheduled_at": 1234}, "scheduled_at"),
        ("delay and scheduled_at", {"worker": e, "delay": 1, "scheduled_at": "2099-01-01T00:00:00Z"}, "delay"),
        ("unknown field", {"worker": e, "colour": "red"}, "colour"),
        ("body a string", "just a string", ""),
        ("body a number", 42, ""),
        ("body null", None, "worker"),
        ("list of non-objects", [1, 2], ""),
        ("empty list", [], "empty"),
    ]
    return [pytest.param(body, fragment, id=name) for name, body, fragment in cases]


@pytest.mark.parametrize(("body", "fragment"), enqueue_error_cases())
def test_enqueue_errors_are_400_with_a_json_message(api: Daemon, body: Any, fragment: str) -> None:
    response = api.http.post("/jobs", content=json.dumps(body), headers={"content-type": "application/json"})
    assert_error(response, 400, fragment)


def test_arguments_of_a_typed_worker_are_checked_and_a_mismatch_stores_nothing(api: Daemon) -> None:
    def py_ids() -> list[int]:
        return [job["id"] for job in api.http.get("/jobs", params={"topic": "py", "limit": 1000}).json()["jobs"]]

    before = py_ids()
    message = assert_error(api.http.post("/jobs", json={"worker": f"{W}.Typed", "args": {"m": 1}}), 400)
    assert message == f"arguments of {W}.Typed: Object missing required field `n`"
    good = {"worker": f"{W}.Typed", "args": {"n": 4}}
    batch = [good, {"worker": f"{W}.Echo", "args": {"any": 1}}, {"worker": f"{W}.Typed", "args": {"n": "4"}}]
    assert_error(api.http.post("/jobs", json=batch), 400, f"arguments of {W}.Typed: Expected `int`, got `str`")
    assert py_ids() == before
    job = api.enqueue(good)
    assert api.wait_job(job["id"], state_is("completed"))["result"] == 4


@pytest.mark.parametrize(("raw", "fragment"), [
    pytest.param(b'{"worker": ', "JSON", id="truncated"),
    pytest.param(b"{'worker': 'x'}", "JSON", id="single-quotes"),
    pytest.param(b"\xff\xfe{\x00", "JSON", id="not-utf8"),
    pytest.param(b"", "worker", id="empty-body"),
    pytest.param(b'{"worker": "x", "topic": "atomic", "args": NaN}', "JSON", id="nan-args"),
])
def test_malformed_bodies_are_400(api: Daemon, raw: bytes, fragment: str) -> None:
    before = atomic_ids(api)
    response = api.http.post("/jobs", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, fragment)
    assert atomic_ids(api) == before


def test_oversized_bodies_are_413_and_store_nothing(api: Daemon) -> None:
    before = atomic_ids(api)
    big = {"worker": "x", "topic": "atomic", "args": {"blob": "x" * (MAX_BODY + 10)}}
    assert_error(api.once("POST", "/jobs", json=big), 413, str(MAX_BODY))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1000):
            yield data[i:i + 1000]

    response = api.once("POST", "/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413)
    # The same limit guards the external-worker bodies.
    assert_error(api.once("POST", "/jobs/1/complete", json={"result": "y" * (MAX_BODY + 10)}), 413)
    # Just under the limit is fine.
    small = {"worker": "x", "topic": "atomic", "args": {"blob": "x" * (MAX_BODY - 200)}}
    assert len(json.dumps(small)) <= MAX_BODY
    stored = api.enqueue(small)
    assert api.http.post(f"/jobs/{stored['id']}/cancel").status_code == 200
    assert atomic_ids(api) == [stored["id"], *before]


# ---------------------------------------------------------------- 2. GET /jobs/{id}, GET /jobs


def test_get_job_by_id_and_404s(api: Daemon) -> None:
    job = api.enqueue({"worker": "x", "topic": "extq"})
    response = api.http.get(f"/jobs/{job['id']}")
    assert response.status_code == 200 and response.json() == job
    for missing in ("999999", "abc", "0", "-1", "1.5", str(2**63), str(2**70)):
        assert_error(api.http.get(f"/jobs/{missing}"), 404)


def test_list_jobs_paginates_through_every_job_exactly_once(api: Daemon) -> None:
    made = api.enqueue([{"worker": f"p{i}", "topic": "page", "args": {"i": i}} for i in range(23)])
    before = {j["id"] for j in made}
    seen: list[int] = []
    pages = 0
    params: dict[str, Any] = {"topic": "page", "state": "available", "limit": 5}
    while True:
        response = api.http.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"jobs", "next"}
        pages += 1
        assert len(body["jobs"]) <= 5
        seen.extend(j["id"] for j in body["jobs"])
        assert all(j["topic"] == "page" and j["state"] == "available" for j in body["jobs"])
        if body["next"] is None:
            break
        assert isinstance(body["next"], int)
        params["after"] = body["next"]
        assert pages < 20
    assert seen == sorted(before, reverse=True)  # newest first, each exactly once
    assert pages == 5
    whole = api.http.get("/jobs", params={"topic": "page", "state": "available", "limit": 23}).json()
    assert [j["id"] for j in whole["jobs"]] == seen and whole["next"] is None

    cancelled = sorted(before)[3:6]
    for job_id in cancelled:
        assert api.http.post(f"/jobs/{job_id}/cancel").status_code == 200
    by_state = api.http.get("/jobs", params={"topic": "page", "state": "cancelled", "limit": 1000}).json()
    assert set(cancelled) <= {j["id"] for j in by_state["jobs"]}
    assert all(j["state"] == "cancelled" and j["topic"] == "page" for j in by_state["jobs"])
    available = api.http.get("/jobs", params={"topic": "page", "state": "available", "limit": 1000}).json()
    assert {j["id"] for j in available["jobs"]} == before - set(cancelled)
    everything = api.http.get("/jobs", params={"limit": 1000}).json()
    assert before <= {j["id"] for j in everything["jobs"]}
    assert api.http.get("/jobs", params={"topic": "no-such-topic"}).json() == {"jobs": [], "next": None}
    # Default limit is 100 and the page is newest first.
    default = api.http.get("/jobs").json()["jobs"]
    assert 0 < len(default) <= 100 and [j["id"] for j in default] == sorted((j["id"] for j in default), reverse=True)


@pytest.mark.parametrize("params", [
    {"state": "sleeping"}, {"state": "AVAILABLE"}, {"state": ""}, {"limit": 0}, {"limit": 1001}, {"limit": "ten"},
    {"limit": -5}, {"after": 0}, {"after": "x"}, {"after": 2**64},
])
def test_list_jobs_rejects_bad_filters(api: Daemon, params: dict[str, Any]) -> None:
    assert_error(api.http.get("/jobs", params=params), 400, next(iter(params)))


# ---------------------------------------------------------------- 3. cancel and retry


def test_cancel_then_409_then_retry(api: Daemon) -> None:
    job = api.enqueue({"worker": "x", "topic": "extq"})
    response = api.http.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["state"] == "cancelled" and cancelled["cancelled_at"] is not None
    assert api.job(job["id"]) == cancelled

    response = api.http.post(f"/jobs/{job['id']}/retry")
    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["state"] == "available" and retried["cancelled_at"] is None
    assert_error(api.http.post(f"/jobs/{job['id']}/retry"), 409, "available")
    for verb in ("cancel", "retry"):
        assert_error(api.http.post(f"/jobs/987654/{verb}"), 404)
        assert_error(api.http.post(f"/jobs/nope/{verb}"), 404)
    assert api.http.post(f"/jobs/{job['id']}/cancel").status_code == 200


def test_cancelling_a_cancelled_job_is_409(api: Daemon) -> None:
    job = api.enqueue({"worker": "x", "topic": "extq"})
    first = api.http.post(f"/jobs/{job['id']}/cancel")
    assert first.status_code == 200 and first.json()["state"] == "cancelled"
    again = api.http.post(f"/jobs/{job['id']}/cancel")
    assert_error(again, 409, "cancelled")


def test_cancel_and_retry_of_finished_python_jobs(api: Daemon) -> None:
    done = api.enqueue({"worker": f"{W}.Echo", "args": {"ok": True}})
    api.wait_job(done["id"], state_is("completed"))
    assert_error(api.http.post(f"/jobs/{done['id']}/cancel"), 409, "completed")
    assert_error(api.http.post(f"/jobs/{done['id']}/retry"), 409, "completed")

    doomed = api.enqueue({"worker": f"{W}.Doomed"})
    failed = api.wait_job(doomed["id"], state_is("discarded"))
    assert failed["attempt"] == 1 and "doomed" in failed["errors"][0]["error"]
    response = api.http.post(f"/jobs/{doomed['id']}/retry")
    assert response.status_code == 200, response.text
    assert response.json()["state"] in ("available", "executing", "discarded")
    again = api.wait_job(doomed["id"], lambda j: j["state"] == "discarded" and j["attempt"] == 2)
    assert len(again["errors"]) == 2

    running = api.enqueue({"worker": f"{W}.Sleep", "args": {"seconds": 60}})
    api.wait_job(running["id"], state_is("executing"))
    response = api.http.post(f"/jobs/{running['id']}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert api.wait_job(running["id"], state_is("cancelled"))["result"] is None


def test_retry_of_a_discarded_external_job(api: Daemon) -> None:
    job = api.enqueue({"worker": "x", "topic": "disc", "max_attempts": 1})
    claimed = api.claim("disc")
    assert claimed.status_code == 200 and claimed.json()["job"]["id"] == job["id"]
    failed = api.http.post(f"/jobs/{job['id']}/fail", json={"error": "nope"}, headers=lease_of(claimed))
    assert failed.status_code == 200 and failed.json()["state"] == "discarded"
    response = api.http.post(f"/jobs/{job['id']}/retry")
    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["state"] == "available" and retried["max_attempts"] == 2 and retried["discarded_at"] is None
    assert_error(api.http.post(f"/jobs/{job['id']}/retry"), 409)
    claimed = api.claim("disc")
    assert claimed.status_code == 200 and claimed.json()["job"]["attempt"] == 2
    assert api.http.post(f"/jobs/{job['id']}/complete", json={}, headers=lease_of(claimed)).status_code == 200


# ---------------------------------------------------------------- 4. GET /topics


def test_topics_equals_stats_json(api: Daemon) -> None:
    deadline = time.monotonic() + 15
    while True:  # jobs may still be finishing: compare a quiet moment (HTTP, CLI, HTTP agree)
        first = api.http.get("/topics")
        assert first.status_code == 200
        cli = json.loads(api.cli("stats", "--json").stdout)
        second = api.http.get("/topics").json()
        if first.json() == second == cli:
            break
        assert time.monotonic() < deadline, (first.json(), cli, second)
    assert set(cli["topics"]) >= {"py", "other", "pz", "page", "extq", "atomic", "disc", "xpause"}
    for counts in cli["topics"].values():
        assert set(counts) == {"scheduled", "blocked", "available", "executing", "retryable", "completed",
                               "discarded", "cancelled"}


# ---------------------------------------------------------------- 5. pause and resume


def test_pause_keeps_jobs_available_and_resume_runs_them(api: Daemon) -> None:
    response = api.http.post("/topics/pz/pause")
    assert response.status_code == 200 and response.json() == {"topic": "pz", "paused": True}
    try:
        job = api.enqueue({"worker": f"{W}.Pausable"})
        def still_available() -> None:
            assert api.job(job["id"])["state"] == "available", "a paused topic ran a job"

        # Nothing may start while paused: watch for 10 poll intervals.
        holds_for("the paused topic's job stays available", still_available, 1.0, alive=[api.proc])
    finally:
        response = api.http.post("/topics/pz/resume")
    assert response.status_code == 200 and response.json() == {"topic": "pz", "paused": False}
    done = api.wait_job(job["id"], state_is("completed"))
    assert done["result"] == "ran"
    for verb in ("pause", "resume"):
        assert_error(api.http.post(f"/topics/no-such-topic/{verb}"), 404, "no-such-topic")


def test_scale_sets_and_resets_the_parallelism_on_every_node(api: Daemon) -> None:
    response = api.http.post("/topics/scl/scale", json={"parallelism": 5})
    assert response.status_code == 200
    assert response.json() == {"topic": "scl", "parallelism": 5, "configured": 2, "scaled": True}
    assert api.cli("stats", "--json").returncode == 0
    response = api.http.post("/topics/scl/scale", json={"parallelism": None})
    assert response.json() == {"topic": "scl", "parallelism": 2, "configured": 2, "scaled": False}


@pytest.mark.parametrize(("body", "fragment"), [
    ({"parallelism": 0}, "a parallelism is a whole number from 1 to 10000"),
    ({"parallelism": "4"}, "a parallelism is a whole number from 1 to 10000"),
    ({"parallelism": 2.5}, "a parallelism is a whole number from 1 to 10000"),
    ({}, "field 'parallelism' is required"),
    ({"parallelism": 2, "other": 1}, "unknown field 'other'"),
    ([2], "must be a JSON object"),
])
def test_scale_refuses_bad_bodies(api: Daemon, body: Any, fragment: str) -> None:
    assert_error(api.http.post("/topics/scl/scale", json=body), 400, fragment)


def test_scale_of_an_unknown_topic_is_404(api: Daemon) -> None:
    assert_error(api.http.post("/topics/nope/scale", json={"parallelism": 2}), 404, "no topic named 'nope'")


def test_claims_on_a_paused_external_topic_get_nothing(api: Daemon) -> None:
    job = api.enqueue({"worker": "x", "topic": "xpause"})
    assert api.http.post("/topics/xpause/pause").status_code == 200
    try:
        response = api.claim("xpause")
        if response.status_code == 200:  # leave nothing leased behind
            api.http.post(f"/jobs/{job['id']}/complete", json={}, headers=lease_of(response))
        assert response.status_code == 204
    finally:
        assert api.http.post("/topics/xpause/resume").status_code == 200


# ---------------------------------------------------------------- 6. external workers (both backends)


def test_claim_returns_the_job_with_a_lease_then_complete(both: Daemon) -> None:
    assert both.claim("claim").status_code == 204
    job = both.enqueue({"worker": "resize", "topic": "claim", "args": {"w": 10}})
    before = datetime.now(UTC)
    response = both.http.post("/topics/claim/claim", params={"wait": 0}, headers={"X-Jobrunner-Worker": "node-7"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"job", "lease_expires_at", "lease_token"}
    leased = body["job"]
    assert leased["id"] == job["id"] and leased["state"] == "executing" and leased["attempt"] == 1
    assert leased["args"] == {"w": 10} and leased["attempted_by"] == "node-7"
    expires = parse_time(body["lease_expires_at"])
    assert timedelta(seconds=50) < expires - before < timedelta(seconds=70)  # default [http] lease = 60
    empty = both.claim("claim")
    assert empty.status_code == 204 and empty.content == b""

    token = {"X-Jobrunner-Lease-Token": body["lease_token"]}
    response = both.http.post(f"/jobs/{job['id']}/complete", json={"result": {"size": [10, 20]}}, headers=token)
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["state"] == "completed" and done["result"] == {"size": [10, 20]} and done["completed_at"]
    assert both.job(job["id"]) == done
    assert_error(both.http.post(f"/jobs/{job['id']}/complete", json={"result": 1}, headers=token), 409)


def test_claim_respects_priority(both: Daemon) -> None:
    low = both.enqueue({"worker": "w", "topic": "claim", "priority": 5})
    high = both.enqueue({"worker": "w", "topic": "claim", "priority": 0})
    first, second = both.claim("claim"), both.claim("claim")
    assert [first.json()["job"]["id"], second.json()["job"]["id"]] == [high["id"], low["id"]]
    for claimed in (first, second):
        job_id = claimed.json()["job"]["id"]
        assert both.http.post(f"/jobs/{job_id}/complete", headers=lease_of(claimed)).status_code == 200


def send_claim(daemon: Daemon, topic_name: str, wait: float) -> socket.socket:
    """POST a long-poll claim on a connection of its own; return once the daemon has read it."""
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
    headers = "".join(f"{key}: {value}\r\n" for key, value in daemon.headers.items())
    sock.sendall(f"POST /topics/{topic_name}/claim?wait={wait} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                 f"{headers}\r\n".encode())
    client_port = sock.getsockname()[1]
    wait_until("the daemon to read the claim", lambda: requests_taken_in(daemon.port, [client_port]),
               timeout=10, alive=[daemon.proc])
    return sock


def answer_of(sock: socket.socket) -> tuple[int, Any]:
    """The status and JSON body (None when empty) of the response on ``sock``."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return response.status, json.loads(body) if body else None


def test_long_poll_returns_as_soon_as_a_job_arrives(both: Daemon) -> None:
    started = time.monotonic()
    with send_claim(both, "slow", wait=10) as sock:
        job = both.enqueue({"worker": "w", "topic": "slow"})
        enqueued = time.monotonic()
        status, body = answer_of(sock)
        returned = time.monotonic()
    assert status == 200, body
    assert body["job"]["id"] == job["id"]
    assert returned - enqueued < 3.0, (started, enqueued, returned)  # woken by the insert, not by the 10 s deadline
    assert returned - started < 8.0, (started, enqueued, returned)
    token = {"X-Jobrunner-Lease-Token": body["lease_token"]}
    assert both.http.post(f"/jobs/{job['id']}/complete", headers=token).status_code == 200


def test_claim_with_nothing_waits_then_204(both: Daemon) -> None:
    started = time.monotonic()
    response = both.http.post("/topics/poll/claim", params={"wait": 0.5})
    elapsed = time.monotonic() - started
    assert response.status_code == 204 and response.content == b""
    assert 0.45 <= elapsed < 3.0, elapsed
    started = time.monotonic()
    assert both.claim("poll").status_code == 204
    assert time.monotonic() - started < 3.0


def test_parallelism_bounds_outstanding_claims(both: Daemon) -> None:
    jobs = both.enqueue([{"worker": "w", "topic": "par", "args": {"i": i}} for i in range(3)])
    first, second = both.claim("par"), both.claim("par")
    assert first.status_code == second.status_code == 200
    held = [first.json()["job"]["id"], second.json()["job"]["id"]]
    assert held == [jobs[0]["id"], jobs[1]["id"]]  # FIFO within a priority
    blocked = both.claim("par")
    assert blocked.status_code == 204  # 2 executing = parallelism, though a job is available
    assert [j["id"] for j in both.http.get("/jobs", params={"topic": "par", "state": "available"}).json()["jobs"]] \
        == [jobs[2]["id"]]
    assert both.http.post(f"/jobs/{held[0]}/complete", json={"result": 0}, headers=lease_of(first)).status_code == 200
    third = both.claim("par")
    assert third.status_code == 200 and third.json()["job"]["id"] == jobs[2]["id"]
    for job_id, claimed in ((held[1], second), (jobs[2]["id"], third)):
        response = both.http.post(f"/jobs/{job_id}/complete", json={"result": None}, headers=lease_of(claimed))
        assert response.status_code == 200


def test_fail_retries_with_backoff_then_discards(both: Daemon) -> None:
    job = both.enqueue({"worker": "w", "topic": "fail", "max_attempts": 2})
    claimed = both.claim("fail")
    assert claimed.json()["job"]["id"] == job["id"]
    response = both.http.post(f"/jobs/{job['id']}/fail", json={"error": "disk full"}, headers=lease_of(claimed))
    assert response.status_code == 200, response.text
    failed = response.json()
    assert failed["state"] in ("retryable", "available") and failed["attempt"] == 1
    assert failed["errors"][-1]["error"].endswith("disk full") and failed["errors"][-1]["attempt"] == 1

    again = both.http.post("/topics/fail/claim", params={"wait": 5})  # backoff base 0: due at once
    assert again.status_code == 200, again.text
    assert again.json()["job"]["id"] == job["id"] and again.json()["job"]["attempt"] == 2
    response = both.http.post(f"/jobs/{job['id']}/fail", json={"error": "still full"}, headers=lease_of(again))
    assert response.status_code == 200
    discarded = response.json()
    assert discarded["state"] == "discarded" and discarded["discarded_at"] is not None
    assert [e["attempt"] for e in discarded["errors"]] == [1, 2]
    assert both.claim("fail").status_code == 204


@pytest.mark.parametrize("body", [{}, {"error": ""}, {"error": 5}, {"error": "x", "why": 1}, [1]])
def test_fail_needs_an_error_message(both: Daemon, body: Any) -> None:
    job = both.enqueue({"worker": "w", "topic": "nolease"})
    assert_error(both.http.post(f"/jobs/{job['id']}/fail", json=body), 400)
    assert both.http.post(f"/jobs/{job['id']}/cancel").status_code == 200


def test_extend_pushes_the_lease(both: Daemon) -> None:
    job = both.enqueue({"worker": "w", "topic": "extend"})
    response = both.claim("extend", lease=30)
    assert response.status_code == 200
    first = parse_time(response.json()["lease_expires_at"])
    token = lease_of(response)
    response = both.http.post(f"/jobs/{job['id']}/extend", json={"seconds": 120}, headers=token)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == job["id"]
    later = parse_time(response.json()["lease_expires_at"])
    assert later - first > timedelta(seconds=80)
    for bad in ({}, {"seconds": 0}, {"seconds": -1}, {"seconds": "60"}, {"seconds": 10**6}, {"minutes": 1}):
        assert_error(both.http.post(f"/jobs/{job['id']}/extend", json=bad, headers=token), 400)
    assert both.http.post(f"/jobs/{job['id']}/complete", json={"result": "ok"}, headers=token).status_code == 200
    assert_error(both.http.post(f"/jobs/{job['id']}/extend", json={"seconds": 10}, headers=token), 409)


def test_conclusions_need_a_live_lease(both: Daemon) -> None:
    job = both.enqueue({"worker": "w", "topic": "nolease"})
    calls = [("complete", {"result": 1}), ("fail", {"error": "x"}), ("extend", {"seconds": 5})]
    made_up = {"X-Jobrunner-Lease-Token": "made-up"}
    for verb, body in calls:  # never claimed
        assert_error(both.http.post(f"/jobs/{job['id']}/{verb}", json=body, headers=made_up), 409, "lease")
        assert_error(both.http.post(f"/jobs/987654/{verb}", json=body, headers=made_up), 404)
        assert_error(both.once("POST", f"/jobs/xyz/{verb}", json=body, headers=made_up), 404)
    assert both.job(job["id"])["state"] == "available"
    # A leased job that an operator cancelled no longer holds its lease.
    claimed = both.claim("nolease")
    assert claimed.json()["job"]["id"] == job["id"]
    assert both.http.post(f"/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    for verb, body in calls:
        assert_error(both.http.post(f"/jobs/{job['id']}/{verb}", json=body, headers=lease_of(claimed)), 409)
    assert both.job(job["id"])["state"] == "cancelled"
    # Jobs of in-process topics are never leased.
    python_job = both.enqueue({"worker": f"{W}.Echo"})
    both.wait_job(python_job["id"], state_is("completed"))
    assert_error(both.http.post(f"/jobs/{python_job['id']}/complete", json={}, headers=made_up), 409)


def test_an_expired_lease_puts_the_job_back(both: Daemon) -> None:
    job = both.enqueue({"worker": "w", "topic": "lease", "max_attempts": 3})
    response = both.claim("lease", lease=0.5)
    assert response.status_code == 200 and response.json()["job"]["id"] == job["id"]
    back = both.wait_job(job["id"], lambda j: j["state"] == "available" and j["errors"], timeout=15)
    assert back["attempt"] == 1
    assert "lease" in back["errors"][-1]["error"] and back["errors"][-1]["attempt"] == 1
    assert_error(both.http.post(f"/jobs/{job['id']}/complete", json={}, headers=lease_of(response)), 409)
    again = both.http.post("/topics/lease/claim", params={"wait": 5})
    assert again.status_code == 200 and again.json()["job"]["id"] == job["id"]
    assert again.json()["job"]["attempt"] == 2
    done = both.http.post(f"/jobs/{job['id']}/complete", json={"result": "late but done"}, headers=lease_of(again))
    assert done.status_code == 200 and done.json()["state"] == "completed"


def test_claim_errors(both: Daemon) -> None:
    assert_error(both.claim("py"), 409, "py")
    assert_error(both.claim("no-such-topic"), 404, "no-such-topic")
    for params in ({"wait": -1}, {"wait": "soon"}, {"wait": 61}, {"wait": "nan"}, {"wait": "inf"},
                   {"lease": 0}, {"lease": "x"}, {"lease": 10**6}):
        assert_error(both.http.post("/topics/claim/claim", params=params), 400)
    assert_error(both.http.get("/topics/claim/claim"), 405)


# ---------------------------------------------------------------- 7. events


class EventReader(threading.Thread):
    """Reads GET /events in a thread until an event satisfies ``stop_when``."""

    def __init__(self, daemon: Daemon, params: dict[str, str], stop_when: Callable[[str, dict[str, Any]], bool]):
        super().__init__(daemon=True)
        self.daemon_ = daemon
        self.params = params
        self.stop_when = stop_when
        self.connected = threading.Event()
        self.events: list[tuple[str | None, dict[str, Any]]] = []
        self.status: int | None = None
        self.content_type = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            timeout = httpx.Timeout(10, read=30)
            with httpx.Client(base_url=self.daemon_.url, headers=self.daemon_.headers, timeout=timeout) as client:
                with client.stream("GET", "/events", params=self.params) as response:
                    self.status = response.status_code
                    self.content_type = response.headers.get("content-type", "")
                    name = None
                    for line in response.iter_lines():
                        if line.startswith(":"):
                            self.connected.set()
                        elif line.startswith("event: "):
                            name = line[len("event: "):]
                        elif line.startswith("data: "):
                            data = json.loads(line[len("data: "):])
                            self.events.append((name, data))
                            if self.stop_when(name or "", data):
                                return
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.connected.set()


def is_sentinel_done(name: str, data: dict[str, Any]) -> bool:
    job = data.get("job") or {}
    return name == "job_completed" and isinstance(job.get("args"), dict) and job["args"].get("sentinel") is True


def test_event_stream_filters_by_topic(both: Daemon) -> None:
    reader = EventReader(both, {"topic": "py"}, is_sentinel_done)
    reader.start()
    assert reader.connected.wait(10) and reader.error is None, reader.error
    assert reader.status == 200 and reader.content_type.startswith("text/event-stream")

    mine = both.enqueue({"worker": f"{W}.Echo", "args": {"n": "mine"}})
    theirs = both.enqueue({"worker": f"{W}.Elsewhere"})
    both.wait_job(mine["id"], state_is("completed"))
    both.wait_job(theirs["id"], state_is("completed"))
    both.enqueue({"worker": f"{W}.Echo", "args": {"sentinel": True}})  # events arrive in order: after theirs
    reader.join(timeout=20)
    assert not reader.is_alive() and reader.error is None, reader.error

    for name, data in reader.events:
        assert isinstance(data, dict) and {"event", "sender", "job"} <= set(data), data
        assert data["event"] == name and data["sender"] == "py" and data["job"]["topic"] == "py"
        assert data["job"]["id"] != theirs["id"]
    names = [name for name, data in reader.events if data["job"]["id"] == mine["id"]]
    assert names == ["job_inserted", "job_started", "job_completed"], names
    completed = next(d for n, d in reader.events if n == "job_completed" and d["job"]["id"] == mine["id"])
    assert completed["job"]["state"] == "completed" and completed["job"]["result"] == {"n": "mine"}


class CliTail:
    """``python -m jobrunner events`` as a subprocess; a thread collects its stdout lines."""

    def __init__(self, daemon: Daemon, *args: str) -> None:
        self.proc = subprocess.Popen([PYTHON, "-m", "jobrunner", "--config", str(daemon.cfg), "events", *args],
                                     env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.got: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        try:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.put(line.rstrip("\n"))
        except (OSError, ValueError):
            pass

    def wait_line(self, needle: str, timeout: float) -> bool:
        """Collect lines until one contains ``needle`` (False at the deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.got.append(self.lines.get(timeout=0.1))
            except queue.Empty:
                assert self.proc.poll() is None, f"events exited {self.proc.returncode}"
                continue
            if needle in self.got[-1]:
                return True
        return False

    def stop(self) -> str:
        """Terminate the CLI; returns its stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.pump.join(timeout=10)
        assert self.proc.stderr is not None and self.proc.stdout is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        self.proc.stdout.close()
        return err


def test_cli_events_prints_a_line_per_event(both: Daemon) -> None:
    tail = CliTail(both, "--topic", "py")
    try:
        # The CLI prints nothing until an event comes: enqueue probes until one is seen whole.
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, tail.got
            probe = both.enqueue({"worker": f"{W}.Echo", "args": {"probe": True}})
            if tail.wait_line(f"job_completed topic=py id={probe['id']} ", 3) and any(
                    line.startswith(f"job_inserted topic=py id={probe['id']} ") for line in tail.got):
                break
        start = len(tail.got)
        theirs = both.enqueue({"worker": f"{W}.Elsewhere"})
        both.wait_job(theirs["id"], state_is("completed"))
        job = both.enqueue({"worker": f"{W}.Echo", "args": {"n": 2}})
        assert tail.wait_line(f"job_completed topic=py id={job['id']} ", 15), tail.got
    finally:
        tail.stop()
    lines = tail.got[start:]
    assert not any(f"id={theirs['id']} " in line or "topic=other" in line for line in lines), lines
    mine = [line.split(" ")[0] for line in lines if f" id={job['id']} " in line]
    assert mine == ["job_inserted", "job_started", "job_completed"], lines
    completed = next(line for line in lines if line.startswith(f"job_completed topic=py id={job['id']} "))
    assert "state=completed" in completed and f"worker={W}.Echo" in completed and "attempt=1/50" in completed


@pytest.mark.parametrize(("backend", "grace"), [
    ("asyncio", 1),
    ("asyncio", 15),
    ("trio", 1),
])
def test_sigterm_stops_the_daemon_despite_open_streams_and_long_polls(tmp_path: Path, backend: str,
                                                                       grace: float) -> None:
    daemon = Daemon(tmp_path, EXT_TOPICS, backend=backend, grace=grace)
    try:
        daemon.start()
        reader = EventReader(daemon, {}, lambda name, data: False)
        reader.start()
        assert reader.connected.wait(10) and reader.status == 200
        sock = send_claim(daemon, "slow", wait=30)
        started = time.monotonic()
        daemon.proc.terminate()
        assert daemon.proc.wait(timeout=20) == 0, daemon.log_text()
        assert time.monotonic() - started < 15
        reader.join(timeout=10)
        assert not reader.is_alive()
        # Neither was left hanging (how the long poll ends: the next test): an answer or a closed connection.
        with sock:
            try:
                answer_of(sock)
            except (OSError, http.client.HTTPException):
                pass
    finally:
        daemon.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_answers_waiting_long_polls(tmp_path: Path, backend: str) -> None:
    daemon = Daemon(tmp_path, EXT_TOPICS, backend=backend, grace=15)
    try:
        daemon.start()
        with send_claim(daemon, "slow", wait=30) as sock:
            daemon.proc.terminate()
            status, body = answer_of(sock)  # the socket's 30 s timeout bounds this
        assert daemon.proc.wait(timeout=20) == 0
        assert status == 204 or (status == 503 and body["error"]), (status, body)
    finally:
        daemon.close()


# ---------------------------------------------------------------- 8. auth and binding

AUTH_TOPICS = "\n".join([
    topic("py", poll_interval=0.1),
    topic("ext", external=True, parallelism=4, poll_interval=0.1),
    topic("auth", external=True, parallelism=4, poll_interval=0.1),
])


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("auth"), AUTH_TOPICS, http='token = "s3cret"', token="s3cret")
    try:
        yield daemon.start()
    finally:
        daemon.close()


BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer s3cre"},
    {"Authorization": "Bearer s3cret2"},
    {"Authorization": "Bearer  s3cret"},
    {"Authorization": "bearer s3cret"},
    {"Authorization": "s3cret"},
    {"Authorization": "Basic czNjcmV0"},
]


def refused(daemon: Daemon, method: str, path: str, **kwargs: Any) -> None:
    """Every wrong or missing token gets 401 (JSON error, WWW-Authenticate)."""
    extra = kwargs.pop("headers", {})
    for headers in BAD_AUTH:
        response = daemon.fresh.request(method, f"{daemon.url}{path}", headers={**extra, **headers}, **kwargs)
        assert_error(response, 401)
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_every_route_needs_the_token(secured: Daemon) -> None:
    http = secured.http  # sends "Authorization: Bearer s3cret"

    def check(method: str, path: str, expect: int, **kwargs: Any) -> httpx.Response:
        refused(secured, method, path, **kwargs)
        response = http.request(method, path, **kwargs)
        assert response.status_code == expect, (method, path, response.text)
        return response

    check("GET", "/openapi.json", 200)
    check("GET", "/topics", 200)
    job = check("POST", "/jobs", 201, json={"worker": "w", "topic": "auth"}).json()
    assert check("GET", "/jobs", 200, params={"topic": "auth"}).json()["jobs"][0]["id"] == job["id"]
    check("GET", f"/jobs/{job['id']}", 200)
    check("POST", f"/jobs/{job['id']}/cancel", 200)
    check("POST", f"/jobs/{job['id']}/retry", 200)
    check("POST", "/topics/auth/pause", 200)
    check("POST", "/topics/auth/resume", 200)
    claimed = check("POST", "/topics/auth/claim", 200, params={"wait": 0})
    assert claimed.json()["job"]["id"] == job["id"]
    check("POST", f"/jobs/{job['id']}/extend", 200, json={"seconds": 30}, headers=lease_of(claimed))
    check("POST", f"/jobs/{job['id']}/complete", 200, json={"result": 1}, headers=lease_of(claimed))
    other = http.post("/jobs", json={"worker": "w", "topic": "auth"}).json()
    claimed = http.post("/topics/auth/claim")
    assert claimed.status_code == 200
    check("POST", f"/jobs/{other['id']}/fail", 200, json={"error": "e"}, headers=lease_of(claimed))
    # Even unknown routes and wrong methods answer 401 first.
    refused(secured, "GET", "/no-such-route")
    refused(secured, "DELETE", "/jobs")
    # Nothing a refused request asked for happened.
    assert [j["id"] for j in http.get("/jobs", params={"topic": "auth"}).json()["jobs"]] == [other["id"], job["id"]]


def test_event_stream_needs_the_token(secured: Daemon) -> None:
    for headers in BAD_AUTH:
        with secured.fresh.stream("GET", f"{secured.url}/events", headers=headers) as response:
            response.read()
            assert_error(response, 401)
    reader = EventReader(secured, {"topic": "ext"},
                         lambda name, data: (data.get("job") or {}).get("args") == {"last": True})
    reader.start()
    assert reader.connected.wait(10) and reader.status == 200, (reader.status, reader.error)
    secured.enqueue({"worker": "w", "topic": "ext", "args": {"last": True}})
    reader.join(timeout=15)
    assert not reader.is_alive() and reader.error is None
    assert [name for name, _ in reader.events] == ["job_inserted"]
    # The CLI without the token is told so.
    anonymous = secured.directory / "anonymous.toml"
    anonymous.write_text(config_text(secured.db, secured.port, AUTH_TOPICS))
    proc = run_cli(anonymous, "events", env=secured.env, timeout=30)
    assert proc.returncode == 1 and "401" in proc.stderr, proc.stderr


def test_token_from_the_environment(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, AUTH_TOPICS, env={"JOBRUNNER_HTTP_TOKEN": "s3cret"}, token="s3cret")
    try:
        daemon.start()
        for method, path in [("GET", "/topics"), ("GET", "/openapi.json"), ("GET", "/jobs"), ("POST", "/jobs")]:
            refused(daemon, method, path, json={"worker": "w", "topic": "ext"} if method == "POST" else None)
        assert daemon.http.get("/topics").status_code == 200
        assert daemon.http.post("/jobs", json={"worker": "w", "topic": "ext"}).status_code == 201
        with daemon.fresh.stream("GET", f"{daemon.url}/events") as response:
            response.read()
            assert_error(response, 401)
        # The CLI reads the same variable, so it can tail the stream.
        tail = CliTail(daemon)
        try:
            deadline = time.monotonic() + 20
            while True:
                assert time.monotonic() < deadline, tail.got
                job = daemon.enqueue({"worker": "w", "topic": "ext"})
                if tail.wait_line(f"job_inserted topic=ext id={job['id']} ", 1):
                    break
        finally:
            tail.stop()
    finally:
        daemon.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_refuses_a_non_loopback_host_without_a_token(tmp_path: Path, host: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(tmp_path / "jobs.db", free_port(), AUTH_TOPICS, http=f'host = "{host}"'))
    proc = run_cli(cfg, "run", env=child_env(), timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "[http]" in proc.stderr and "token" in proc.stderr and str(cfg) in proc.stderr


# ---------------------------------------------------------------- 9. OpenAPI


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {(path, m.upper()) for path, ops in document["paths"].items() for m in ops if m in methods}


def test_openapi_document_is_the_repo_file(api: Daemon) -> None:
    response = api.http.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert response.json() == json.loads((REPO / "jobrunner" / "openapi.json").read_text(encoding="utf-8"))
    assert response.json()["openapi"].startswith("3.")


def test_served_routes_match_the_openapi_document(tmp_path: Path) -> None:
    from starlette.routing import Route

    from jobrunner import Runner
    from jobrunner.config import parse
    from jobrunner.external import ExternalTopics
    from jobrunner.http import create_app

    settings = parse({"database": {"url": f"sqlite:///{tmp_path / 'routes.db'}"},
                      "topics": {"t": {}, "x": {"external": True}}, "http": {"enabled": True}}, source="test")
    runner = Runner(settings)
    try:
        app = create_app(runner, ExternalTopics(settings, runner.storage), settings.http)
        starlette_app: Any = app  # an ASGI app: its wrappers hold the next one in .app
        while not hasattr(starlette_app, "routes"):  # unwrap the dashboard's shell and the Guard middleware
            starlette_app = starlette_app.app
        served: set[tuple[str, str]] = set()
        for route in starlette_app.routes:
            assert isinstance(route, Route), route
            assert route.methods, route.path
            served |= {(route.path, m) for m in route.methods if m != "HEAD"}  # Starlette adds HEAD to GET
    finally:
        runner.store.close()
    document = json.loads((REPO / "jobrunner" / "openapi.json").read_text(encoding="utf-8"))
    documented = documented_operations(document)
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    for path, ops in document["paths"].items():  # path parameters are declared where the path has them
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, declared)


def test_every_documented_operation_is_answered_by_its_handler(api: Daemon) -> None:
    """Over HTTP: no documented path+method falls through to the router's 404/405."""
    document = api.http.get("/openapi.json").json()
    for path, method in sorted(documented_operations(document)):
        url = path.replace("{id}", "987654").replace("{topic}", "no-such-topic")
        if path in ("/events", "/dashboard/api/stream"):
            with api.http.stream(method, url) as response:
                assert response.status_code == 200
            continue
        response = api.http.request(method, url, params={"wait": 0} if url.endswith("/claim") else None)
        assert response.status_code != 405, (method, path)
        assert response.status_code in {int(code) for code in document["paths"][path][method.lower()]["responses"]}, \
            (method, path, response.status_code, response.text)
        if response.status_code == 404:
            assert response.json()["error"] != "Not Found", (method, path)  # the handler's own 404


# ---------------------------------------------------------------- 10. engine defects (xfail until fixed)
# These run on their own daemons: the inputs below leave unreadable rows or a dead API behind.


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    # One topic per test: a row the engine cannot render poisons every claim and listing of its topic.
    topics = "\n".join(topic(name, external=True, parallelism=4, poll_interval=0.1) for name in ("px", "pn", "pb"))
    daemon = Daemon(tmp_path_factory.mktemp("scratch"), topics, http=f"max_body = {MAX_BODY}")
    try:
        yield daemon.start()
    finally:
        daemon.close()


def test_deeply_nested_json_is_400_not_500(scratch: Daemon) -> None:
    raw = b"[" * 3000 + b"]" * 3000  # under max_body, deeper than the JSON decoder's recursion limit
    assert_error(scratch.http.post("/jobs", content=raw), 400)


@pytest.mark.parametrize("options", [
    pytest.param({"delay": 1e12}, id="delay-1e12"),
    pytest.param({"delay": 1e300}, id="delay-1e300"),
    pytest.param({"scheduled_at": "9999-12-31T23:59:59-01:00"}, id="after-9999"),
    pytest.param({"scheduled_at": "0001-01-01T00:00:00+01:00"}, id="before-0001"),
])
def test_run_times_outside_the_datetime_range_are_400(scratch: Daemon, options: dict[str, Any]) -> None:
    response = scratch.http.post("/jobs", json={"worker": "x", "topic": "px", **options})
    listing = scratch.http.get("/jobs", params={"topic": "px"})
    assert listing.status_code == 200, listing.text
    assert_error(response, 400)


def test_max_attempts_beyond_the_integer_range_is_400(scratch: Daemon) -> None:
    assert_error(scratch.http.post("/jobs", json={"worker": "x", "topic": "px", "max_attempts": 2**64}), 400)


def test_non_json_numbers_in_a_result_are_400(scratch: Daemon) -> None:
    job = scratch.enqueue({"worker": "x", "topic": "pn"})
    assert scratch.claim("pn").status_code == 200
    response = scratch.http.post(f"/jobs/{job['id']}/complete", content=b'{"result": NaN}')
    if response.status_code == 200:
        assert response.json()["result"] is None  # the value was dropped
    assert_error(response, 400)


def test_a_worker_path_that_exits_on_import_cannot_kill_the_daemon(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, topic("py", poll_interval=0.1))
    try:
        daemon.start()
        try:
            # venv/__main__.py runs venv's CLI on import: argparse rejects the daemon's argv -> SystemExit(2).
            response = daemon.http.post("/jobs", json={"worker": "venv.__main__.Worker"}, timeout=10)
            assert_error(response, 400)
        finally:
            alive = daemon.http.get("/topics", timeout=3)
        assert alive.status_code == 200
        job = daemon.enqueue({"worker": f"{W}.Echo"})
        daemon.wait_job(job["id"], state_is("completed"), timeout=10)
    except httpx.TransportError as exc:
        raise AssertionError(f"the API stopped answering: {exc!r}") from exc
    finally:
        daemon.close()


def read_response(sock: socket.socket) -> tuple[bytes, dict[str, str]]:
    """One HTTP/1.1 response from ``sock`` (status line, headers; body by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed mid-response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(rest) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-body")
        rest += chunk
    return status.encode(), headers


@pytest.mark.parametrize("case", ["401", "404", "413"])
def test_early_answers_do_not_break_keep_alive(case: str, scratch: Daemon, secured: Daemon) -> None:
    daemon, path, body = {
        "401": (secured, "/jobs", b'{"worker": "w", "topic": "ext"}'),
        "404": (scratch, "/jobs/xyz/complete", b'{"result": 1}'),
        "413": (scratch, "/jobs", b"[" + b" " * (MAX_BODY + 100) + b"]"),
    }[case]
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        # The headers first; the body follows once the server had the chance to answer early.
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        sock.settimeout(1.0)
        try:
            early = sock.recv(65536, socket.MSG_PEEK)
        except TimeoutError:
            early = b""  # the server waits for the body: fine
        sock.settimeout(5.0)
        try:
            sock.sendall(body)
        except OSError:
            pass  # the server already hung up: judged below
        status, headers = read_response(sock)
        assert status.split()[1] == case.encode(), (status, early)
        if headers.get("connection", "").lower() == "close":
            return  # the client was told not to reuse the connection
        try:
            sock.sendall(f"GET /topics HTTP/1.1\r\nHost: x\r\n{_auth_line(daemon)}\r\n".encode())
            second, _ = read_response(sock)
        except OSError as exc:
            raise AssertionError(f"kept-alive connection dropped after a {case}: {exc!r}") from exc
        assert second.split()[1] in (b"200", b"401"), second


def _auth_line(daemon: Daemon) -> str:
    return "".join(f"{k}: {v}\r\n" for k, v in daemon.headers.items())


def test_allow_header_names_every_method_of_the_path(scratch: Daemon) -> None:
    for method in ("DELETE", "PUT", "OPTIONS"):
        response = scratch.http.request(method, "/jobs")
        assert_error(response, 405)
        allowed = {m.strip().upper() for m in response.headers.get("allow", "").split(",")}
        assert {"GET", "POST"} <= allowed, (method, response.headers.get("allow"))


def test_numeric_bounds_match_the_document(scratch: Daemon) -> None:
    document = scratch.http.get("/openapi.json").json()
    paths = document["paths"]

    def smallest(schema: dict[str, Any]) -> float:
        if "minimum" in schema:
            return float(schema["minimum"])
        return float(schema["exclusiveMinimum"]) + 1e-4

    def param(path: str, name: str) -> dict[str, Any]:
        return next(p["schema"] for p in paths[path]["post" if "claim" in path else "get"]["parameters"]
                    if p["name"] == name)

    problems = []
    seconds = paths["/jobs/{id}/extend"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    job = scratch.enqueue({"worker": "x", "topic": "pb"})
    claimed = scratch.claim("pb")
    assert claimed.status_code == 200
    response = scratch.http.post(f"/jobs/{job['id']}/extend",
                                 json={"seconds": smallest(seconds["properties"]["seconds"])},
                                 headers=lease_of(claimed))
    if response.status_code != 200:
        problems.append(("extend seconds", response.status_code, response.text))
    scratch.http.post(f"/jobs/{job['id']}/complete", headers=lease_of(claimed))
    lease = smallest(param("/topics/{topic}/claim", "lease"))
    response = scratch.claim("pb", lease=lease)
    if response.status_code not in (200, 204):
        problems.append(("claim lease", response.status_code, response.text))
    after = param("/jobs", "after").get("maximum", 2**63)
    response = scratch.http.get("/jobs", params={"topic": "pb", "after": after})
    if response.status_code != 200:
        problems.append(("jobs after", response.status_code, response.text))
    assert not problems, problems
