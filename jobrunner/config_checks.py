"""The checks behind :mod:`jobrunner.config`: where a key is (file, table, or the
environment variable or option that set it) and whether its value has the right type
and range; every failure is a :class:`ConfigError` naming the key and where it was set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .overrides import Origins


@dataclass(frozen=True, slots=True)
class Where:
    """A table being parsed: where it is, and who set which of its keys.

    ``at(key)`` starts an error message about ``key``: the environment variable or
    command-line option that set it (or a table above it), else the file.
    """

    source: str
    origins: Origins
    path: tuple[str, ...] = ()
    label: str = ""

    def child(self, key: str, label: str) -> Where:
        """The table at ``key`` of this one, shown as ``label`` (e.g. ``[topics.demo]``)."""
        return Where(self.source, self.origins, (*self.path, key), label)

    def at(self, *keys: str) -> str:
        """The prefix of a message about ``keys`` (the first one an override set wins)."""
        for key in keys or ("",):
            path = (*self.path, key) if key else self.path
            origin = next((self.origins[path[:end]] for end in range(len(path), 0, -1)
                           if path[:end] in self.origins), None)
            if origin is None and key:  # a table only an override created, e.g. a mistyped one
                origin = next((o for p, o in self.origins.items() if p[:len(path)] == path), None)
            if origin is not None:
                return f"{origin}: {self.label}" if self.label else origin
        return str(self)

    def __str__(self) -> str:
        return f"{self.source}: {self.label}" if self.label else self.source


#: The largest number a configuration key takes (seconds: about 31 years).
MAX_NUMBER = 1e9


def type_name(kind: Any) -> str:
    """How an error names the type ``kind`` (``a number`` for float, ``an integer`` for int, ...)."""
    if kind is float:
        return "a number"
    if kind is int:
        return "an integer"
    if kind is str:
        return "a string"
    if kind is bool:
        return "a boolean"
    return getattr(kind, "__name__", str(kind))


def check(where: Where, key: str, value: Any, kind: type) -> Any:
    """``value`` of ``key`` if it is a ``kind`` (a float key takes an integer too, within
    :data:`MAX_NUMBER`); ConfigError naming the key otherwise."""
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        try:
            finite = ok and math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            finite = False
        if ok and not finite:
            raise ConfigError(f"{where.at(key)}: key {key!r} must be a finite number, got {value!r}")
        if ok and abs(value) > MAX_NUMBER:
            # Every number here is seconds or a fraction; beyond this, clocks and sleeps overflow.
            raise ConfigError(f"{where.at(key)}: key {key!r} must be at most {MAX_NUMBER:.0e}, got {value!r}")
        value = float(value) if ok else value
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(
            f"{where.at(key)}: key {key!r} must be {type_name(kind)}, got {type(value).__name__} {value!r}"
        )
    return value


def reject_unknown(where: Where, table: Mapping[str, Any], known: set[str]) -> None:
    """ConfigError for a key of ``table`` that is not one of ``known``."""
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{where.at(unknown[0])}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(known))})"
        )


def subtable(where: Where, key: str, value: Any) -> Mapping[str, Any]:
    """``value`` of ``key`` if it is a table; ConfigError otherwise."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where.at(key)}: key {key!r} must be a table, got {type(value).__name__}")
    return value


def at_least(where: Where, key: str, value: float, low: float, strict: bool = False) -> None:
    """ConfigError unless ``value`` of ``key`` is at least ``low`` (above it with ``strict``)."""
    if value < low or (strict and value == low):
        bound = f"greater than {low}" if strict else f"at least {low}"
        raise ConfigError(f"{where.at(key)}: key {key!r} must be {bound}, got {value!r}")


def one_of(where: Where, key: str, value: Any, choices: tuple[str, ...], *, given: Any = None) -> None:
    """ConfigError unless ``value`` of ``key`` is one of ``choices`` (the message shows
    ``given``, what the file said, when ``value`` was normalised from it)."""
    if value not in choices:
        shown = value if given is None else given
        raise ConfigError(f"{where.at(key)}: key {key!r} must be one of {', '.join(choices)}, got {shown!r}")


__all__ = ["MAX_NUMBER", "Where", "at_least", "check", "one_of", "reject_unknown", "subtable", "type_name"]
