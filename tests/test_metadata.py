"""Tags, meta and progress on SQLite and PostgreSQL: stored at enqueue, filtered by tag,
progress written while perform runs; the same through the CLI and the HTTP API."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from jobrunner import EnqueueError, Job, Runner, Worker, events
from jobrunner.config import parse
from jobrunner.external import ExternalTopics
from jobrunner.http import create_app
from jobrunner.storage import ClaimRequest
from jobrunner.testing import running
from tests.daemon_harness import run_cli
from tests.workers import Add, Noop


def _stored(runner: Runner) -> int:
    """How many jobs the table holds."""
    return sum(sum(states.values()) for states in runner.stats().values())



class Halfway(Worker):
    topic = "t"

    async def perform(self, job: Job) -> str:
        await self.progress(job, 0.25)
        await self.progress(job, 0.5)
        return str(job.meta.get("label"))


class HalfwayInThread(Worker):
    topic = "t"

    # Worker.perform is typed async, but a plain def perform (run in a thread) is supported.
    def perform(self, job: Job) -> None:
        self.progress_sync(job, 0.75)


@pytest.fixture
def runner(any_db_url: str) -> Iterator[Runner]:
    made = Runner(parse({"database": {"url": any_db_url}, "topics": {"t": {}}, "http": {"enabled": True}},
                        source="test"))
    made.migrate()
    yield made
    made.store.close()


def test_tags_and_meta_are_stored_and_jobs_are_found_by_tag(runner: Runner) -> None:
    red = runner.enqueue(Add, {"a": 1, "b": 1}, tags=["red", "big", "red"], meta={"by": "alice", "n": [1, 2]})
    blue = runner.enqueue(Add, {"a": 1, "b": 2}, tags=["blue", 'say "hi"'])
    plain = runner.enqueue(Add, {"a": 1, "b": 3})
    assert (red.tags, red.meta) == (["red", "big"], {"by": "alice", "n": [1, 2]})
    assert runner.get_job(red.id) == red
    assert (plain.tags, plain.meta, plain.progress) == ([], {}, None)
    assert runner.list_jobs(tag="red") == [red]
    assert runner.list_jobs(tag='say "hi"') == [blue]
    assert runner.list_jobs(tag="re") == []  # whole tags only
    assert runner.page_jobs(None, None, 10, None, "blue")[0] == [blue]
    many = runner.enqueue_many([(Add, {"a": i, "b": i}, {"tags": [f"n{i}"], "meta": {"i": i}}) for i in range(3)])
    assert [(j.tags, j.meta) for j in many] == [([f"n{i}"], {"i": i}) for i in range(3)]
    assert [runner.get_job(j.id) for j in many] == many
    data = red.to_dict()
    assert (data["tags"], data["meta"], data["progress"]) == (["red", "big"], {"by": "alice", "n": [1, 2]}, None)


@pytest.mark.parametrize(("options", "message"), [
    ({"tags": "red"}, "must be a list of strings"),
    ({"tags": ["ok", ""]}, "non-empty strings"),
    ({"tags": [1]}, "non-empty strings"),
    ({"tags": ["x" * 101]}, "longer than 100"),
    ({"tags": [str(i) for i in range(33)]}, "at most 32 tags"),
    ({"meta": [1]}, "must be a JSON object"),
    ({"meta": {"f": {1, 2}}}, "not JSON"),
])
def test_bad_tags_and_meta_are_refused_and_store_nothing(runner: Runner, options: dict[str, Any],
                                                         message: str) -> None:
    with pytest.raises(EnqueueError, match=message):
        runner.enqueue(Noop, {}, **options)
    assert _stored(runner) == 0


@pytest.mark.anyio
async def test_perform_reports_progress_from_async_and_thread_workers(runner: Runner) -> None:
    first = runner.enqueue(Halfway, {}, meta={"label": "L"})
    second = runner.enqueue(HalfwayInThread, {})
    done = anyio.Event()
    finished: set[int] = set()

    def completed(sender: str, job: Job, **_: Any) -> None:
        finished.add(job.id)
        if finished >= {first.id, second.id}:
            done.set()

    events.job_completed.connect(completed)
    try:
        async with running(runner):
            with anyio.fail_after(30):
                await done.wait()
    finally:
        events.job_completed.disconnect(completed)
    one, two = runner.get_job(first.id), runner.get_job(second.id)
    assert one is not None and (one.progress, one.result) == (0.5, "L")
    assert two is not None and two.progress == 0.75


@pytest.mark.anyio
async def test_progress_outside_a_runner_records_nothing_and_checks_its_value() -> None:
    job = Job(1, "t", "w", {}, "executing", 0, 1, 1)
    await Halfway().progress(job, 1)  # no runner: nothing to write, no error
    with pytest.raises(ValueError, match="from 0 to 1"):
        await Halfway().progress(job, 1.5)
    with pytest.raises(ValueError, match="from 0 to 1"):
        Halfway().progress_sync(job, float("nan"))


def test_progress_is_written_only_while_the_attempt_executes(runner: Runner) -> None:
    job = runner.enqueue(Noop, {})
    assert not runner.store.scheduling.set_progress(job.id, 1, 0.5)  # not executing
    claimed = runner.store.jobs.cycle((), ClaimRequest("t", 1, "node", job.scheduled_at or 0.0)).claimed
    assert runner.store.scheduling.set_progress(job.id, claimed[0].attempt, 0.5)
    assert not runner.store.scheduling.set_progress(job.id, claimed[0].attempt + 1, 0.9)  # another attempt
    stored = runner.get_job(job.id)
    assert stored is not None and stored.progress == 0.5


@pytest.mark.anyio
async def test_http_enqueue_with_metadata_uniqueness_and_dependencies(runner: Runner) -> None:
    app = create_app(runner, ExternalTopics(runner.settings, runner.storage), runner.settings.http)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        body = {"worker": "tests.workers.Add", "args": {"a": 1, "b": 2}, "tags": ["api"], "meta": {"k": "v"},
                "unique": {"period": 60, "keys": ["a"]}}
        created = await client.post("/jobs", json=body)
        assert created.status_code == 201, created.text
        job = created.json()
        assert (job["tags"], job["meta"], job["progress"]) == (["api"], {"k": "v"}, None)
        assert "duplicate" not in job
        again = await client.post("/jobs", json={**body, "args": {"a": 1, "b": 3}})
        assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["id"] == job["id"]

        child = await client.post("/jobs", json={"worker": "tests.workers.Add", "args": {"a": 0, "b": 0},
                                                 "depends_on": [job["id"]], "on_dependency_failure": "run"})
        assert child.status_code == 201 and child.json()["state"] == "blocked"
        parent = (await client.get(f"/jobs/{job['id']}")).json()
        assert parent == {**job, "depends_on": [], "dependents": [{"id": child.json()["id"], "state": "blocked"}]}
        waiting = (await client.get(f"/jobs/{child.json()['id']}")).json()
        assert waiting["depends_on"] == [{"id": job["id"], "state": "available", "on_failure": "run"}]

        listed = (await client.get("/jobs", params={"tag": "api"})).json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]]

        refusals: list[tuple[dict[str, Any], str]] = [
            ({"depends_on": [987654]}, "unknown job id"),
            ({"depends_on": ["x"]}, "field 'depends_on'"),
            ({"depends_on": [True]}, "field 'depends_on'"),
            ({"unique": {"period": "soon"}}, "unique period"),
            ({"tags": "x"}, "must be a list of strings"),
            ({"meta": 3}, "must be a JSON object"),
            ({"on_dependency_failure": "maybe"}, "on_dependency_failure"),
        ]
        for bad, message in refusals:
            refused = await client.post("/jobs", json={"worker": "tests.workers.Add", "args": {}, **bad})
            assert refused.status_code == 400 and message in refused.json()["error"], (bad, refused.text)
    assert _stored(runner) == 2


def test_cli_enqueue_jobs_and_show(any_db_url: str, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{any_db_url}"\n[topics.t]\n', encoding="utf-8")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(config, *args, env=subprocess_env)

    first = cli("enqueue", "tests.workers.Add", "--args", '{"a": 1, "b": 2}', "--tag", "cli", "--meta", '{"m": 1}',
                "--unique", '{"period": 60}')
    assert first.returncode == 0, first.stderr
    first_id = first.stdout.strip()
    again = cli("enqueue", "tests.workers.Add", "--args", '{"a": 1, "b": 2}', "--unique", '{"period": 60}')
    assert again.returncode == 0 and again.stdout.strip() == first_id
    assert f"duplicate: job {first_id} (available) matches" in again.stderr
    child = cli("enqueue", "tests.workers.Add", "--args", '{"a": 3, "b": 4}', "--depends-on", first_id)
    assert child.returncode == 0, child.stderr
    child_id = child.stdout.strip()

    listed = json.loads(cli("jobs", "--tag", "cli", "--json").stdout)["jobs"]
    assert [j["id"] for j in listed] == [int(first_id)] and listed[0]["meta"] == {"m": 1}
    shown = json.loads(cli("show", child_id, "--json").stdout)
    assert shown["state"] == "blocked"
    assert shown["depends_on"] == [{"id": int(first_id), "state": "available", "on_failure": "cancel"}]
    text = cli("show", first_id).stdout
    assert '["cli"]' in text and f"dependents: {child_id} (blocked)" in text

    for args, message in [(("--depends-on", "77777"), "unknown job id(s): 77777"),
                          (("--unique", "{nope"), "--unique is not valid JSON"),
                          (("--meta", "[1]"), "must be a JSON object")]:
        refused = cli("enqueue", "tests.workers.Add", "--args", '{"a": 1, "b": 1}', *args)
        assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
