"""The commands of ``python -m jobrunner`` that work on the jobs table (all but ``run``).

Each takes the loaded settings and the parsed arguments, prints its result on stdout
(the tables and lines are in :mod:`jobrunner.cli_output`) and returns the exit code;
errors are raised (see :func:`jobrunner.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy.engine import make_url

from . import config as config_module, cron, payload
from .cli_output import event_line, print_job, print_jobs, print_nodes, print_schedules, print_stats
from .errors import JobNotFoundError, UsageError, WaitTimeoutError
from .job import RETRYABLE_STATES, Job
from .runner import Runner, import_modules

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _open(settings: config_module.Settings) -> Runner:
    runner = Runner(settings)
    runner.ensure_schema()  # migrates a new database unless [database] auto_migrate = false
    return runner


def _json_option(text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"{option} is nested too deeply to decode (job values nest at most "
                         f"{payload.MAX_DEPTH} levels)") from None


def cmd_enqueue(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Store one job and print its id (a duplicate of a unique job: the existing job's id,
    with a note on stderr)."""
    args = _json_option(ns.args, "--args")
    meta = _json_option(ns.meta, "--meta")
    unique = _json_option(ns.unique, "--unique")
    import_modules(settings)
    runner = _open(settings)
    job = runner.enqueue(
        ns.worker, args, priority=ns.priority, delay=ns.delay, max_attempts=ns.max_attempts, topic=ns.topic,
        tags=ns.tag or None, meta=meta, unique=unique, depends_on=ns.depends_on or None,
        on_dependency_failure=ns.on_dependency_failure,
    )
    # One write for the line: print() writes the id and the newline apart, and output
    # shared with a daemon started from the same shell could fall in between.
    sys.stdout.write(f"{job.id}\n")
    if job.duplicate:
        print(f"duplicate: job {job.id} ({job.state}) matches; nothing inserted", file=sys.stderr)
    return EXIT_OK


def cmd_stats(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Print counts per topic and state."""
    print_stats(_open(settings).stats(), ns.json)
    return EXIT_OK


def cmd_jobs(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """List jobs, newest first."""
    if ns.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {ns.limit}")
    print_jobs(_open(settings).list_jobs(topic=ns.topic, state=ns.state, tag=ns.tag, limit=ns.limit), ns.json)
    return EXIT_OK


def cmd_show(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Print one job in full."""
    runner = _open(settings)
    job = runner.get_job(ns.id)
    if job is None:
        print(f"error: no job with id {ns.id}", file=sys.stderr)
        return EXIT_FAILURE
    _print_job(runner, job, ns.json)
    return EXIT_OK


def _print_job(runner: Runner, job: Job, as_json: bool) -> None:
    data = runner.job_in_full(job)
    print_job(job, data if as_json else {**data, **runner.job_links(job.id)}, as_json)


#: Exit codes of ``wait`` by the job's final state (completed: 0), and when it timed out.
EXIT_WAIT = {"completed": EXIT_OK, "discarded": 3, "cancelled": 4}
EXIT_TIMEOUT = 124


def cmd_wait(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Wait until a job is final, print it, and exit by its state."""
    if ns.timeout is not None and ns.timeout < 0:
        raise UsageError(f"--timeout must be a number of seconds >= 0, got {ns.timeout:g}")
    runner = _open(settings)
    try:
        job = runner.wait(ns.id, timeout=ns.timeout)
    except JobNotFoundError:
        print(f"error: no job with id {ns.id}", file=sys.stderr)
        return EXIT_FAILURE
    except WaitTimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    _print_job(runner, job, ns.json)
    return EXIT_WAIT[job.state]


def cmd_cron(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """List the cron schedules with their next runs and the last job each inserted."""
    if ns.next < 1:
        raise UsageError(f"--next must be at least 1, got {ns.next}")
    import_modules(settings)
    entries = cron.schedules(settings)
    runner = _open(settings)
    print_schedules(cron.describe(entries, runner.store, runner.clock(), ns.next), ns.json)
    return EXIT_OK


def cmd_migrate(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Apply pending migrations and say which."""
    runner = Runner(settings)
    applied = runner.migrate()
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        print("schema is up to date")
    return EXIT_OK


def cmd_cancel(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Cancel one job."""
    job = _open(settings).cancel_job(ns.id)
    if job is None:
        print(f"error: no job with id {ns.id}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"job {job.id} cancelled")
    return EXIT_OK


def cmd_retry(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Retry jobs by id or by topic and state."""
    if not ns.ids and ns.topic is None and not ns.state:
        raise UsageError("give job ids, or select jobs with --topic and/or --state")
    states = ns.state or RETRYABLE_STATES
    retried = _open(settings).retry_jobs(ns.ids or None, topic=ns.topic, states=states)
    missing = sorted(set(ns.ids) - set(retried))
    print(f"{len(retried)} job(s) retried" + (f": {' '.join(map(str, retried))}" if retried else ""))
    if missing:
        print(f"error: not retryable (unknown, or not discarded/cancelled): {' '.join(map(str, missing))}",
              file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_pause(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Pause a topic."""
    _open(settings).pause(ns.topic)
    print(f"topic {ns.topic} paused")
    return EXIT_OK


def cmd_resume(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Resume a topic."""
    _open(settings).resume(ns.topic)
    print(f"topic {ns.topic} resumed")
    return EXIT_OK


def cmd_scale(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Scale a topic on every node (or go back to its configured parallelism)."""
    if (ns.parallelism is None) == (not ns.reset):
        raise UsageError("scale: give either N (the new parallelism) or --reset (back to the configured value)")
    now = _open(settings).scale(ns.topic, None if ns.reset else ns.parallelism)
    if ns.reset:
        print(f"topic {ns.topic} back to its configured parallelism {now} on every node")
    else:
        print(f"topic {ns.topic} scaled to parallelism {now} on every node")
    return EXIT_OK


def cmd_copy(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Copy every job (and pause, and lease) to ``--to URL`` or from ``--from URL``."""
    from .storage.copying import copy_database

    if (ns.to is None) == (ns.source is None):
        raise UsageError("give exactly one of --to URL (copy the configured database there) "
                         "or --from URL (copy that database into the configured one)")
    here = settings.database.url
    source, target = (here, ns.to) if ns.to is not None else (ns.source, here)
    report = copy_database(source, target, replace=ns.force)
    shown = make_url(target).render_as_string(hide_password=True)
    print(f"copied {report.jobs} job(s), {report.topics} topic control(s), {report.leases} lease(s) to {shown}; "
          f"next job id {report.next_id}")
    return EXIT_OK


def cmd_nodes(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """List live nodes: topics, running jobs, last heartbeat."""
    import time

    runner = _open(settings)
    now = time.time()
    print_nodes(runner.store.nodes.listing(now - settings.runner.rescue_after), now, ns.json)
    return EXIT_OK


def cmd_events(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Tail the daemon's event stream."""
    import httpx

    http = settings.http
    host = f"[{http.host}]" if ":" in http.host else http.host
    url = f"http://{host}:{http.port}/events"
    headers = {"Authorization": f"Bearer {http.token}"} if http.token else {}
    params = {"topic": ns.topic} if ns.topic else {}
    try:
        with httpx.stream("GET", url, params=params, headers=headers, timeout=httpx.Timeout(10, read=None)) as response:
            if response.status_code != 200:
                response.read()
                print(f"error: {url} answered {response.status_code}: {response.text.strip()}", file=sys.stderr)
                return EXIT_FAILURE
            for line in response.iter_lines():
                if line.startswith("data: "):
                    print(event_line(json.loads(line[6:])), flush=True)
    except httpx.TransportError as exc:
        print(f"error: cannot reach the daemon at {url} ({exc}); is it running with [http] enabled = true?",
              file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


__all__ = [
    "EXIT_FAILURE", "EXIT_OK", "EXIT_TIMEOUT", "EXIT_USAGE", "EXIT_WAIT", "cmd_cancel", "cmd_copy", "cmd_cron",
    "cmd_enqueue", "cmd_events", "cmd_jobs", "cmd_migrate", "cmd_nodes", "cmd_pause", "cmd_resume", "cmd_retry",
    "cmd_scale", "cmd_show", "cmd_stats", "cmd_wait",
]
