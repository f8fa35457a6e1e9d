"""Overrides of configuration keys from the environment and the command line.

Every key of the configuration file can be set by an environment variable named
``JOBRUNNER_<TABLE>__<KEY>``, one ``__``-separated part per level of tables:
``JOBRUNNER_HTTP__PORT=8631``, ``JOBRUNNER_TOPICS__DEMO__PARALLELISM=8``,
``JOBRUNNER_TOPICS__DEMO__BACKOFF__BASE=2``. Values are TOML values (``8``, ``2.5``,
``true``, ``"x"``, ``["a"]``, ``{a = 1}``); text that is not valid TOML is taken as a
plain string. Names match case-insensitively. Variables without ``__``
(``JOBRUNNER_CONFIG``, ``JOBRUNNER_LOG_LEVEL``, …) are not configuration keys.

Each override remembers where it came from (``environment JOBRUNNER_HTTP__PORT``,
``option --http-port``) so that a validation error names it instead of the file.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

ENV_PREFIX = "JOBRUNNER_"
ENV_SEPARATOR = "__"
#: Older single-underscore names, kept as aliases; the ``__`` spelling wins when both are set.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "JOBRUNNER_DATABASE_URL": ("database", "url"),
    "JOBRUNNER_HTTP_TOKEN": ("http", "token"),
}

#: Where each overridden key came from: canonical key path → origin.
Origins = Mapping[tuple[str, ...], str]


@dataclass(frozen=True, slots=True)
class Override:
    """One value replacing a key (or a whole table) of the configuration file.

    ``path`` holds the table and key names as given (matched case-insensitively);
    ``origin`` names the source in error messages, e.g. ``environment JOBRUNNER_HTTP__PORT``.
    """

    origin: str
    path: tuple[str, ...]
    value: Any


def env_value(text: str) -> Any:
    """The TOML value of ``text``, or ``text`` itself when it is not a TOML value."""
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    # "1\nother = 2" parses too, but as more than one value: then it is text.
    return parsed["value"] if len(parsed) == 1 else text


def from_environ(environ: Mapping[str, str]) -> list[Override]:
    """The overrides named by ``environ``: aliases first, then ``JOBRUNNER_<TABLE>__<KEY>``
    variables from the shortest path to the longest (a whole table, then its keys)."""
    found = [
        Override(f"environment {name}", path, environ[name])
        for name, path in ENV_ALIASES.items()
        if environ.get(name)  # an empty alias means "not set", as it always did
    ]
    scheme = []
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        parts = tuple(name[len(ENV_PREFIX):].split(ENV_SEPARATOR))
        if not all(parts):
            raise ConfigError(
                f"environment {name}: an empty table or key name; expected "
                f"{ENV_PREFIX}<TABLE>{ENV_SEPARATOR}<KEY>, e.g. {ENV_PREFIX}HTTP{ENV_SEPARATOR}PORT"
            )
        scheme.append(Override(f"environment {name}", parts, env_value(text)))
    scheme.sort(key=lambda o: (len(o.path), o.origin))
    return found + scheme


def _key(table: Mapping[str, Any], name: str, origin: str, where: str) -> str:
    """The key of ``table`` that ``name`` means (any case); ``name`` lower-cased when new."""
    matches = [key for key in table if key.lower() == name.lower()]
    if name in matches:
        return name
    if len(matches) > 1:
        raise ConfigError(f"{origin}: {name!r} is ambiguous in {where}: it could be {' or '.join(map(repr, matches))}")
    return matches[0] if matches else name.lower()


def _label(path: Iterable[str]) -> str:
    return f"[{'.'.join(path)}]" if path else "the top level"


def apply(
    data: Mapping[str, Any], overrides: Iterable[Override], source: str
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """A copy of the decoded file ``data`` with ``overrides`` applied in order, and
    the origin of every key they set.

    A key of a table is created when missing (so unknown names reach validation,
    which rejects them naming the origin), except that a topic the file does not
    declare is only created by setting its whole table (``JOBRUNNER_TOPICS__NAME='{}'``):
    a mistyped topic name in a key's variable is an error, not a new topic.
    """
    overrides = list(overrides)
    if not overrides:
        return dict(data), {}
    document: dict[str, Any] = copy.deepcopy(dict(data))
    origins: dict[tuple[str, ...], str] = {}
    for override in overrides:
        table = document
        path: list[str] = []
        for depth, part in enumerate(override.path):
            last = depth == len(override.path) - 1
            key = _key(table, part, override.origin, _label(path))
            if path == ["topics"] and key not in table and not last:
                declared = ", ".join(sorted(table)) or "none"
                raise ConfigError(
                    f"{override.origin}: topic {key!r} is not declared in {source} (declared: {declared}); "
                    f"declare [topics.{key}] there, or set its whole table with "
                    f"{ENV_PREFIX}TOPICS{ENV_SEPARATOR}{key.upper()}='{{ parallelism = 4 }}'"
                )
            path.append(key)
            if last:
                table[key] = copy.deepcopy(override.value)  # later overrides may set keys inside it
                break
            child = table.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"{override.origin}: cannot set a key inside {_label(path)}: "
                    f"it is a {type(child).__name__}, not a table"
                )
            table = child
        origins[tuple(path)] = override.origin
    return document, origins


__all__ = ["ENV_ALIASES", "ENV_PREFIX", "Origins", "Override", "apply", "env_value", "from_environ"]
