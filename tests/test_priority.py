"""Priority names (critical, high, normal, low) and numbers 0–9, everywhere a priority is accepted;
and enqueueing for an external topic from Python (``topic=``)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from jobrunner import ConfigError, EnqueueError, Runner, Worker
from jobrunner.config import parse
from jobrunner.priority import (
    PRIORITY_NAMES,
    PriorityError,
    parse_priority,
    parse_priority_text,
)
from tests.helpers import MakeRunner, get_job
from tests.workers import Add, Noop


def test_names_and_numbers_parse_to_numbers() -> None:
    assert PRIORITY_NAMES == {"critical": 0, "high": 1, "normal": 2, "low": 3}
    assert [parse_priority(n) for n in ("critical", "high", "normal", "low")] == [0, 1, 2, 3]
    assert [parse_priority(n) for n in range(10)] == list(range(10))
    assert parse_priority_text("HIGH") == 1 and parse_priority_text(" 7 ") == 7


@pytest.mark.parametrize("bad", [10, -1, True, 1.0, "3", "urgent", "High", None, [1]])
def test_anything_else_is_refused_naming_names_and_range(bad: Any) -> None:
    with pytest.raises(PriorityError) as info:
        parse_priority(bad)
    message = str(info.value)
    assert "between 0 and 9" in message and "critical (0), high (1), normal (2), low (3)" in message
    assert repr(bad) in message


@pytest.mark.parametrize("bad", ["10", "-1", "urgent", ""])
def test_command_line_text_is_refused_likewise(bad: str) -> None:
    with pytest.raises(PriorityError, match="between 0 and 9"):
        parse_priority_text(bad)


def test_a_worker_priority_may_be_a_name() -> None:
    class Urgent(Worker):
        topic = "t"
        priority: ClassVar[int | str | None] = "critical"  # Worker's type: a name becomes its number

    assert Urgent.priority == 0
    with pytest.raises(TypeError, match=r"Unknown\.priority must be None or an integer between 0 and 9 or one of"):
        class Unknown(Worker):
            topic = "t"
            priority = "urgent"


def test_config_priority_may_be_a_name() -> None:
    settings = parse({"topics": {"a": {"priority": "low"}, "b": {"priority": 0}}}, environ={})
    assert (settings.topics["a"].priority, settings.topics["b"].priority) == (3, 0)
    with pytest.raises(ConfigError, match=r"\[topics\.a\]: key 'priority' must be .*critical.*got 'urgent'"):
        parse({"topics": {"a": {"priority": "urgent"}}}, environ={})


def test_enqueue_accepts_names_in_every_form(runner: Runner) -> None:
    assert runner.enqueue(Add, {"a": 1, "b": 1}, priority="high").priority == 1
    many = runner.enqueue_many([(Noop, {}, {"priority": "low"}), (Noop, {}, {"priority": 9}), (Noop, {})])
    assert [job.priority for job in many] == [3, 9, 2]
    assert get_job(runner, many[0].id).priority == 3
    with pytest.raises(EnqueueError, match=r"priority of tests\.workers\.Noop must be .*got 'urgent'"):
        runner.enqueue(Noop, {}, priority="urgent")
    assert len(runner.list_jobs(limit=1_000_000)) == 4


@pytest.mark.anyio
async def test_enqueue_async_accepts_names(runner: Runner) -> None:
    job = await runner.enqueue_async(Noop, {}, priority="critical")
    assert job.priority == 0


EXTERNAL = {"t": {"parallelism": 2}, "ext": {"external": True, "priority": "high"}, "other": {}}


def test_enqueue_for_an_external_topic_takes_any_worker_name(make_runner: MakeRunner) -> None:
    runner = make_runner(EXTERNAL)
    job = runner.enqueue("convert", {"file": "a.pdf"}, topic="ext")
    assert (job.topic, job.worker, job.priority, job.max_attempts) == ("ext", "convert", 1, 50)
    assert (job.args, job.state) == ({"file": "a.pdf"}, "available")
    # A name that looks like an import path is not imported for an external topic.
    many = runner.enqueue_many([("no_such_module.Job", {"i": 1}, {"topic": "ext", "priority": 0}),
                                (Add, {"a": 1, "b": 2}, {"topic": "t"}),
                                (Add, {"a": 2, "b": 2})])
    assert [(j.topic, j.worker, j.priority) for j in many] == [
        ("ext", "no_such_module.Job", 0), ("t", "tests.workers.Add", 2), ("t", "tests.workers.Add", 2)]


def test_topic_must_be_the_workers_own_and_configured(make_runner: MakeRunner) -> None:
    runner = make_runner(EXTERNAL)
    with pytest.raises(EnqueueError, match=r"tests\.workers\.Add belongs to topic 't', not 'other'"):
        runner.enqueue(Add, {"a": 1, "b": 2}, topic="other")
    with pytest.raises(EnqueueError, match="belongs to topic 't', not 'ext'"):
        runner.enqueue(Add, {"a": 1, "b": 2}, topic="ext")  # a Worker class is never an external job
    with pytest.raises(EnqueueError, match="belongs to topic 't', not 'ext'"):
        runner.enqueue("tests.workers.Add", {}, topic="ext")  # the name of a loaded Worker is not external
    with pytest.raises(ConfigError, match="topic 'nope' is not configured"):
        runner.enqueue("convert", {}, topic="nope")
    with pytest.raises(EnqueueError, match="non-empty worker name"):
        runner.enqueue("", {}, topic="ext")
    with pytest.raises(EnqueueError, match="belongs to topic"):
        runner.enqueue_many([("convert", {}, {"topic": "ext"}), (Add, {}, {"topic": "other"})])
    assert len(runner.list_jobs(limit=1_000_000)) == 0


def test_the_openapi_document_accepts_exactly_these_priorities() -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")  # comes with schemathesis
    from jobrunner.http import openapi_document

    schema = openapi_document()["components"]["schemas"]["NewJob"]["properties"]["priority"]
    validator = jsonschema_rs.Draft202012Validator(schema)
    for value in [*range(-1, 11), "critical", "high", "normal", "low", "HIGH", "3", "", True, 1.5, None, [0]]:
        try:
            accepted = parse_priority(value) is not None
        except PriorityError:
            accepted = False
        assert validator.is_valid(value) == accepted, value
