"""The HTTP API's bounds and bad input: clear errors, nothing half-stored, nothing unbounded.

Most tests run against a real daemon subprocess (the harness of tests/test_http.py);
the event-stream bound runs the runner in this process to read its queue counters.
"""

from __future__ import annotations

import functools
import json
import os
import select
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from jobrunner import ConfigError, Runner
from jobrunner.config import parse
from jobrunner.enqueue import build_row, external_defaults
from jobrunner.http import sse
from jobrunner.payload import MAX_DEPTH
from jobrunner.testing import running
from tests.daemon_harness import PYTHON, free_port
from tests.helpers import MakeRunner
from tests.test_http import (
    MAX_BODY,
    Daemon,
    W,
    assert_error,
    state_is,
    topic,
)
from tests.test_payload import nested

LIMIT_TOPICS = "\n".join([
    topic("py", parallelism=4, poll_interval=0.1),
    topic("ext", external=True, parallelism=4, poll_interval=0.1),
    topic("raw", external=True, parallelism=4, poll_interval=0.1),
    topic("fin", external=True, parallelism=4, poll_interval=0.1),
    topic("conc", external=True, parallelism=8, poll_interval=30),
])


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("limits"), LIMIT_TOPICS, http=f"max_body = {MAX_BODY * 4}")
    try:
        yield daemon.start()
    finally:
        daemon.close()


def job_count(daemon: Daemon) -> int:
    response = daemon.http.get("/topics")
    assert response.status_code == 200, response.text
    return sum(sum(states.values()) for states in response.json()["topics"].values())


# ---------------------------------------------------------------- refused before anything is stored


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 400, 978])
@pytest.mark.parametrize("target", [{"worker": f"{W}.Echo"}, {"worker": "convert", "topic": "ext"}], ids=["py", "ext"])
def test_args_nested_past_the_bound_are_400(limits: Daemon, depth: int, target: dict[str, Any]) -> None:
    before = job_count(limits)
    deep = "[" * depth + "1" + "]" * depth  # written out: the client's own encoder would recurse
    fields = json.dumps(target)[1:-1]
    one = f'{{{fields}, "args": {deep}}}'
    assert_error(limits.http.post("/jobs", content=one.encode()), 400, "nested", f"{MAX_DEPTH} levels")
    many = f'[{{{fields}, "args": {{"x": 1}}}}, {{{fields}, "args": {{"deep": {deep}}}}}]'
    assert_error(limits.http.post("/jobs", content=many.encode()), 400, "nested", f"{MAX_DEPTH} levels")
    assert job_count(limits) == before


@pytest.mark.parametrize("body", [
    pytest.param(b'{"worker": "tests.http_workers.Echo", "args": {"s": "\\ud800"}}', id="value"),
    pytest.param(b'{"worker": "tests.http_workers.Echo", "args": {"\\udfff": 1}}', id="key"),
    pytest.param(b'{"worker": "convert", "topic": "ext", "args": ["ok", ["\\udc80"]]}', id="external"),
    pytest.param(b'{"worker": "conv\\ud800ert", "topic": "ext"}', id="worker-name"),
])
def test_lone_surrogates_are_400_and_store_nothing(limits: Daemon, body: bytes) -> None:
    before = job_count(limits)
    assert_error(limits.http.post("/jobs", content=body), 400, "lone surrogate")
    assert job_count(limits) == before
    assert limits.http.get("/jobs").status_code == 200
    # An escaped surrogate pair is one valid character.
    valid = limits.http.post(
        "/jobs", content='{"worker": "convert", "topic": "ext", "args": {"s": "\\ud83d\\ude00 é"}}'.encode()
    )
    assert valid.status_code == 201, valid.text
    assert limits.job(valid.json()["id"])["args"] == {"s": "\U0001F600 é"}


def test_results_and_errors_that_cannot_be_stored_are_400(limits: Daemon) -> None:
    job = limits.enqueue({"worker": "convert", "topic": "fin"})
    lease = limits.claim("fin").json()
    assert lease["job"]["id"] == job["id"]
    post = functools.partial(limits.http.post, headers={"X-Jobrunner-Lease-Token": lease.get("lease_token", "")})
    path = f"/jobs/{job['id']}"
    assert_error(post(f"{path}/complete", content=b'{"result": {"s": "\\ud800"}}'), 400, "lone surrogate")
    assert_error(post(f"{path}/complete", json={"result": nested(MAX_DEPTH + 1)}), 400, "nested deeper")
    assert_error(post(f"{path}/fail", content=b'{"error": "bad \\udfff"}'), 400, "lone surrogate")
    assert limits.job(job["id"])["state"] == "executing"
    done = post(f"{path}/complete", json={"result": {"pages": 3}})
    assert done.status_code == 200 and done.json()["result"] == {"pages": 3}


def test_an_empty_state_filter_is_400(limits: Daemon) -> None:
    assert_error(limits.http.get("/jobs?state="), 400, "state")
    assert limits.http.get("/jobs?state=completed").status_code == 200


# ---------------------------------------------------------------- rows written around jobrunner


def insert_raw(daemon: Daemon, **columns: Any) -> int:
    row = {"topic": "raw", "worker": "convert", "args": "{}", "state": "available",
           "inserted_at": time.time(), "scheduled_at": time.time(), **columns}
    with sqlite3.connect(daemon.db) as conn:
        cursor = conn.execute(f"INSERT INTO jobrunner_jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                              list(row.values()))
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)


def test_unreadable_rows_never_break_the_api_and_are_discarded_at_claim(limits: Daemon) -> None:
    bad_args = insert_raw(limits, args="{not json", priority=0)
    deep_args = insert_raw(limits, args="[" * 3000 + "]" * 3000, priority=0)
    surrogate = insert_raw(limits, state="completed", result='{"s": "\\ud800"}', completed_at=time.time())
    far = insert_raw(limits, state="scheduled", scheduled_at=1e14)
    good = insert_raw(limits, args='{"ok": true}', priority=1)

    listing = limits.http.get("/jobs", params={"topic": "raw"})
    assert listing.status_code == 200, listing.text
    assert {j["id"] for j in listing.json()["jobs"]} >= {bad_args, deep_args, surrogate, far, good}
    assert limits.job(surrogate)["result"] == {"s": "\ufffd"}
    assert limits.job(far)["scheduled_at"].startswith("9999-12-31")

    claimed = limits.claim("raw")  # the unreadable rows come first, are discarded, and the claim goes on
    assert claimed.status_code == 200 and claimed.json()["job"]["id"] == good, claimed.text
    for job_id in (bad_args, deep_args):
        job = limits.job(job_id)
        assert job["state"] == "discarded" and "unreadable args" in job["errors"][-1]["error"], job
    limits.alive()


# ---------------------------------------------------------------- long-poll claims


def test_a_batch_wakes_as_many_waiting_claims_as_it_has_jobs(limits: Daemon) -> None:
    answers: list[httpx.Response] = []

    def claim() -> None:
        with httpx.Client(base_url=limits.url, timeout=30) as client:
            answers.append(client.post("/topics/conc/claim", params={"wait": 20}))

    claimers = [threading.Thread(target=claim, daemon=True) for _ in range(5)]
    for thread in claimers:
        thread.start()
    started = time.monotonic()
    ids = {j["id"] for j in limits.enqueue([{"worker": "w", "topic": "conc"}] * 3)}
    ids |= {j["id"] for j in limits.enqueue([{"worker": "w", "topic": "conc"}] * 2)}
    for thread in claimers:
        thread.join(timeout=25)
    assert all(a.status_code == 200 for a in answers) and len(answers) == 5, [a.status_code for a in answers]
    assert {a.json()["job"]["id"] for a in answers} == ids  # each job to exactly one claim
    assert time.monotonic() - started < 10  # woken by the inserts, not by the end of their wait


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_idle_long_poll_claims_cost_no_cpu(tmp_path: Path) -> None:
    # Default poll interval (1 s): 200 claims used to cost about 0.4 of a core.
    daemon = Daemon(tmp_path, topic("idle", external=True) + topic("py"))
    sockets: list[socket.socket] = []
    try:
        daemon.start()
        pid = daemon.proc.pid
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
            sock.sendall(b"POST /topics/idle/claim?wait=30 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            sockets.append(sock)
        # Let the daemon take in the 200 requests: until its CPU time stops moving.
        deadline = time.monotonic() + 10
        last = cpu_seconds(pid)
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = cpu_seconds(pid)
            if now - last <= 0.02:
                break
            last = now
        start = cpu_seconds(pid)
        time.sleep(2.0)
        used = cpu_seconds(pid) - start
        assert used < 0.2, f"200 idle claims cost {used / 2:.2f} of a core"
        job = daemon.enqueue({"worker": "w", "topic": "idle"})  # and one of them still gets it, at once
        ready, _, _ = select.select(sockets, [], [], 10)
        assert len(ready) == 1, len(ready)
        assert http_body(ready[0])["job"]["id"] == job["id"]
        assert select.select([s for s in sockets if s is not ready[0]], [], [], 0)[0] == []  # 199 go on waiting
    finally:
        for sock in sockets:
            sock.close()
        daemon.close()


def http_body(sock: socket.socket) -> Any:
    """The JSON body of the one HTTP/1.1 response arriving on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return json.loads(body)


# ---------------------------------------------------------------- worker paths


def test_a_worker_path_stored_for_an_external_topic_is_never_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    # This node runs topic ext with Python workers; elsewhere ext is external and HTTP
    # clients name any worker they like.
    daemon = Daemon(tmp_path, topic("ext", poll_interval=0.1), env={"IMPORT_MARKER_FILE": str(marker)})
    try:
        daemon.start()
        elsewhere = parse({"database": {"url": f"sqlite:///{daemon.db}"}, "topics": {"ext": {"external": True}}})
        producer = Runner(elsewhere)
        try:
            path = "tests.import_marker.Anything"
            row = build_row(elsewhere, path, {}, None, time.time(), external_defaults(path, elsewhere.topic("ext")))
            job = producer.store_rows([row])[0]
        finally:
            producer.store.close()
        stored = daemon.wait_job(job.id, state_is("discarded"))
        assert "never imported" in stored["errors"][-1]["error"], stored["errors"]
        assert not marker.exists(), "the daemon imported a module named by a stored job"
    finally:
        daemon.close()


# ---------------------------------------------------------------- tokens


@pytest.mark.parametrize("token", ["pässwörd", "has space", "tab\there", "snow☃"])
def test_tokens_must_be_printable_ascii(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBRUNNER_HTTP_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"\[http\]: key 'token' must be printable ASCII"):
        parse({"http": {"token": token}}, source="cfg.toml")
    monkeypatch.setenv("JOBRUNNER_HTTP_TOKEN", token)
    with pytest.raises(ConfigError, match=r"JOBRUNNER_HTTP_TOKEN.*key 'token' must be printable ASCII"):
        parse({"http": {}}, source="cfg.toml")
    monkeypatch.setenv("JOBRUNNER_HTTP_TOKEN", "s3cr3t-Token_~!")
    assert parse({"http": {}}).http.token == "s3cr3t-Token_~!"


def test_cli_events_with_a_non_ascii_token_is_a_config_error(tmp_path: Path,
                                                             subprocess_env: dict[str, str]) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[http]\nenabled = true\ntoken = "pässwörd"\n', encoding="utf-8")
    proc = subprocess.run([PYTHON, "-m", "jobrunner", "--config", str(cfg), "events"], env=subprocess_env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "'token'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------- the event stream


async def _listening(port: int) -> None:
    with anyio.fail_after(10):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.01)
                continue
            await stream.aclose()
            return


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.anyio
async def test_a_stalled_event_reader_is_bounded_in_bytes_then_dropped(make_runner: MakeRunner) -> None:
    port = free_port()
    runner: Runner = make_runner({"ext": {"external": True}}, http={"enabled": True, "port": port})
    ext = runner.settings.topic("ext")
    big = "x" * 256 * 1024
    async with running(runner):
        await _listening(port)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(10)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # ... and read nothing for now
            with anyio.fail_after(10):
                while sse.stats()["readers"] < 1:
                    await anyio.sleep(0.01)
            lagged_before = sse.stats()["lagged"]
            for _ in range(400):  # 100 MiB of events at most; the kernel buffers take a few MiB
                row = build_row(runner.settings, "w", {"pad": big}, None, time.time(), external_defaults("w", ext))
                await runner.in_thread(functools.partial(runner.store_rows, [row]))
                await anyio.lowlevel.checkpoint()
                assert sse.stats()["queued_bytes"] <= sse.SSE_MAX_BYTES
                if sse.stats()["lagged"] > lagged_before:
                    break
            else:
                raise AssertionError(f"the stalled reader was never dropped: {sse.stats()}")
            assert sse.stats()["queued_bytes"] == 0  # released at once
            data = await anyio.to_thread.run_sync(_read_until_closed, sock)
        finally:
            sock.close()
        last = data.decode("latin-1").rsplit("event: ", 1)[-1]  # the stream's final event
        assert last.startswith("lagged\ndata: "), data[-300:]
        payload = json.loads(last.split("data: ", 1)[1].split("\n", 1)[0])
        assert payload["event"] == "lagged" and payload["dropped"] >= 1 and payload["max_bytes"] == sse.SSE_MAX_BYTES
        with anyio.fail_after(10):
            while sse.stats()["readers"] > 0:  # the stream ended: its receivers are gone
                await anyio.sleep(0.01)
