"""The ``[[cron]]`` entries of the configuration file, parsed into :class:`~jobrunner.schedule.Cron`.

Each error names the file (or the override that set the key), the entry (its position,
and its name or worker) and the key. Whether the worker exists is checked when a
daemon starts or ``python -m jobrunner cron`` runs, once ``[runner] modules`` are
imported (see :func:`jobrunner.cron.schedules`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from .errors import ConfigError
from .schedule import MISSED_POLICIES, Cron, ScheduleError, parse_expression, parse_timezone

#: Keys of one ``[[cron]]`` entry; ``worker`` and ``schedule`` are required.
KEYS = ("worker", "schedule", "args", "timezone", "missed", "name")


def entry_label(index: int, raw: Any) -> str:
    """How errors name entry ``index`` (0-based): ``[[cron]] #2 (nightly-report)``."""
    label = f"[[cron]] #{index + 1}"
    if isinstance(raw, dict):
        tag = raw.get("name") or raw.get("worker")
        if isinstance(tag, str) and tag:
            label += f" ({tag})"
    return label


def parse_entries(raw: Any, at: Callable[[str], str]) -> tuple[Cron, ...]:
    """Every ``[[cron]]`` entry of ``raw`` (the document's ``cron`` value); ``at(key)``
    is the prefix that names where ``cron`` came from (the file or an override)."""
    if not isinstance(raw, list):
        raise ConfigError(f"{at('cron')}: 'cron' must be an array of tables ([[cron]]), got {type(raw).__name__}")
    entries = tuple(_parse_entry(i, item, at) for i, item in enumerate(raw))
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        first = seen.setdefault(entry.key, index)
        if first != index:
            raise ConfigError(
                f"{at('cron')}: {entry_label(index, raw[index])}: the schedule name {entry.key!r} is also the name "
                f"of [[cron]] #{first + 1}; give each a distinct key 'name'"
            )
    return entries


def _parse_entry(index: int, raw: Any, at: Callable[[str], str]) -> Cron:
    where = f"{at('cron')}: {entry_label(index, raw)}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each [[cron]] entry must be a table, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(KEYS))})")
    for key in ("worker", "schedule"):
        if key not in raw:
            raise ConfigError(f"{where}: key {key!r} is required")
    for key in ("worker", "schedule", "timezone", "missed", "name"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise ConfigError(f"{where}: key {key!r} must be a non-empty string, got {raw[key]!r}")
    args = raw.get("args", {})
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: key 'args' must be a table, got {type(args).__name__} {args!r}")
    try:
        parse_expression(raw["schedule"])
    except ScheduleError as exc:
        raise ConfigError(f"{where}: key 'schedule': {exc}") from None
    if "timezone" in raw:
        try:
            parse_timezone(raw["timezone"])
        except ScheduleError as exc:
            raise ConfigError(f"{where}: key 'timezone': {exc}") from None
    missed = raw.get("missed", "skip")
    if missed not in MISSED_POLICIES:
        raise ConfigError(f"{where}: key 'missed' must be one of {', '.join(MISSED_POLICIES)}, got {missed!r}")
    return Cron(
        raw["schedule"], args=MappingProxyType(dict(args)), timezone=raw.get("timezone", "UTC"), missed=missed,
        name=raw.get("name"), worker=raw["worker"],
    )


__all__ = ["KEYS", "entry_label", "parse_entries"]
