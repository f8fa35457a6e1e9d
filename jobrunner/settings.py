"""The configuration of a runner as frozen dataclasses (what :mod:`jobrunner.config` parses).

One class per table of ``config.toml``: ``[database]``, ``[runner]``, ``[http]``, each
``[topics.NAME]`` (with its backoff and limits), and :class:`Settings` holding them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError
from .limits import GlobalParallelism, RateLimit, TopicLimits
from .schedule import Cron

DEFAULT_CONFIG_FILE = "config.toml"
ENV_CONFIG = "JOBRUNNER_CONFIG"
ENV_DATABASE_URL = "JOBRUNNER_DATABASE_URL"
#: The source of settings built when no configuration file was found.
NO_FILE = "<defaults>"

BACKOFF_STRATEGIES = ("exponential", "linear", "constant")
SYNCHRONOUS_LEVELS = ("FULL", "NORMAL", "EXTRA", "OFF")
#: The values of ``[database] sqlite_library`` (see :mod:`jobrunner.storage.sqlite_library`).
SQLITE_LIBRARIES = ("sqlite3", "pysqlite3")


@dataclass(frozen=True, slots=True)
class BackoffSettings:
    """How long a failed job waits before its next attempt.

    ``base`` is the delay before the first retry; exponential waits base·2^(n-1)
    before retry n, linear base·n, constant base; never more than ``max``;
    ``jitter`` spreads each delay by ± that fraction.
    """

    strategy: str = "exponential"
    base: float = 1.0
    max: float = 32.0
    jitter: float = 0.1


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """One topic: its parallelism, default priority, poll interval and backoff.

    An ``external`` topic is worked by programs outside the runner through the HTTP
    API (claim with a lease, then complete or fail); the runner starts no producer for
    it but still applies its parallelism, priority and backoff. ``options`` is a free
    table for the topic's workers (``Worker.options``), e.g. the commands a shell
    topic may run or a webhook signing secret. ``global_parallelism`` and
    ``rate_limit`` are limits across every node (:mod:`jobrunner.limits`).
    """

    name: str
    parallelism: int = 4
    priority: int = 2
    poll_interval: float = 1.0
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    external: bool = False
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    global_parallelism: GlobalParallelism | None = None
    rate_limit: RateLimit | None = None

    @property
    def limits(self) -> TopicLimits | None:
        """The limits across nodes a claim of this topic obeys; None when it has none."""
        if self.global_parallelism is None and self.rate_limit is None:
            return None
        return TopicLimits(self.global_parallelism, self.rate_limit)


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """Where the jobs live and how SQLite commits.

    ``synchronous`` is SQLite's ``PRAGMA synchronous``: FULL (default) makes every
    acknowledged write survive a power loss; NORMAL survives a process crash only.
    ``busy_timeout`` is how long (seconds) a writer waits for another process's lock.
    ``watch_interval`` is how often (seconds) a running runner checks whether another
    process committed, so their inserts start without waiting for the poll (0: never).
    ``auto_migrate``: a Runner brings an unmigrated (or older) schema up to date before
    its first use of the database; false makes that an error instead.
    ``sqlite_library`` picks the SQLite library: Python's ``sqlite3`` (the default) or
    ``pysqlite3`` (a current SQLite bundled; see :mod:`jobrunner.storage.sqlite_library`).
    """

    url: str = "sqlite:///jobrunner.db"
    synchronous: str = "FULL"
    busy_timeout: float = 5.0
    watch_interval: float = 0.01
    auto_migrate: bool = True
    sqlite_library: str = "sqlite3"


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """Process-wide runner options.

    Every ``heartbeat_interval`` seconds a runner records that it is alive and rescues
    the jobs left ``executing`` by runners silent for ``rescue_after`` seconds. Every
    ``prune_interval`` seconds it deletes finished jobs older than ``prune_after``
    seconds (0: keep them forever), ``prune_limit`` rows per transaction. Every
    ``summary_interval`` seconds (0: never) each active topic's throughput is logged.
    ``log_jobs`` false leaves out the log lines of jobs that went well (completed,
    snoozed); their events are still sent, and every other event is still logged.
    """

    modules: tuple[str, ...] = ()
    shutdown_grace: float = 15.0
    max_restarts: int = 5
    restart_window: float = 60.0
    node: str | None = None
    heartbeat_interval: float = 5.0
    rescue_after: float = 60.0
    prune_after: float = 7 * 24 * 3600.0
    prune_interval: float = 60.0
    prune_limit: int = 10_000
    summary_interval: float = 60.0
    log_jobs: bool = True


ENV_HTTP_TOKEN = "JOBRUNNER_HTTP_TOKEN"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The HTTP API of the daemon (off by default).

    ``token`` (or env ``JOBRUNNER_HTTP_TOKEN``) is required as ``Authorization: Bearer``
    on every request when set; binding a non-loopback host without one is refused.
    ``max_body`` bounds request bodies (bytes), ``max_wait`` the long-poll of a claim or a job read
    (seconds), ``lease`` the default lease an external worker gets on a job (seconds).
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8630
    token: str | None = None
    max_body: int = 1_048_576
    max_wait: float = 60.0
    lease: float = 60.0


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration of a runner."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    topics: Mapping[str, TopicSettings] = field(default_factory=dict)
    http: HttpSettings = field(default_factory=HttpSettings)
    #: The ``[[cron]]`` entries (periodic jobs), in file order.
    cron: tuple[Cron, ...] = ()
    source: str = NO_FILE
    base_dir: Path | None = None

    def topic(self, name: str) -> TopicSettings:
        """The settings of topic ``name``; ConfigError when it is not configured."""
        try:
            return self.topics[name]
        except KeyError:
            configured = ", ".join(sorted(self.topics)) or "none"
            hint = f"; {no_file_message(self.base_dir)}" if self.source == NO_FILE else ""
            raise ConfigError(
                f"{self.source}: topic {name!r} is not configured (configured topics: {configured}){hint}"
            ) from None


def no_file_message(base_dir: Path | None = None) -> str:
    """Says that no configuration file was found, where one was looked for, and how to give one."""
    looked = (base_dir or Path.cwd()) / DEFAULT_CONFIG_FILE
    return (f"no configuration file found (looked for {looked}); "
            f"give one with --config PATH or {ENV_CONFIG}=PATH")


__all__ = [
    "BACKOFF_STRATEGIES", "DEFAULT_CONFIG_FILE", "ENV_CONFIG", "ENV_DATABASE_URL", "ENV_HTTP_TOKEN", "LOOPBACK_HOSTS",
    "NO_FILE", "SQLITE_LIBRARIES", "SYNCHRONOUS_LEVELS", "BackoffSettings", "DatabaseSettings", "HttpSettings",
    "RunnerSettings", "Settings", "TopicSettings", "no_file_message",
]
