"""Command line: ``python -m jobrunner [--config PATH] COMMAND``.

Commands: run (default), enqueue, stats, jobs, show, migrate, cancel, retry, pause,
resume. Errors go to stderr;
exit code 2 for usage and configuration errors, 1 for other failures.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
from typing import Any, Sequence

import anyio

from . import config as config_module
from . import payload
from .errors import ConfigError, EnqueueError, JobrunnerError, UnknownWorkerError
from .job import ALL_STATES, Job, iso
from .runner import Runner, import_modules

logger = logging.getLogger("jobrunner.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A command-line argument is invalid."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own usage errors: exit 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_finite.__name__ = "number"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m jobrunner``."""
    parser = _Parser(prog="python -m jobrunner", description="A supervised, topic-based job runner.")
    parser.add_argument("--config", metavar="PATH", help="configuration file (default: $JOBRUNNER_CONFIG or ./config.toml)")
    parser.add_argument("--log-level", default=os.environ.get("JOBRUNNER_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO (default), WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run the daemon (the default command)")
    run.add_argument("--backend", choices=("asyncio", "trio"), default=os.environ.get("JOBRUNNER_BACKEND", "asyncio"))

    enqueue = sub.add_parser("enqueue", help="store a job; prints its id")
    enqueue.add_argument("worker", metavar="WORKER", help="import path of a Worker class, e.g. topics.demo.PrintSum")
    enqueue.add_argument("--args", default="{}", metavar="JSON", help="the job's arguments as JSON (default {})")
    enqueue.add_argument("--priority", type=int, help="0 (highest) .. 9; default: the worker's or topic's")
    enqueue.add_argument("--delay", type=_finite, metavar="S", help="run no earlier than S seconds from now")
    enqueue.add_argument("--max-attempts", type=int, metavar="N", help="attempts before the job is discarded")

    stats = sub.add_parser("stats", help="job counts per topic and state")
    stats.add_argument("--json", action="store_true", help="one JSON document")

    jobs = sub.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--topic")
    jobs.add_argument("--state", choices=ALL_STATES)
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true", help="one JSON document")

    show = sub.add_parser("show", help="one job in full")
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON document")

    sub.add_parser("migrate", help="apply pending schema migrations")

    cancel = sub.add_parser("cancel", help="cancel a job that has not finished (a running one is interrupted)")
    cancel.add_argument("id", type=int, metavar="ID")

    retry = sub.add_parser("retry", help="make discarded or cancelled jobs available again")
    retry.add_argument("ids", type=int, nargs="*", metavar="ID", help="job ids (or select with --topic/--state)")
    retry.add_argument("--topic", help="every retryable job of this topic")
    retry.add_argument("--state", choices=("discarded", "cancelled"), action="append",
                       help="only jobs in this state (repeatable; default both)")

    pause = sub.add_parser("pause", help="stop claiming jobs of a topic on every node")
    pause.add_argument("topic", metavar="TOPIC")
    resume = sub.add_parser("resume", help="claim jobs of a paused topic again")
    resume.add_argument("topic", metavar="TOPIC")

    tail = sub.add_parser("events", help="print the running daemon's events as they happen (needs [http])")
    tail.add_argument("--topic", help="only this topic's events")
    return parser


# ---------------------------------------------------------------- commands


def _open(settings: config_module.Settings) -> Runner:
    runner = Runner(settings)
    runner.migrate()
    return runner


def cmd_enqueue(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Store one job and print its id."""
    try:
        args = json.loads(ns.args)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError("--args is nested too deeply to decode (job arguments nest at most "
                         f"{payload.MAX_DEPTH} levels)") from None
    import_modules(settings)
    runner = _open(settings)
    job = runner.enqueue(
        ns.worker, args, priority=ns.priority, delay=ns.delay, max_attempts=ns.max_attempts
    )
    print(job.id)
    return EXIT_OK


def cmd_stats(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Print counts per topic and state."""
    counts = _open(settings).stats()
    if ns.json:
        print(json.dumps({"topics": counts}))
        return EXIT_OK
    width = max([len("topic"), *map(len, counts)])
    print("topic".ljust(width) + "".join(f"{s:>11}" for s in ALL_STATES))
    for topic, by_state in sorted(counts.items()):
        print(topic.ljust(width) + "".join(f"{by_state[s]:>11}" for s in ALL_STATES))
    return EXIT_OK


def _job_line(job: Job) -> str:
    when = iso(job.completed_at or job.discarded_at or job.cancelled_at or job.scheduled_at) or ""
    return (f"{job.id:>8}  {job.topic:<12} {job.state:<10} p{job.priority} "
            f"{job.attempt}/{job.max_attempts:<3} {when[:19]:<19}  {job.worker}")


def cmd_jobs(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """List jobs, newest first."""
    if ns.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {ns.limit}")
    found = _open(settings).store.list_jobs(topic=ns.topic, state=ns.state, limit=ns.limit)
    if ns.json:
        print(json.dumps({"jobs": [j.to_dict() for j in found]}))
        return EXIT_OK
    print(f"{'id':>8}  {'topic':<12} {'state':<10} pri att   {'when (UTC)':<19}  worker")
    for job in found:
        print(_job_line(job))
    return EXIT_OK


def cmd_show(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Print one job in full."""
    job = _open(settings).get_job(ns.id)
    if job is None:
        print(f"error: no job with id {ns.id}", file=sys.stderr)
        return EXIT_FAILURE
    data = job.to_dict()
    if ns.json:
        print(json.dumps(data))
        return EXIT_OK
    for key, value in data.items():
        if key == "errors":
            continue
        print(f"{key:>13}: {json.dumps(value) if key in ('args', 'result') else value}")
    for entry in job.errors:
        print(f"\n-- attempt {entry.get('attempt')} at {entry.get('at')}: {entry.get('error')}")
        if entry.get("note"):
            print(f"   note: {entry['note']}")
        if entry.get("traceback"):
            print(entry["traceback"].rstrip())
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
    states = ns.state or ("discarded", "cancelled")
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


def _event_line(data: dict[str, Any]) -> str:
    job = data.get("job")
    parts = [data.get("event", "?"), f"{'node' if str(data.get('event')).startswith('runner_') else 'topic'}={data.get('sender')}"]
    if isinstance(job, dict):
        parts += [f"id={job.get('id')}", f"state={job.get('state')}", f"worker={job.get('worker')}",
                  f"attempt={job.get('attempt')}/{job.get('max_attempts')}"]
    for key, value in data.items():
        if key not in ("event", "sender", "job") and value is not None:
            parts.append(f"{key}={value}")
    return " ".join(parts)


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
                    print(_event_line(json.loads(line[6:])), flush=True)
    except httpx.TransportError as exc:
        print(f"error: cannot reach the daemon at {url} ({exc}); is it running with [http] enabled = true?",
              file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


async def _serve(runner: Runner) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if runner.running and not tg.cancel_scope.cancel_called:
                    if getattr(runner, "_stop_requested", None) is not None and runner._stop_requested.is_set():
                        logger.warning("%s again: cancelling running jobs now (they go back to the table)", name)
                        tg.cancel_scope.cancel()
                        return
                    logger.info("%s received: stopping (running jobs get %gs)", name,
                                runner.settings.runner.shutdown_grace)
                    tg.start_soon(_stop_then_cancel, runner, tg.cancel_scope)


async def _stop_then_cancel(runner: Runner, scope: anyio.CancelScope) -> None:
    await runner.stop()
    scope.cancel()


def cmd_run(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Run the daemon until SIGINT/SIGTERM."""
    runner = Runner(settings)
    logger.info("jobrunner starting: node %s, database %s, topics %s", runner.node,
                settings.database.url, ", ".join(settings.topics) or "none")
    anyio.run(_serve, runner, backend=ns.backend)
    logger.info("jobrunner stopped")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "enqueue": cmd_enqueue,
    "stats": cmd_stats,
    "jobs": cmd_jobs,
    "show": cmd_show,
    "migrate": cmd_migrate,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "events": cmd_events,
}


def configure_logging(level: str) -> None:
    """One readable line per record on stderr."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise UsageError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    logging.basicConfig(
        level=numeric, stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    command = ns.command or "run"
    if ns.command is None:
        ns.backend = os.environ.get("JOBRUNNER_BACKEND", "asyncio")
    try:
        configure_logging(ns.log_level)
        settings = config_module.load(ns.config)
        return COMMANDS[command](settings, ns)
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (EnqueueError, UnknownWorkerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JobrunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
