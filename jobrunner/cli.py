"""Command line: ``python -m jobrunner [--config PATH] [--log-level LEVEL] COMMAND``.

Commands: run (default), enqueue, stats, jobs, show, migrate, cancel, retry, pause,
resume, scale, events, copy, nodes, wait, cron, top. The global options may also follow
the command. Errors go to stderr; exit code 2 for usage, configuration and start-up
errors, 1 for other failures.

This module dispatches: it sets up logging, loads the configuration and runs the
command. The arguments are parsed by :mod:`jobrunner.cli_parser`; the commands but
``run`` and ``top`` are in :mod:`jobrunner.commands`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import commands, config as config_module, daemon, logs
from .cli_parser import ENV_BACKEND, ENV_LOG_LEVEL, build_parser, run_overrides
from .commands import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .errors import ConfigError, EnqueueError, JobrunnerError, StartupError, UnknownWorkerError, UsageError
from .threads import performs_in_threads

logger = logging.getLogger("jobrunner.cli")

#: A command whose stdout was closed early (``| head``) ends as if killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Libraries whose INFO lines stay out of the daemon's log unless the level is DEBUG.
CHATTY_LOGGERS = ("httpx", "httpcore", "hpack", "hypercorn", "jobrunner.http.server")


def cmd_top(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """The live per-topic table (rich is loaded only for this command)."""
    from .top import cmd_top as show_top

    return show_top(settings, ns)


# ---------------------------------------------------------------- run


def cmd_run(settings: config_module.Settings, ns: argparse.Namespace) -> int:
    """Run the daemon until SIGINT/SIGTERM."""
    if settings.source == config_module.NO_FILE and not settings.topics:
        raise UsageError(config_module.no_file_message(settings.base_dir))
    backend = ns.backend or os.environ.get(ENV_BACKEND) or "asyncio"
    if ns.backend is None and backend not in daemon.BACKENDS:
        raise UsageError(f"environment {ENV_BACKEND} must be one of {', '.join(daemon.BACKENDS)}, got {backend!r}")
    runner = daemon.prepare(settings, backend)
    logger.info("jobrunner starting: node %s, database %s, topics %s, HTTP %s", runner.node,
                settings.database.url, ", ".join(settings.topics) or "none", daemon.http_line(settings.http))
    daemon.serve(runner, backend)
    logger.info("jobrunner stopped")
    left = performs_in_threads()
    if left:
        # Jobs given up on (grace over, or a second signal) may still run a plain
        # `def perform` in a thread, which Python cannot stop and the interpreter would
        # wait for at exit. Their jobs are back in the table: exit now.
        logger.warning("exiting without waiting for %d abandoned perform thread(s)", left)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "enqueue": commands.cmd_enqueue,
    "stats": commands.cmd_stats,
    "jobs": commands.cmd_jobs,
    "show": commands.cmd_show,
    "migrate": commands.cmd_migrate,
    "cancel": commands.cmd_cancel,
    "retry": commands.cmd_retry,
    "pause": commands.cmd_pause,
    "resume": commands.cmd_resume,
    "scale": commands.cmd_scale,
    "events": commands.cmd_events,
    "copy": commands.cmd_copy,
    "nodes": commands.cmd_nodes,
    "top": cmd_top,
    "wait": commands.cmd_wait,
    "cron": commands.cmd_cron,
}


def log_level(ns: argparse.Namespace) -> int:
    """The numeric level of ``--log-level``, else ``$JOBRUNNER_LOG_LEVEL``, else INFO (names in any case)."""
    given, origin = ns.log_level, "--log-level"
    if given is None:
        given, origin = os.environ.get(ENV_LOG_LEVEL) or "INFO", f"environment {ENV_LOG_LEVEL}"
    name = given.strip().upper()
    name = "WARNING" if name == "WARN" else name
    if name not in LOG_LEVELS:
        raise UsageError(f"{origin} must be one of {', '.join(LOG_LEVELS)} (any case), got {given!r}")
    return int(getattr(logging, name))


def configure_logging(level: int) -> None:
    """One readable line per record on stderr; libraries' INFO lines only at DEBUG."""
    logs.configure(level, sys.stderr)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else max(level, logging.WARNING))


def _run_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    ns = parser.parse_args(argv)
    if ns.command is None:  # no command: run, with run's defaults
        ns = parser.parse_args([*argv, "run"])
    try:
        configure_logging(log_level(ns))
        overrides = run_overrides(ns) if ns.command == "run" else []
        settings = config_module.load(ns.config, overrides=overrides)
        return COMMANDS[ns.command](settings, ns)
    except (UsageError, ConfigError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (EnqueueError, UnknownWorkerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JobrunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    try:
        code = _run_command(parser, list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # inside the try: a closed pipe shows up here at the latest
        return code
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep the interpreter's
        # final flush from complaining about the same pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return 130



__all__ = [
    "CHATTY_LOGGERS", "COMMANDS", "ENV_BACKEND", "ENV_LOG_LEVEL", "EXIT_BROKEN_PIPE", "LOG_LEVELS", "build_parser",
    "cmd_run", "cmd_top", "configure_logging", "log_level", "main", "run_overrides",
]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
