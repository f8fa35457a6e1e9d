"""Cron schedules: expressions, time zones across DST, missed-slot policies, configuration
errors, exactly one job per slot on SQLite and PostgreSQL (also with several daemon
processes on one database), events and ``python -m jobrunner cron``."""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
import sqlalchemy as sa

from jobrunner import ConfigError, Cron, Job, Runner, Worker
from jobrunner.config import Settings, parse
from jobrunner.cron import CronScheduler, schedules
from jobrunner.schedule import CATCH_UP_LIMIT, ON_TIME, ScheduleError
from jobrunner.storage import NewJob
from jobrunner.storage.cron import CronPlan
from jobrunner.storage.schema import cron_slots, jobs
from jobrunner.testing import EventRecorder, running
from tests import forkserver
from tests.conftest import PYTHON
from tests.daemon_harness import run_cli
from tests.helpers import job_of

PARIS = ZoneInfo("Europe/Paris")
CRON_TOPIC = {"cron": {"parallelism": 2, "poll_interval": 0.05}}
TICK = "tests.cron_workers.Tick"


def at(year: int, month: int, day: int, hour: int, minute: int, second: int, *, tz: Any = UTC) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp())


def local(ts: int, tz: Any = PARIS) -> str:
    return datetime.fromtimestamp(ts, tz=tz).isoformat()


# ---------------------------------------------------------------- expressions


def test_five_fields_six_fields_with_seconds_first_and_nicknames() -> None:
    start = at(2026, 1, 1, 10, 0, 0)
    assert Cron("*/5 * * * *").next_after(start, 2) == [start + 300, start + 600]
    assert Cron("*/15 * * * * *").next_after(start, 3) == [start + 15, start + 30, start + 45]
    assert Cron("@hourly").next_after(start, 1) == [start + 3600]
    assert Cron("@daily").next_after(start, 1) == [at(2026, 1, 2, 0, 0, 0)]
    assert Cron("@WEEKLY").next_after(start, 1) == [at(2026, 1, 4, 0, 0, 0)]  # a Sunday
    assert Cron("0 9 * * MON-FRI", timezone="Europe/Paris").next_after(start, 1) == [at(2026, 1, 2, 9, 0, 0, tz=PARIS)]


@pytest.mark.parametrize("expression, message", [
    ("61 * * * *", "bad cron expression '61 \\* \\* \\* \\*': Bad minute"),
    ("* * * *", "5 fields, or 6 with seconds first"),
    ("* * * * * * *", "5 fields, or 6 with seconds first"),
    ("@reboot", "unknown nickname '@reboot'"),
    ("", "non-empty string"),
    ("0 0 31 2 *", "Bad day-of-month"),
])
def test_bad_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Cron(expression)


def test_bad_timezone_and_missed_policy() -> None:
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        Cron("* * * * *", timezone="Mars/Olympus")
    with pytest.raises(ScheduleError, match="missed must be one of skip, latest, all, got 'some'"):
        Cron("* * * * *", missed="some")


# ---------------------------------------------------------------- DST


def test_spring_forward_in_paris() -> None:
    # 2026-03-29: at 02:00 local time the clocks jump to 03:00.
    before = at(2026, 3, 28, 12, 0, 0, tz=PARIS)
    daily = Cron("30 2 * * *", timezone="Europe/Paris").next_after(before, 2)
    # A fixed time inside the skipped hour runs right after the change (as Debian cron), once.
    assert [local(s) for s in daily] == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    hourly = Cron("0 * * * *", timezone="Europe/Paris").next_after(at(2026, 3, 29, 0, 0, 0, tz=PARIS) - 1, 24)
    day = [s for s in hourly if local(s).startswith("2026-03-29")]
    assert len(day) == 23 and "2026-03-29T02:00:00+01:00" not in map(local, day)
    assert all(b - a == 3600 for a, b in itertools.pairwise(day))  # every real hour, once


def test_fall_back_in_paris() -> None:
    # 2026-10-25: at 03:00 local time the clocks go back to 02:00; 02:xx happens twice.
    before = at(2026, 10, 24, 12, 0, 0, tz=PARIS)
    daily = Cron("30 2 * * *", timezone="Europe/Paris").next_after(before, 2)
    assert [local(s) for s in daily] == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]  # once
    hourly = Cron("0 * * * *", timezone="Europe/Paris").next_after(at(2026, 10, 25, 0, 0, 0, tz=PARIS) - 1, 26)
    day = [s for s in hourly if local(s).startswith("2026-10-25")]
    assert len(day) == 25  # 02:00 twice: two instants, so two distinct slots
    assert ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"] == [local(s) for s in day if "T02:" in local(s)]
    assert len(set(day)) == 25


# ---------------------------------------------------------------- missed slots


def test_missed_policies() -> None:
    last = at(2026, 1, 1, 9, 0, 0)
    now = at(2026, 1, 1, 10, 0, 30)  # the 10:00 slot is 30 s old: on time
    expected_all = [at(2026, 1, 1, 9, m, 0) for m in range(5, 60, 5)] + [at(2026, 1, 1, 10, 0, 0)]
    assert Cron("*/5 * * * *", missed="all").due(last, 0, now) == expected_all
    assert Cron("*/5 * * * *", missed="latest").due(last, 0, now) == [at(2026, 1, 1, 10, 0, 0)]
    assert Cron("*/5 * * * *", missed="skip").due(last, 0, now) == [at(2026, 1, 1, 10, 0, 0)]
    late = at(2026, 1, 1, 10, 0, 0) + ON_TIME + 1
    assert Cron("*/5 * * * *", missed="skip").due(last, 0, late) == []
    assert Cron("*/5 * * * *", missed="latest").due(last, 0, late) == [at(2026, 1, 1, 10, 0, 0)]
    # A schedule never run starts from `since` (the daemon's start): nothing before it is missed.
    assert Cron("*/5 * * * *", missed="all").due(None, now - 1, now) == []
    assert Cron("*/5 * * * *", missed="all").due(None, at(2026, 1, 1, 9, 58, 0), now) == [at(2026, 1, 1, 10, 0, 0)]


def test_catching_up_every_missed_slot_is_bounded_and_quick() -> None:
    now = at(2026, 1, 8, 0, 0, 0)
    started = time.monotonic()
    slots = Cron("* * * * * *", missed="all").due(now - 7 * 86400, 0, now)  # a week of per-second slots
    assert time.monotonic() - started < 5
    assert slots == list(range(now - CATCH_UP_LIMIT + 1, now + 1))


# ---------------------------------------------------------------- configuration


def settings_with(cron: list[dict[str, Any]], url: str = "sqlite:////tmp/unused.db", **extra: Any) -> Any:
    return parse({"database": {"url": url}, "topics": {**CRON_TOPIC, "ext": {"external": True}},
                  "runner": {"modules": ["tests.cron_workers"]}, "cron": cron, **extra}, source="cron.toml")


@pytest.mark.parametrize("entry, message", [
    ({"worker": TICK, "schedule": "61 * * * *"},
     r"cron.toml: \[\[cron\]\] #1 \(tests.cron_workers.Tick\): key 'schedule': bad cron expression .*Bad minute"),
    ({"worker": TICK, "schedule": "* * * * *", "timezone": "Nowhere/Land"},
     r"\[\[cron\]\] #1 \(tests.cron_workers.Tick\): key 'timezone': unknown time zone 'Nowhere/Land'"),
    ({"worker": TICK, "schedule": "* * * * *", "missed": "never"},
     r"\[\[cron\]\] #1 \(tests.cron_workers.Tick\): key 'missed' must be one of skip, latest, all, got 'never'"),
    ({"worker": TICK, "schedule": "* * * * *", "every": 5},
     r"\[\[cron\]\] #1 \(tests.cron_workers.Tick\): unknown key 'every'"),
    ({"schedule": "* * * * *"}, r"\[\[cron\]\] #1: key 'worker' is required"),
    ({"worker": TICK, "schedule": "* * * * *", "args": [1]}, r"key 'args' must be a table"),
    ({"worker": TICK, "schedule": 5}, r"key 'schedule' must be a non-empty string"),
])
def test_config_errors_name_the_entry_and_key(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_with([entry])


def test_second_entry_is_named_by_position_and_name() -> None:
    with pytest.raises(ConfigError, match=r"\[\[cron\]\] #2 \(nightly\): key 'schedule'"):
        settings_with([{"worker": TICK, "schedule": "* * * * *"},
                       {"worker": TICK, "schedule": "nope", "name": "nightly"}])


def test_two_entries_with_one_name_are_refused() -> None:
    same = r"the schedule name 'tests.cron_workers.Tick \* \* \* \* \*' is also the name of \[\[cron\]\] #1"
    with pytest.raises(ConfigError, match=r"#2 \(tests.cron_workers.Tick\): " + same):
        settings_with([{"worker": TICK, "schedule": "* * * * *", "args": {"a": 1}},
                       {"worker": TICK, "schedule": "* * * * *", "args": {"a": 2}}])
    named = settings_with([{"worker": TICK, "schedule": "* * * * *", "args": {"a": 1}, "name": "one"},
                           {"worker": TICK, "schedule": "* * * * *", "args": {"a": 2}, "name": "two"}])
    assert [c.key for c in named.cron] == ["one", "two"]


@pytest.mark.parametrize("entry, message", [
    ({"worker": "tests.cron_workers.Nope", "schedule": "* * * * *"},
     r"#1 \(tests.cron_workers.Nope\): key 'worker': worker 'tests.cron_workers.Nope': module "
     r"'tests.cron_workers' has no attribute 'Nope'"),
    ({"worker": "tests.workers.Add", "schedule": "* * * * *"},
     r"#1 \(tests.workers.Add\): key 'worker': the topic 't' of tests.workers.Add is not configured"),
    ({"worker": "tests.cron_workers.Greet", "schedule": "* * * * *", "args": {"nom": "x"}},
     r"#1 \(tests.cron_workers.Greet\): key 'args': .*missing required field `name`"),
])
def test_workers_and_arguments_are_checked_when_schedules_load(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        schedules(settings_with([entry]))


def test_worker_class_schedules_apply_to_modules_the_runner_loads() -> None:
    import tests.cron_class_workers  # noqa: F401 - defines the workers

    settings = settings_with([{"worker": TICK, "schedule": "@hourly"}],
                             runner={"modules": ["tests.cron_workers", "tests.cron_class_workers"]})
    assert [(c.key, c.worker, c.timezone, c.missed) for c in schedules(settings)] == [
        ("tests.cron_workers.Tick @hourly", TICK, "UTC", "skip"),
        ("tests.cron_class_workers.Nightly @daily", "tests.cron_class_workers.Nightly", "UTC", "skip"),
        ("tests.cron_class_workers.Twice 0 9 * * MON", "tests.cron_class_workers.Twice", "Europe/Paris", "latest"),
        ("tests.cron_class_workers.Twice */10 * * * *", "tests.cron_class_workers.Twice", "UTC", "skip"),
    ]
    # A daemon that does not load the module does not run its schedules.
    assert [c.key for c in schedules(settings_with([]))] == []


def test_a_bad_worker_cron_fails_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"BadCron.cron: bad cron expression '\* \* \*'"):
        class BadCron(Worker):
            topic = "cron"
            cron = "* * *"

    with pytest.raises(TypeError, match=r"BadType.cron must be a cron expression, a jobrunner\.Cron or a list"):
        class BadType(Worker):
            topic = "cron"
            cron = 5  # type: ignore[assignment]


# ---------------------------------------------------------------- one job per slot


def cron_settings(url: str, cron: list[dict[str, Any]], **runner: Any) -> Settings:
    return parse({"database": {"url": url}, "topics": CRON_TOPIC,
                  "runner": {"modules": ["tests.cron_workers"], **runner}, "cron": cron}, source="cron.toml")


def scheduled(job: Job) -> float:
    """The job's ``scheduled_at``, which every stored job has."""
    assert job.scheduled_at is not None, job
    return job.scheduled_at


def slot_jobs(runner: Runner) -> list[Job]:
    return sorted(runner.list_jobs(topic="cron", limit=100_000), key=scheduled)


def stored_slots(runner: Runner) -> list[tuple[str, int, int | None]]:
    with runner.store.db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(cron_slots).order_by(cron_slots.c.slot))]


@pytest.mark.anyio
@pytest.mark.parametrize("missed, expected", [("all", 12), ("latest", 1), ("skip", 1)])
async def test_missed_slots_after_downtime_follow_the_policy(any_db_url: str, missed: str, expected: int) -> None:
    runner = Runner(cron_settings(any_db_url, [{"worker": TICK, "schedule": "*/5 * * * *", "missed": missed,
                                                 "name": "five"}]))
    try:
        runner.migrate()
        announced: list[tuple[str, list[Job]]] = []
        entries = schedules(runner.settings)

        def scheduler(now: float) -> CronScheduler:
            made = CronScheduler(entries, runner.settings, runner.store, runner.in_thread, lambda: now,
                                 lambda name, jobs: announced.append((name, jobs)))
            made.since = at(2026, 1, 1, 8, 59, 59)  # the daemon started just before 09:00
            return made

        # A daemon inserted 09:00, then nothing ran until 10:00:30.
        assert await scheduler(at(2026, 1, 1, 9, 0, 10)).fire_due(at(2026, 1, 1, 9, 0, 10)) == at(2026, 1, 1, 9, 5, 0)
        announced.clear()
        now = at(2026, 1, 1, 10, 0, 30)
        assert await scheduler(now).fire_due(now) == at(2026, 1, 1, 10, 5, 0)
        inserted = [job for _, batch in announced for job in batch]
        assert len(inserted) == expected and inserted[-1].scheduled_at == at(2026, 1, 1, 10, 0, 0)
        assert all(name == "five" for name, _ in announced)
        assert [j.id for j in slot_jobs(runner)][1:] == [j.id for j in inserted]
        assert all(j.state == "available" and j.args == {} for j in inserted)
        # The same look again (another daemon, same instant) inserts nothing more.
        announced.clear()
        await scheduler(now).fire_due(now)
        assert announced == [] and len(slot_jobs(runner)) == expected + 1
        # Only the newest slot rows are kept: the table does not grow with the schedule's age.
        assert [row[1] for row in stored_slots(runner)][-1] == at(2026, 1, 1, 10, 0, 0)
        assert len(stored_slots(runner)) <= expected + 1
    finally:
        runner.store.close()


def plan_of(rows: list[tuple[int, NewJob]]) -> CronPlan:
    """A cron plan asking for ``rows``, whatever the newest stored slot."""
    return lambda last: rows


def test_concurrent_inserts_of_one_slot_store_one_job(any_db_url: str) -> None:
    settings = cron_settings(any_db_url, [{"worker": TICK, "schedule": "* * * * * *", "missed": "all"}])
    runners = [Runner(settings) for _ in range(4)]
    runners[0].migrate()
    entry = schedules(settings)[0]
    slots = list(range(at(2026, 1, 1, 0, 0, 1), at(2026, 1, 1, 0, 0, 21)))
    barrier = threading.Barrier(len(runners))
    inserted: list[list[int]] = [[] for _ in runners]

    def fire(index: int) -> None:
        runner = runners[index]
        barrier.wait(timeout=30)
        for slot in slots:  # every thread inserts every slot, one transaction each
            rows = [(slot, NewJob("cron", TICK, "{}", "available", 2, 0, 5, "[]", slot, slot))]
            done = runner.store.cron.insert_jobs(entry.key, plan_of(rows))
            inserted[index].extend(s for s, _ in done)

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(len(runners))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(s for found in inserted for s in found) == slots  # each slot once, by someone
        assert [j.scheduled_at for j in slot_jobs(runners[0])] == slots
    finally:
        for runner in runners:
            runner.store.close()


@pytest.mark.anyio
async def test_a_running_runner_inserts_each_slot_and_names_the_schedule(any_db_url: str) -> None:
    runner = Runner(cron_settings(any_db_url, [{"worker": TICK, "schedule": "* * * * * *", "args": {"n": 1},
                                                 "name": "every-second"}]))
    try:
        with EventRecorder("cron") as recorder:
            async with running(runner):
                inserted = await recorder.wait_count("job_inserted", 2, timeout=20)
                done = await recorder.wait_for("job_completed", lambda p: p["job"].id == job_of(inserted[1]).id)
        assert [e.payload["schedule"] for e in inserted] == ["every-second", "every-second"]
        assert scheduled(job_of(inserted[1])) - scheduled(job_of(inserted[0])) == 1
        assert done.payload["result"] == {"n": 1}
    finally:
        runner.store.close()


def write_config(path: Path, url: str, cron: str, extra: str = "") -> Path:
    path.write_text(
        f'[database]\nurl = "{url}"\n\n[runner]\nmodules = ["tests.cron_workers"]\nshutdown_grace = 1\n'
        f"heartbeat_interval = 0.5\nrescue_after = 5\n{extra}\n"
        '[topics.cron]\nparallelism = 2\npoll_interval = 0.1\n\n' + cron
    )
    return path


def test_several_daemons_insert_each_slot_once(any_db_url: str, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    config = write_config(tmp_path / "config.toml", any_db_url,
                          f'[[cron]]\nworker = "{TICK}"\nschedule = "* * * * * *"\nmissed = "all"\n')
    logs = [(tmp_path / f"d{i}.log").open("wb") for i in range(3)]
    daemons = [forkserver.spawn([PYTHON, "-m", "jobrunner", "--config", str(config), "run"], env=subprocess_env,
                                stdout=subprocess.DEVNULL, stderr=log) for log in logs]
    observer = Runner(cron_settings(any_db_url, []))
    try:
        observer.ensure_schema()
        deadline = time.monotonic() + 45
        first = None
        while True:  # until six slots were inserted after every daemon was up
            assert all(d.poll() is None for d in daemons), [p.read_text() for p in tmp_path.glob("d*.log")]
            assert time.monotonic() < deadline, "the daemons inserted too few slots"
            if first is None and slot_jobs(observer):
                first = max(scheduled(j) for j in slot_jobs(observer))
            if first is not None and max(scheduled(j) for j in slot_jobs(observer)) >= first + 6:
                break
            time.sleep(0.1)
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            daemon.wait(timeout=30)
        for log in logs:
            log.close()
    try:
        found = slot_jobs(observer)
        times = [int(scheduled(j)) for j in found]
        assert len(times) == len(set(times))  # never two jobs for one slot
        assert times == list(range(times[0], times[-1] + 1))  # missed = "all": no slot left out either
        assert all(j.scheduled_at == int(scheduled(j)) and j.worker == TICK for j in found)
        with observer.store.db.engine.connect() as conn:
            linked = conn.execute(sa.select(cron_slots.c.job_id, jobs.c.scheduled_at)
                                  .join(jobs, jobs.c.id == cron_slots.c.job_id)).all()
        assert linked and all(int(scheduled) in times for _, scheduled in linked)
    finally:
        observer.store.close()


# ---------------------------------------------------------------- python -m jobrunner cron


def test_cron_command_lists_next_runs_and_the_last_job(
    any_db_url: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    config = write_config(
        tmp_path / "config.toml", any_db_url,
        f'[[cron]]\nname = "ticks"\nworker = "{TICK}"\nschedule = "*/10 * * * *"\nargs = {{ n = 1 }}\n'
        'timezone = "Europe/Paris"\nmissed = "latest"\n\n'
        f'[[cron]]\nworker = "{TICK}"\nschedule = "@daily"\n')
    runner = Runner(cron_settings(any_db_url, [{"worker": TICK, "schedule": "*/10 * * * *", "name": "ticks",
                                                 "missed": "latest", "timezone": "Europe/Paris"}]))
    try:
        runner.migrate()
        scheduler = CronScheduler(schedules(runner.settings), runner.settings, runner.store, runner.in_thread,
                                  time.time, lambda name, jobs: None)
        scheduler.since = time.time() - 3600
        anyio.run(scheduler.fire_due, time.time())
        job = slot_jobs(runner)[-1]
    finally:
        runner.store.close()
    listed = run_cli(config, "cron", "--json", env=subprocess_env)
    assert listed.returncode == 0, listed.stderr
    ticks, daily = json.loads(listed.stdout)["schedules"]
    assert (ticks["name"], ticks["worker"], ticks["schedule"], ticks["timezone"], ticks["missed"], ticks["args"]) == (
        "ticks", TICK, "*/10 * * * *", "Europe/Paris", "latest", {"n": 1})
    assert len(ticks["next"]) == 3 and all(t.endswith(("+01:00", "+02:00")) for t in ticks["next"])
    assert ticks["last"]["job_id"] == job.id and ticks["last"]["state"] == "available"
    assert daily["name"] == f"{TICK} @daily" and daily["last"] is None
    text = run_cli(config, "cron", "--next", "2", env=subprocess_env)
    assert text.returncode == 0, text.stderr
    assert "ticks" in text.stdout and f"job {job.id} (available)" in text.stdout and "none yet" in text.stdout


def test_cron_command_and_run_refuse_a_bad_entry(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    config = write_config(tmp_path / "config.toml", f"sqlite:///{tmp_path / 'jobs.db'}",
                          '[[cron]]\nworker = "tests.cron_workers.Missing"\nschedule = "* * * * *"\n')
    for command in ("cron", "run"):
        result = run_cli(config, command, env=subprocess_env)
        assert result.returncode == 2
        assert "[[cron]] #1 (tests.cron_workers.Missing): key 'worker'" in result.stderr
