"""Configuration: a TOML file plus environment overrides, parsed into the frozen
dataclasses of :mod:`jobrunner.settings` (re-exported here).

Every key has a default. An unknown key or a value of the wrong type raises
:class:`ConfigError` naming the file (or the environment variable or command-line
option that set the key), the table and the key. See :mod:`jobrunner.overrides` for
the ``JOBRUNNER_<TABLE>__<KEY>`` environment scheme.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import overrides as overrides_module
from .config_checks import MAX_NUMBER, Where, at_least, check, one_of, reject_unknown, subtable
from .cron_config import parse_entries as parse_cron
from .errors import ConfigError
from .limits import PARTITION_FORM, GlobalParallelism, RateLimit
from .overrides import Override
from .priority import PriorityError, parse_priority
from .settings import (
    BACKOFF_STRATEGIES,
    DEFAULT_CONFIG_FILE,
    ENV_CONFIG,
    ENV_DATABASE_URL,
    ENV_HTTP_TOKEN,
    LOOPBACK_HOSTS,
    NO_FILE,
    SQLITE_LIBRARIES,
    SYNCHRONOUS_LEVELS,
    BackoffSettings,
    DatabaseSettings,
    HttpSettings,
    RunnerSettings,
    Settings,
    TopicSettings,
    no_file_message,
)

# ---------------------------------------------------------------- parsing


def _parse_backoff(where: Where, raw: Mapping[str, Any]) -> BackoffSettings:
    kinds = {"strategy": str, "base": float, "max": float, "jitter": float}
    reject_unknown(where, raw, set(kinds))
    values = {k: check(where, k, v, kinds[k]) for k, v in raw.items()}
    settings = BackoffSettings(**values)
    one_of(where, "strategy", settings.strategy, BACKOFF_STRATEGIES)
    at_least(where, "base", settings.base, 0)
    at_least(where, "max", settings.max, 0)
    if not 0 <= settings.jitter <= 1:
        raise ConfigError(f"{where.at('jitter')}: key 'jitter' must be between 0 and 1, got {settings.jitter!r}")
    return settings


def _parse_partition(where: Where, raw: Mapping[str, Any]) -> str | None:
    if "partition" not in raw:
        return None
    value = raw["partition"]
    found = PARTITION_FORM.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise ConfigError(f"{where.at('partition')}: key 'partition' must be \"args.KEY\" (KEY a top-level "
                          f"key of the job's args: letters, digits, _ or -), got {value!r}")
    return found.group(1)


def _parse_global_parallelism(where: Where, raw: Any) -> GlobalParallelism:
    """``global_parallelism = N`` or ``{ allowed = N, partition = "args.KEY" }``."""
    if not isinstance(raw, dict):
        allowed = check(where, "global_parallelism", raw, int)
        at_least(where, "global_parallelism", allowed, 1)
        return GlobalParallelism(allowed)
    inner = where.child("global_parallelism", f"{where.label} global_parallelism")
    reject_unknown(inner, raw, {"allowed", "partition"})
    if "allowed" not in raw:
        raise ConfigError(f"{inner}: key 'allowed' is required (the most jobs executing at once)")
    allowed = check(inner, "allowed", raw["allowed"], int)
    at_least(inner, "allowed", allowed, 1)
    return GlobalParallelism(allowed, _parse_partition(inner, raw))


def _parse_rate_limit(where: Where, raw: Any) -> RateLimit:
    """``rate_limit = { allowed = N, period = S, partition = "args.KEY" }``."""
    inner = where.child("rate_limit", f"{where.label} rate_limit")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.at('rate_limit')}: key 'rate_limit' must be a table like "
                          f"{{ allowed = 10, period = 1.0 }}, got {type(raw).__name__} {raw!r}")
    reject_unknown(inner, raw, {"allowed", "period", "partition"})
    missing = [key for key in ("allowed", "period") if key not in raw]
    if missing:
        raise ConfigError(f"{inner}: key {missing[0]!r} is required "
                          "(at most 'allowed' jobs start in any window of 'period' seconds)")
    allowed = check(inner, "allowed", raw["allowed"], int)
    period = check(inner, "period", raw["period"], float)
    at_least(inner, "allowed", allowed, 1)
    at_least(inner, "period", period, 0, strict=True)
    return RateLimit(allowed, period, _parse_partition(inner, raw))


def _parse_topic(root: Where, name: str, raw: Any) -> TopicSettings:
    topics = root.child("topics", "[topics]")
    where = topics.child(name, f"[topics.{name}]")
    raw = subtable(topics, name, raw)
    kinds = {"parallelism": int, "poll_interval": float, "external": bool}
    reject_unknown(where, raw, set(kinds) | {"priority", "backoff", "options", "global_parallelism", "rate_limit"})
    values: dict[str, Any] = {k: check(where, k, v, kinds[k]) for k, v in raw.items() if k in kinds}
    if "priority" in raw:
        try:
            values["priority"] = parse_priority(raw["priority"])
        except PriorityError as exc:
            raise ConfigError(f"{where.at('priority')}: key 'priority' {exc}") from None
    if "options" in raw:
        values["options"] = MappingProxyType(dict(subtable(where, "options", raw["options"])))
    if "backoff" in raw:
        values["backoff"] = _parse_backoff(
            where.child("backoff", f"[topics.{name}] backoff"), subtable(where, "backoff", raw["backoff"])
        )
    if "global_parallelism" in raw:
        values["global_parallelism"] = _parse_global_parallelism(where, raw["global_parallelism"])
    if "rate_limit" in raw:
        values["rate_limit"] = _parse_rate_limit(where, raw["rate_limit"])
    settings = TopicSettings(name=name, **values)
    at_least(where, "parallelism", settings.parallelism, 1)
    at_least(where, "poll_interval", settings.poll_interval, 0, strict=True)
    return settings


def _parse_database(root: Where, raw: Mapping[str, Any]) -> DatabaseSettings:
    where = root.child("database", "[database]")
    kinds = {"url": str, "synchronous": str, "busy_timeout": float, "watch_interval": float,
             "auto_migrate": bool, "sqlite_library": str}
    reject_unknown(where, raw, set(kinds))
    values = {k: check(where, k, v, kinds[k]) for k, v in raw.items()}
    settings = DatabaseSettings(**values)
    level = settings.synchronous.upper()
    one_of(where, "synchronous", level, SYNCHRONOUS_LEVELS, given=settings.synchronous)
    one_of(where, "sqlite_library", settings.sqlite_library, SQLITE_LIBRARIES)
    at_least(where, "busy_timeout", settings.busy_timeout, 0)
    at_least(where, "watch_interval", settings.watch_interval, 0)
    return dataclasses.replace(settings, synchronous=level)


def _parse_runner(root: Where, raw: Mapping[str, Any]) -> RunnerSettings:
    where = root.child("runner", "[runner]")
    kinds = {
        "shutdown_grace": float,
        "max_restarts": int,
        "restart_window": float,
        "node": str,
        "heartbeat_interval": float,
        "rescue_after": float,
        "prune_after": float,
        "prune_interval": float,
        "prune_limit": int,
        "summary_interval": float,
        "log_jobs": bool,
    }
    reject_unknown(where, raw, set(kinds) | {"modules"})
    values: dict[str, Any] = {k: check(where, k, v, kinds[k]) for k, v in raw.items() if k in kinds}
    if "modules" in raw:
        modules = raw["modules"]
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise ConfigError(f"{where.at('modules')}: key 'modules' must be a list of strings, got {modules!r}")
        values["modules"] = tuple(modules)
    settings = RunnerSettings(**values)
    at_least(where, "shutdown_grace", settings.shutdown_grace, 0)
    at_least(where, "max_restarts", settings.max_restarts, 0)
    at_least(where, "restart_window", settings.restart_window, 0, strict=True)
    at_least(where, "heartbeat_interval", settings.heartbeat_interval, 0, strict=True)
    at_least(where, "prune_after", settings.prune_after, 0)
    at_least(where, "prune_interval", settings.prune_interval, 0, strict=True)
    at_least(where, "prune_limit", settings.prune_limit, 1)
    at_least(where, "summary_interval", settings.summary_interval, 0)
    if settings.rescue_after < 2 * settings.heartbeat_interval:
        raise ConfigError(
            f"{where.at('rescue_after', 'heartbeat_interval')}: "
            "key 'rescue_after' must be at least twice 'heartbeat_interval' "
            f"({2 * settings.heartbeat_interval:g}), got {settings.rescue_after:g}: a live node would look dead"
        )
    return settings


def _parse_http(root: Where, raw: Mapping[str, Any]) -> HttpSettings:
    where = root.child("http", "[http]")
    kinds = {"enabled": bool, "host": str, "port": int, "token": str, "max_body": int,
             "max_wait": float, "lease": float}
    reject_unknown(where, raw, set(kinds))
    values = {k: check(where, k, v, kinds[k]) for k, v in raw.items()}
    if values.get("token") == "":
        values["token"] = None
    token = values.get("token")
    if token is not None and not all("!" <= c <= "~" for c in token):
        # HTTP headers carry bytes that clients encode differently beyond ASCII.
        raise ConfigError(f"{where.at('token')}: key 'token' must be printable ASCII without spaces "
                          "(characters ! to ~), so every client sends it the same way")
    settings = HttpSettings(**values)
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"{where.at('port')}: key 'port' must be between 0 and 65535, got {settings.port}")
    at_least(where, "max_body", settings.max_body, 1)
    at_least(where, "max_wait", settings.max_wait, 0)
    at_least(where, "lease", settings.lease, 0, strict=True)
    if settings.enabled and settings.host not in LOOPBACK_HOSTS and not settings.token:
        raise ConfigError(
            f"{where.at('token', 'host', 'enabled')}: "
            f"key 'token' is required to serve on the non-loopback host {settings.host!r} "
            f"(set it, or env {ENV_HTTP_TOKEN})"
        )
    return settings


def parse(
    data: Mapping[str, Any],
    source: str = "<dict>",
    base_dir: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Iterable[Override] = (),
) -> Settings:
    """Build :class:`Settings` from an already-decoded TOML document.

    The ``JOBRUNNER_<TABLE>__<KEY>`` variables of ``environ`` (default ``os.environ``)
    override the document's keys, and ``overrides`` (command-line options) override
    both; errors about a key they set name them instead of ``source``.
    """
    env = os.environ if environ is None else environ
    document, origins = overrides_module.apply(
        data, [*overrides_module.from_environ(env), *overrides], source
    )
    root = Where(source, origins)
    reject_unknown(root, document, {"database", "runner", "topics", "http", "cron"})
    database = _parse_database(root, subtable(root, "database", document.get("database", {})))
    runner = _parse_runner(root, subtable(root, "runner", document.get("runner", {})))
    topics_raw = subtable(root, "topics", document.get("topics", {}))
    topics = {name: _parse_topic(root, name, raw) for name, raw in topics_raw.items()}
    http = _parse_http(root, subtable(root, "http", document.get("http", {})))
    cron = parse_cron(document.get("cron", []), root.at)
    return Settings(
        database=database, runner=runner, topics=MappingProxyType(topics), http=http, cron=cron, source=source,
        base_dir=base_dir,
    )


def config_path(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """The configuration file to read, and whether it was named (``path`` or
    ``$JOBRUNNER_CONFIG``) rather than the default ``./config.toml``."""
    env = os.environ if environ is None else environ
    named = path if path is not None else env.get(ENV_CONFIG) or None
    return Path(named if named is not None else DEFAULT_CONFIG_FILE), named is not None


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Iterable[Override] = (),
) -> Settings:
    """Read the configuration file, then apply the environment and ``overrides``.

    ``path`` defaults to ``$JOBRUNNER_CONFIG``, then ``./config.toml``. A missing
    default file yields the defaults (source :data:`NO_FILE`); a missing named file
    is an error.
    """
    chosen, named = config_path(path, environ)
    if not chosen.exists():
        if named:
            raise ConfigError(f"{chosen}: configuration file not found")
        return parse({}, source=NO_FILE, base_dir=Path.cwd(), environ=environ, overrides=overrides)
    try:
        with chosen.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{chosen}: not UTF-8 text (TOML files are UTF-8): {exc.reason} at byte {exc.start}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read configuration: {exc.strerror}") from None
    return parse(data, source=str(chosen), base_dir=chosen.resolve().parent, environ=environ, overrides=overrides)


__all__ = [
    "BACKOFF_STRATEGIES", "DEFAULT_CONFIG_FILE", "ENV_CONFIG", "ENV_DATABASE_URL", "ENV_HTTP_TOKEN", "LOOPBACK_HOSTS",
    "MAX_NUMBER", "NO_FILE", "SYNCHRONOUS_LEVELS", "BackoffSettings", "ConfigError", "DatabaseSettings",
    "HttpSettings", "RunnerSettings", "Settings", "TopicSettings", "config_path", "load", "no_file_message", "parse",
]
