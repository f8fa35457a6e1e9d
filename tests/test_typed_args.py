"""Typed worker arguments (``args_type``): checked at class creation, at every kind of
enqueue (Python, CLI; HTTP is in test_http.py), and again before each execution."""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from jobrunner import EnqueueError, InvalidArgumentsError, Job, Runner, Worker
from jobrunner.storage import NewJob
from jobrunner.testing import drain, perform_job
from tests import typed_workers
from tests.daemon_harness import run_cli
from tests.helpers import get_job
from tests.typed_workers import Greet, Order, Plot, Point, TakeOrder, Untyped
from topics.demo import FlakyJob, PrintMessage, PrintSum


@pytest.fixture(autouse=True)
def _forget_seen() -> None:
    typed_workers.seen.clear()


def table_is_empty(runner: Runner) -> bool:
    return runner.list_jobs(limit=10) == []


BAD_ARGS = [
    (TakeOrder, {"quantity": 2}, "Object missing required field `sku`"),
    (TakeOrder, {"sku": 7}, "Expected `str`, got `int` - at `$.sku`"),
    (TakeOrder, {"sku": "a", "quantity": "2"}, "Expected `int`, got `str` - at `$.quantity`"),
    (TakeOrder, {"sku": "a", "when": "yesterday"}, "at `$.when`"),
    (TakeOrder, {"sku": "a", "colour": "red"}, "Object contains unknown field `colour`"),
    (TakeOrder, None, "Object missing required field `sku`"),
    (Plot, {"x": 1, "y": 2, "tags": [1]}, "Expected `str`, got `int` - at `$.tags[0]`"),
    (Plot, [1, 2], "Expected `object`, got `array`"),
    (Greet, {"name": "Ada", "polite": "yes"}, "Expected `bool`, got `str` - at `$.polite`"),
    (Greet, {"name": "Ada", "shout": True}, "Object contains unknown field `shout`"),
]


@pytest.mark.parametrize(("worker", "args", "fragment"), BAD_ARGS)
def test_enqueue_refuses_arguments_that_do_not_match_and_stores_nothing(
    runner: Runner, worker: type[Worker], args: Any, fragment: str
) -> None:
    with pytest.raises(InvalidArgumentsError) as caught:
        runner.enqueue(worker, args)
    message = str(caught.value)
    assert message.startswith(f"arguments of tests.typed_workers.{worker.__name__}: ")
    assert fragment in message
    assert isinstance(caught.value, EnqueueError)  # callers catching EnqueueError see it too
    assert table_is_empty(runner)


def test_a_bad_item_in_enqueue_many_stores_none_of_the_batch(runner: Runner) -> None:
    good = (TakeOrder, {"sku": "a"})
    with pytest.raises(InvalidArgumentsError, match="missing required field `y`"):
        runner.enqueue_many([good, (Untyped, {"any": "thing"}), good, (Plot, {"x": 1}), good])
    assert table_is_empty(runner)


@pytest.mark.anyio
async def test_enqueue_async_and_enqueue_many_async_validate_too(runner: Runner) -> None:
    with pytest.raises(InvalidArgumentsError,
                       match=r"tests\.typed_workers\.Greet: Object missing required field `name`"):
        await runner.enqueue_async(Greet, {})
    with pytest.raises(InvalidArgumentsError, match="unknown field `z`"):
        await runner.enqueue_many_async([(Plot, {"x": 1, "y": 2}), (Plot, {"x": 1, "y": 2, "z": 3})])
    assert table_is_empty(runner)
    job = await runner.enqueue_async(Greet, {"name": "Ada"})
    assert job.args == {"name": "Ada"}


def test_an_instance_of_the_type_is_stored_as_its_json_form(runner: Runner) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    job = runner.enqueue(TakeOrder, Order("book", 3, when))
    assert job.args == {"sku": "book", "quantity": 3, "when": "2030-01-02T03:04:05Z"}
    assert get_job(runner, job.id).args == job.args
    [struct_job] = runner.enqueue_many([(Plot, Point(1, 2, ["a"]))])
    assert struct_job.args == {"x": 1, "y": 2, "tags": ["a"]}


@pytest.mark.anyio
async def test_perform_reads_the_converted_instance_while_job_args_stays_json(runner: Runner) -> None:
    order = runner.enqueue(TakeOrder, {"sku": "book", "quantity": 2, "when": "2030-01-02T03:04:05Z"})
    plot = runner.enqueue(Plot, {"x": 3, "y": 4})
    greet = runner.enqueue(Greet, {"name": "Ada", "polite": True})
    untyped = runner.enqueue(Untyped, [1, "x"])
    assert await drain(runner, "t") == {"completed": 4, "failed": 0, "discarded": 0, "cancelled": 0, "snoozed": 0}
    assert typed_workers.seen[order.id] == (Order, order.args)
    assert typed_workers.seen[plot.id] == (Point, {"x": 3, "y": 4})
    assert typed_workers.seen[greet.id] == (dict, {"name": "Ada", "polite": True})
    results = {j.id: get_job(runner, j.id).result for j in (order, plot, greet, untyped)}
    assert results == {order.id: 2, plot.id: 7, greet.id: "Dear Ada", untyped.id: [1, "x"]}


@pytest.mark.anyio
async def test_a_stored_job_whose_arguments_no_longer_match_is_discarded_at_once(runner: Runner) -> None:
    # As if TakeOrder's args_type gained the required field `sku` after this job was stored.
    row: dict[str, Any] = {
        "topic": "t", "worker": "tests.typed_workers.TakeOrder", "args": '{"quantity": 2}',
        "state": "available", "priority": 0, "attempt": 0, "max_attempts": 50, "errors": "[]",
        "inserted_at": 0.0, "scheduled_at": 0.0,
    }
    [job] = runner.store.jobs.insert([NewJob(**row)])
    assert await drain(runner, "t", with_scheduled=True) == {
        "completed": 0, "failed": 0, "discarded": 1, "cancelled": 0, "snoozed": 0,
    }
    stored = get_job(runner, job.id)
    assert stored.state == "discarded" and stored.attempt == 1 and len(stored.errors) == 1
    entry = stored.errors[0]
    assert entry["error"] == (
        "InvalidArgumentsError: arguments of tests.typed_workers.TakeOrder: Object missing required field `sku`"
    )
    assert "not retried" in entry["note"]
    assert job.id not in typed_workers.seen  # perform never ran


@pytest.mark.anyio
async def test_perform_job_checks_arguments_as_enqueue_does() -> None:
    with pytest.raises(InvalidArgumentsError, match=r"tests\.typed_workers\.Plot: .*`\$\.y`"):
        await perform_job(Plot, {"x": 1, "y": 2.5})
    outcome = await perform_job(Plot, Point(1, 2))
    assert outcome.state == "completed" and outcome.result == 3
    assert outcome.job.args == {"x": 1, "y": 2, "tags": []}


def test_args_of_outside_the_executor_converts_and_names_the_field() -> None:
    job = Job(id=1, topic="t", worker="tests.typed_workers.Plot", args={"x": 1}, state="executing",
              priority=0, attempt=1, max_attempts=1)
    with pytest.raises(InvalidArgumentsError, match="Object missing required field `y`"):
        Plot().args_of(job)
    good = Job(id=2, topic="t", worker="tests.typed_workers.Plot", args={"x": 1, "y": 2}, state="executing",
               priority=0, attempt=1, max_attempts=1)
    assert Plot().args_of(good) == Point(1, 2)


@dataclass
class HoldsASocket:
    conn: socket.socket


class Flat(msgspec.Struct, array_like=True):
    a: int


@dataclass
class Unresolvable:
    thing: NoSuchName  # type: ignore[name-defined]  # noqa: F821


@pytest.mark.parametrize(("args_type", "fragment"), [
    (int, "must be a msgspec.Struct, a dataclass or a TypedDict"),
    (list[int], "must be a msgspec.Struct, a dataclass or a TypedDict"),
    ("Order", "is not a type msgspec can validate"),
    (HoldsASocket, "uses <class 'socket.socket'>, which msgspec cannot build from JSON"),
    (Flat, "array_like Structs are not supported"),
    (Unresolvable, "NoSuchName"),
])
def test_an_args_type_msgspec_cannot_handle_is_a_type_error_when_the_class_is_defined(
    args_type: Any, fragment: str
) -> None:
    with pytest.raises(TypeError) as caught:
        type("Bad", (Worker,), {"topic": "t", "args_type": args_type, "__module__": __name__})
    assert str(caught.value).startswith(f"{__name__}.Bad.args_type")
    assert fragment in str(caught.value)


# ---------------------------------------------------------------- the shipped demo workers


@pytest.mark.anyio
async def test_demo_workers_declare_their_arguments() -> None:
    assert (await perform_job(PrintSum, {"a": 2, "b": 0.5})).result == 2.5
    assert (await perform_job(FlakyJob, {})).state == "retryable"  # fail_times defaults to 2
    with pytest.raises(InvalidArgumentsError,
                       match=r"topics\.demo\.PrintMessage: Object missing required field `message`"):
        await perform_job(PrintMessage, {})
    with pytest.raises(InvalidArgumentsError, match=r"topics\.demo\.FlakyJob: Expected `int`, got `str`"):
        await perform_job(FlakyJob, {"fail_times": "2"})


DEMO_CONFIG = """
[database]
url = "sqlite:///{db}"

[runner]
modules = ["topics.demo"]

[topics.demo]
"""


def test_cli_enqueue_refuses_mismatched_arguments_with_exit_2(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(DEMO_CONFIG.format(db=tmp_path / "demo.db"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(cfg, *args, env=subprocess_env)

    bad = cli("enqueue", "topics.demo.PrintSum", "--args", '{"x": 1}')
    assert bad.returncode == 2, bad.stderr
    assert bad.stdout == ""
    assert bad.stderr == "error: arguments of topics.demo.PrintSum: Object missing required field `a`\n"
    stats = cli("stats", "--json")
    assert json.loads(stats.stdout)["topics"]["demo"]["available"] == 0
    good = cli("enqueue", "topics.demo.PrintSum", "--args", '{"a": 1, "b": 2}')
    assert good.returncode == 0, good.stderr
    shown = json.loads(cli("show", good.stdout.strip(), "--json").stdout)
    assert shown["args"] == {"a": 1, "b": 2}
