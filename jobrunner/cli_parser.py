"""The arguments of ``python -m jobrunner``: the parser of every command, the checks of
option values, and the configuration keys that ``run``'s options set.

Parsing only: what each command does is in :mod:`jobrunner.cli` (dispatch) and
:mod:`jobrunner.commands`. A usage error exits with code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from . import daemon
from .commands import EXIT_USAGE
from .job import ALL_STATES, MAX_JOB_ID, RETRYABLE_STATES
from .operations import MAX_PARALLELISM
from .overrides import Override
from .priority import PriorityError, parse_priority_text

ENV_LOG_LEVEL = "JOBRUNNER_LOG_LEVEL"
ENV_BACKEND = "JOBRUNNER_BACKEND"


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


def _priority(text: str) -> int:
    try:
        return parse_priority_text(text)
    except PriorityError as exc:
        raise argparse.ArgumentTypeError(f"priority {exc}") from None


def _whole(what: str, highest: int) -> Callable[[str], int]:
    """The argument type of a whole number from 1 to ``highest``, called ``what`` in errors."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a {what} is a whole number, got {text!r}") from None
        if not 1 <= value <= highest:
            raise argparse.ArgumentTypeError(f"a {what} is between 1 and {highest}, got {text}")
        return value
    return parse


_job_id = _whole("job id", MAX_JOB_ID)
_parallelism = _whole("parallelism", MAX_PARALLELISM)


def _topic_count(text: str) -> tuple[str, int]:
    topic, sep, count = text.rpartition("=")
    try:
        if not sep or not topic:
            raise ValueError(text)
        return topic, int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TOPIC=N with N a whole number, got {text!r}") from None


def _host(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the host must not be empty")
    return text



def _interval(text: str) -> float:
    value = _finite(text)
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 3600 seconds, got {text!r}")
    return value


_interval.__name__ = "interval"


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--config and --log-level; accepted before the command (``default`` None) and after
    it (``default`` SUPPRESS, so an absent option keeps what was given before)."""
    parser.add_argument("--config", metavar="PATH", default=default,
                        help="configuration file (default: $JOBRUNNER_CONFIG, else ./config.toml)")
    parser.add_argument("--log-level", metavar="LEVEL", default=default,
                        help=f"DEBUG, INFO (default), WARNING or ERROR, any case (default: ${ENV_LOG_LEVEL})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m jobrunner``."""
    parser = _Parser(prog="python -m jobrunner", description="A supervised, topic-based job runner.")
    _add_global_options(parser, None)
    common = _Parser(add_help=False)
    _add_global_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    run = command("run", "run the daemon (the default command)")
    run.add_argument("--backend", choices=daemon.BACKENDS, help=f"event loop (default: ${ENV_BACKEND}, else asyncio)")
    run.add_argument("--http-host", type=_host, metavar="HOST", help="serve the HTTP API on HOST (enables it)")
    run.add_argument("--http-port", type=int, metavar="PORT", help="serve the HTTP API on PORT (enables it)")
    run.add_argument("--parallelism", type=_topic_count, action="append", default=[], metavar="TOPIC=N",
                     help="run at most N jobs of TOPIC at once (repeatable)")

    enqueue = command("enqueue", "store a job; prints its id")
    enqueue.add_argument("worker", metavar="WORKER",
                         help="import path of a Worker class, e.g. topics.demo.PrintSum; "
                              "any name with --topic EXTERNAL")
    enqueue.add_argument("--args", default="{}", metavar="JSON", help="the job's arguments as JSON (default {})")
    enqueue.add_argument("--priority", type=_priority, metavar="P",
                         help="0 (highest) .. 9, or critical, high, normal, low; default: the worker's or topic's")
    enqueue.add_argument("--delay", type=_finite, metavar="S", help="run no earlier than S seconds from now")
    enqueue.add_argument("--max-attempts", type=int, metavar="N", help="attempts before the job is discarded")
    enqueue.add_argument("--topic", metavar="T",
                         help="a topic declared external = true (WORKER is then any name), or the worker's own")
    enqueue.add_argument("--tag", action="append", default=[], metavar="TAG",
                         help="a tag to find the job by (repeatable)")
    enqueue.add_argument("--meta", metavar="JSON", help="a JSON object stored with the job (job.meta)")
    enqueue.add_argument("--unique", metavar="JSON",
                         help='insert no duplicate: {"period": S} with optional "keys" and "states"; '
                              "a duplicate prints the existing job's id (default: the worker's unique)")
    enqueue.add_argument("--depends-on", type=_job_id, action="append", default=[], metavar="ID",
                         help="run only after job ID completed (repeatable)")
    enqueue.add_argument("--on-dependency-failure", choices=("cancel", "run"),
                         help="when a dependency ends discarded or cancelled: cancel this job (default) or run it")

    stats = command("stats", "job counts per topic and state")
    stats.add_argument("--json", action="store_true", help="one JSON document")

    jobs = command("jobs", "list jobs, newest first")
    jobs.add_argument("--topic")
    jobs.add_argument("--state", choices=ALL_STATES)
    jobs.add_argument("--tag", help="only jobs with this tag")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true", help="one JSON document")

    show = command("show", "one job in full")
    show.add_argument("id", type=_job_id, metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON document")

    command("migrate", "apply pending schema migrations")

    cancel = command("cancel", "cancel a job that has not finished (a running one is interrupted)")
    cancel.add_argument("id", type=_job_id, metavar="ID")

    retry = command("retry", "make discarded or cancelled jobs available again")
    retry.add_argument("ids", type=_job_id, nargs="*", metavar="ID", help="job ids (or select with --topic/--state)")
    retry.add_argument("--topic", help="every retryable job of this topic")
    retry.add_argument("--state", choices=[s.value for s in RETRYABLE_STATES], action="append",
                       help="only jobs in this state (repeatable; default both)")

    pause = command("pause", "stop claiming jobs of a topic on every node")
    pause.add_argument("topic", metavar="TOPIC")
    resume = command("resume", "claim jobs of a paused topic again")
    resume.add_argument("topic", metavar="TOPIC")

    scale = command("scale", "set a topic's parallelism on every node, until scaled again (or --reset)")
    scale.add_argument("topic", metavar="TOPIC")
    scale.add_argument("parallelism", type=_parallelism, nargs="?", metavar="N",
                       help="jobs of TOPIC each node runs at once (1 to 10000)")
    scale.add_argument("--reset", action="store_true", help="go back to the configured parallelism")

    copy = command("copy", "copy every job to another database (--to URL) or from one (--from URL)")
    copy.add_argument("--to", metavar="URL", help="the database to copy the configured one into (migrated first)")
    copy.add_argument("--from", dest="source", metavar="URL", help="the database to copy into the configured one")
    copy.add_argument("--force", action="store_true",
                      help="replace the target's jobs, pauses and leases (a non-empty target is refused without it)")

    nodes = command("nodes", "live nodes: their topics, running jobs and last heartbeat")
    nodes.add_argument("--json", action="store_true", help="one JSON document")

    wait = command("wait", "wait until a job is final and print it; exit 0 completed, 3 discarded, "
                           "4 cancelled, 124 timed out, 1 unknown id")
    wait.add_argument("id", type=_job_id, metavar="ID")
    wait.add_argument("--timeout", type=_finite, metavar="S", help="give up after S seconds (default: no limit)")
    wait.add_argument("--json", action="store_true", help="the final job as one JSON document")

    schedules = command("cron", "list cron schedules: next runs and the last job each inserted")
    schedules.add_argument("--next", type=int, default=3, metavar="N", help="how many next runs to show (default 3)")
    schedules.add_argument("--json", action="store_true", help="one JSON document")

    tail = command("events", "print the running daemon's events as they happen (needs [http])")
    tail.add_argument("--topic", help="only this topic's events")

    top = command("top", "a live per-topic table in the terminal, read from the database (q or Ctrl-C quits)")
    top.add_argument("--interval", type=_interval, default=1.0, metavar="S",
                     help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true", help="print the table once and exit")
    return parser


def run_overrides(ns: argparse.Namespace) -> list[Override]:
    """The configuration keys set by ``run``'s options (they win over file and environment)."""
    found: list[Override] = []
    for flag, key in (("--http-host", "host"), ("--http-port", "port")):
        value = getattr(ns, flag[2:].replace("-", "_"), None)
        if value is not None:
            found += [Override(f"option {flag}", ("http", key), value),
                      Override(f"option {flag}", ("http", "enabled"), True)]
    for topic, count in getattr(ns, "parallelism", None) or ():
        found.append(Override(f"option --parallelism {topic}={count}", ("topics", topic, "parallelism"), count))
    return found



__all__ = ["ENV_BACKEND", "ENV_LOG_LEVEL", "build_parser", "run_overrides"]
