"""The shipped topics doing real work: webhooks against a real local HTTP server, shell
commands named by config, and the demo workers."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from jobrunner.config import Settings, TopicSettings
from jobrunner.testing import perform_job
from jobrunner.worker import current_settings
from tests.helpers import MakeRunner, get_job
from topics.demo import FlakyJob, PrintMessage, PrintSum
from topics.shell import RunCommand
from topics.webhooks import SIGNATURE_HEADER, Deliver, sign, verify

pytestmark = pytest.mark.anyio

SECRET = "test-secret"


@contextlib.contextmanager
def topic_options(name: str, **options: Any) -> Iterator[TopicSettings]:
    """Run the body as if the runner's config had ``[topics.name] options = {...}``."""
    topic = TopicSettings(name=name, options=options)
    token = current_settings.set(Settings(topics={name: topic}))
    try:
        yield topic
    finally:
        current_settings.reset(token)


class Receiver:
    """A real HTTP server on a free loopback port answering with scripted statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"status {status}".encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_webhook_2xx_completes_with_a_verifiable_signature() -> None:
    with Receiver([204]) as receiver, topic_options("webhooks", secret=SECRET):
        outcome = await perform_job(Deliver, {"url": receiver.url, "event": "order.paid", "payload": {"id": 7}})
    assert outcome.state == "completed" and outcome.result == {"status": 204}
    [(headers, body)] = receiver.requests
    assert verify(SECRET, body, headers[SIGNATURE_HEADER])
    assert headers[SIGNATURE_HEADER] == sign(SECRET, body)
    assert json.loads(body) == {"event": "order.paid", "payload": {"id": 7}, "job_id": 0, "attempt": 1}
    assert not verify("other-secret", body, headers[SIGNATURE_HEADER])


@pytest.mark.parametrize("status", [400, 404, 410, 422])
async def test_webhook_4xx_is_a_permanent_failure(status: int) -> None:
    with Receiver([status]) as receiver, topic_options("webhooks", secret=SECRET):
        outcome = await perform_job(Deliver, {"url": receiver.url, "payload": {}})
    assert outcome.state == "cancelled"
    assert outcome.reason is not None
    assert f"HTTP {status}" in outcome.reason


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_webhook_5xx_408_429_are_retried(status: int) -> None:
    with Receiver([status]) as receiver, topic_options("webhooks", secret=SECRET):
        outcome = await perform_job(Deliver, {"url": receiver.url, "payload": {}})
    assert outcome.state == "retryable"
    assert f"HTTP {status}" in outcome.job.errors[0]["error"]


async def test_webhook_connection_error_and_timeout_are_retried() -> None:
    with Receiver([]) as receiver:
        closed_url = receiver.url
    with topic_options("webhooks", secret=SECRET):
        outcome = await perform_job(Deliver, {"url": closed_url, "payload": {}})
    assert outcome.state == "retryable" and "connection failed" in outcome.job.errors[0]["error"]

    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        with topic_options("webhooks", secret=SECRET, timeout=0.3):
            outcome = await perform_job(Deliver, {"url": f"http://127.0.0.1:{silent.getsockname()[1]}/", "payload": {}})
    finally:
        silent.close()
    assert outcome.state == "retryable" and "timed out" in outcome.job.errors[0]["error"]


async def test_webhook_without_secret_or_with_bad_url_is_cancelled() -> None:
    with topic_options("webhooks"):
        assert (await perform_job(Deliver, {"url": "http://127.0.0.1:9/"})).state == "cancelled"
    with topic_options("webhooks", secret=SECRET):
        outcome = await perform_job(Deliver, {"url": "file:///etc/passwd"})
    assert outcome.reason is not None
    assert outcome.state == "cancelled" and "http(s) URL" in outcome.reason


COMMANDS = {
    "echo_args": [sys.executable, "-c", "import sys; print(' '.join(sys.argv[1:]))"],
    "fail": [sys.executable, "-c", "import sys; sys.stderr.write('bad things\\n'); sys.exit(3)"],
}


async def test_shell_runs_a_named_command_with_argv_not_a_shell() -> None:
    with topic_options("shell", commands=COMMANDS):
        outcome = await perform_job(RunCommand, {"command": "echo_args", "args": ["hello", "$HOME", "; rm -rf /"]})
    assert outcome.state == "completed"
    assert outcome.result["exit_code"] == 0
    assert outcome.result["stdout"].strip() == "hello $HOME ; rm -rf /"  # passed verbatim, never expanded


async def test_shell_nonzero_exit_fails_with_code_and_stderr() -> None:
    with topic_options("shell", commands=COMMANDS):
        outcome = await perform_job(RunCommand, {"command": "fail"})
    assert outcome.state == "retryable"
    error = outcome.job.errors[0]["error"]
    assert "code 3" in error and "bad things" in error


@pytest.mark.parametrize("command", ["rm", "/bin/sh", "echo_args; ls", None])
async def test_shell_refuses_commands_that_config_does_not_name(command: Any) -> None:
    with topic_options("shell", commands=COMMANDS):
        outcome = await perform_job(RunCommand, {"command": command, "args": ["-rf", "/"]})
    assert outcome.reason is not None
    assert outcome.state == "cancelled" and "not allowed" in outcome.reason


async def test_shell_rejects_non_string_arguments() -> None:
    with topic_options("shell", commands=COMMANDS):
        outcome = await perform_job(RunCommand, {"command": "echo_args", "args": [1, 2]})
    assert outcome.state == "cancelled"


async def test_demo_workers(capsys: pytest.CaptureFixture[str]) -> None:
    assert (await perform_job(PrintSum, {"a": 2, "b": 3})).result == 5
    assert (await perform_job(PrintMessage, {"message": "hi"})).result == "hi"
    assert "2 + 3 = 5" in capsys.readouterr().out
    assert (await perform_job(FlakyJob, {"fail_times": 1}, attempt=1)).state == "retryable"
    assert (await perform_job(FlakyJob, {"fail_times": 1}, attempt=2)).result == {"attempts": 2}


class QuickShell(RunCommand):
    # mypy infers int from RunCommand's `timeout = 600` (Worker declares float | None): hence the ignore.
    timeout = 2.5  # type: ignore[assignment]  # long enough for two Python interpreters to start on a loaded machine


async def test_shell_timeout_terminates_the_whole_process_group(tmp_path: Any) -> None:
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}'); "
        "time.sleep(60)"
    )
    with topic_options("shell", commands={"hang": [sys.executable, "-c", script]}, kill_grace=1.0):
        outcome = await perform_job(QuickShell, {"command": "hang"})
    assert outcome.state == "retryable" and isinstance(outcome.error, TimeoutError)
    for pid in map(int, pids.read_text().split()):
        assert not running(pid)  # both the command and its own child are gone


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for its parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_ds_creates_its_output_folder_on_a_fresh_checkout(
    make_runner: MakeRunner, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's first ds command, from a folder without ds-output (the default output_dir)."""
    from jobrunner import events
    from jobrunner.testing import running, wait_for
    from topics.ds import DescribeCsv

    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "ds-output").exists()
    runner = make_runner({"ds": {"parallelism": 1, "poll_interval": 0.05}})
    async with running(runner):
        job = runner.enqueue(DescribeCsv, {"rows": 5000, "seed": 7}, max_attempts=1)
        # Completed or discarded, whichever comes first: the job's final event.
        final = wait_for(events.job_completed, lambda p: p["job"].id == job.id, timeout=60)
        discarded = wait_for(events.job_discarded, lambda p: p["job"].id == job.id, timeout=60)
        async with anyio.create_task_group() as tg:
            for waiter in (final, discarded):
                tg.start_soon(_first_of, waiter, tg.cancel_scope)
    stored = get_job(runner, job.id)
    assert stored.state == "completed", stored.errors
    output = tmp_path / "ds-output" / f"job-{job.id}.json"
    assert stored.result == {"output": str(output), "exit_code": 0}
    assert json.loads(output.read_text())["columns"]["x"]["count"] == 5000


async def _first_of(waiter: Any, scope: anyio.CancelScope) -> None:
    await waiter
    scope.cancel()
