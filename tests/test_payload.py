"""Bad job values: nesting past the bound, lone surrogates, rows nobody can decode.

Everything refused is refused before anything is stored; a row already in the table that
cannot be decoded (written around jobrunner) is discarded alone at its claim and never
breaks a listing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from jobrunner import EnqueueError, Job, Runner, Worker
from jobrunner.config import Settings
from jobrunner.enqueue import build_row, external_defaults
from jobrunner.payload import MAX_DEPTH
from jobrunner.storage.schema import jobs
from jobrunner.testing import drain
from tests.daemon_harness import run_cli
from tests.helpers import MakeRunner, get_job
from tests.workers import Add, Noop

PYTHON = sys.executable


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` lists: nested(2) == [[1]]."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


class LoneSurrogateResult(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        return {"text": "a\ud800b"}


class DeepResult(Worker):
    topic = "t"

    async def perform(self, job: Job) -> Any:
        return nested(2000)


# ---------------------------------------------------------------- refused at enqueue


def test_arguments_nest_at_most_the_bound(runner: Runner) -> None:
    assert MAX_DEPTH == 64
    job = runner.enqueue(Noop, {"x": nested(MAX_DEPTH - 1)})  # the dict is level 1
    assert get_job(runner, job.id).args == {"x": nested(MAX_DEPTH - 1)}
    for args in ({"x": nested(MAX_DEPTH)}, nested(MAX_DEPTH + 1), (nested(985),), nested(20_000),
                 {"x": [{"y": nested(5000)}]}):
        with pytest.raises(EnqueueError, match=f"arguments of tests.workers.Noop: nested deeper than {MAX_DEPTH}"):
            runner.enqueue(Noop, args)
    assert len(runner.list_jobs(limit=1_000_000)) == 1


def test_circular_arguments_are_refused(runner: Runner) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EnqueueError, match="nested deeper than"):
        runner.enqueue(Noop, {"loop": loop})
    assert len(runner.list_jobs(limit=1_000_000)) == 0


@pytest.mark.parametrize("args", [
    pytest.param({"s": "\ud800"}, id="value"),
    pytest.param({"a\udfffb": 1}, id="key"),
    pytest.param({"list": ["ok", ["\udc80"]]}, id="nested"),
])
def test_lone_surrogates_are_refused(runner: Runner, args: Any) -> None:
    with pytest.raises(EnqueueError, match="lone surrogate"):
        runner.enqueue(Noop, args)
    assert len(runner.list_jobs(limit=1_000_000)) == 0
    ok = runner.enqueue(Noop, {"s": "emoji \U0001F600 and é"})  # valid Unicode is stored as given
    assert get_job(runner, ok.id).args == {"s": "emoji \U0001F600 and é"}


def test_one_bad_item_of_many_stores_nothing(runner: Runner) -> None:
    with pytest.raises(EnqueueError):
        runner.enqueue_many([(Noop, {"i": 1}), (Noop, {"i": nested(100)}), (Noop, {"i": 3})])
    with pytest.raises(EnqueueError):
        runner.enqueue_many([(Noop, {"i": 1}), (Noop, {"i": "\ud800"})])
    assert len(runner.list_jobs(limit=1_000_000)) == 0


@pytest.mark.parametrize(("args", "fragment"), [
    pytest.param("[" * 20_000 + "]" * 20_000, "nested too deeply", id="20000-deep"),
    pytest.param(json.dumps({"x": nested(100)}), f"nested deeper than {MAX_DEPTH}", id="100-deep"),
    pytest.param('{"s": "\\ud800"}', "lone surrogate", id="lone-surrogate"),
])
def test_cli_enqueue_refuses_with_exit_2(tmp_path: Path, subprocess_env: dict[str, str], args: str,
                                         fragment: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "jobs.db"}"\n\n'
                   '[runner]\nmodules = ["tests.workers"]\n\n[topics.t]\n')
    proc = run_cli(cfg, "enqueue", "tests.workers.Noop", "--args", args, env=subprocess_env)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------- rows already stored


def insert_raw(runner: Runner, args: str, **columns: Any) -> int:
    """A row written straight into the database (either engine), around jobrunner."""
    row = {"topic": "t", "worker": "tests.workers.Noop", "args": args, "state": "available",
           "inserted_at": time.time(), "scheduled_at": time.time(), **columns}
    engine = create_engine(runner.settings.database.url)
    try:
        with engine.begin() as conn:
            return int(conn.execute(jobs.insert().values(row).returning(jobs.c.id)).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_unreadable_rows_are_discarded_alone_and_never_break_a_listing(runner: Runner) -> None:
    good = [runner.enqueue(Add, {"a": i, "b": 1}) for i in range(3)]
    bad = {
        "not json": insert_raw(runner, "{not json"),
        "too deep to decode": insert_raw(runner, "[" * 5000 + "]" * 5000),
        "deeper than the bound": insert_raw(runner, json.dumps(nested(MAX_DEPTH + 10))),
        "errors not json": insert_raw(runner, "{}", errors="[oops"),
    }
    good.append(runner.enqueue(Add, {"a": 10, "b": 1}))

    listed = runner.list_jobs(limit=100)
    assert len(listed) == 8
    json.dumps([job.to_dict() for job in listed])  # every row renders

    counts = await drain(runner, "t")
    assert counts["completed"] == 4 + 1 and counts["discarded"] == 3, counts  # bad errors column, good args: runs
    for job in good:
        assert get_job(runner, job.id).state == "completed"
    for what, job_id in bad.items():
        job = get_job(runner, job_id)
        if what == "errors not json":
            assert job.state == "completed" and "unreadable errors" in job.errors[0]["error"], job
            continue
        assert job.state == "discarded", (what, job)
        assert "unreadable args" in job.errors[-1]["error"] and "not retried" in job.errors[-1]["note"], job.errors
        assert isinstance(job.to_dict()["args"], str)


@pytest.mark.anyio
async def test_results_that_cannot_be_stored_become_null(runner: Runner) -> None:
    surrogate = runner.enqueue(LoneSurrogateResult, {})
    deep = runner.enqueue(DeepResult, {})
    counts = await drain(runner, "t")
    assert counts["completed"] == 2, counts
    for job_id in (surrogate.id, deep.id):
        job = get_job(runner, job_id)
        assert job.state == "completed" and job.result is None, job
    json.dumps([job.to_dict() for job in runner.list_jobs()])


# ---------------------------------------------------------------- worker paths


ROOT = Path(__file__).resolve().parent


@pytest.mark.anyio
async def test_a_stored_worker_path_outside_the_loaded_modules_is_never_imported(
        make_runner: MakeRunner, make_settings: Callable[..., Settings]) -> None:
    # The row an HTTP client of an external topic may store: any worker name at all.
    external = make_settings({"ext": {"external": True}})
    path = "tests.import_marker.Anything"
    row = build_row(external, path, {}, None, time.time(), external_defaults(path, external.topic("ext")))
    runner = make_runner({"ext": {}})  # a node that runs topic ext with Python workers
    job = runner.store_rows([row])[0]
    assert "tests.import_marker" not in sys.modules
    counts = await drain(runner, "ext")
    assert counts["discarded"] == 1, counts
    assert "tests.import_marker" not in sys.modules  # its import-time code never ran
    stored = get_job(runner, job.id)
    assert stored.state == "discarded" and "never imported" in stored.errors[-1]["error"], stored.errors
