"""Which SQLite library jobrunner opens its files with, and whether it is a safe one.

Python's ``sqlite3`` module runs whatever SQLite the interpreter was built against,
often an old one (Debian 12's is 3.40.1). Every SQLite from 3.7.0 up to 3.51.2 has the
*WAL-reset bug* (https://sqlite.org/wal.html#walresetbug): when two connections to one
file in WAL mode write and checkpoint at nearly the same moment, a later checkpoint can
skip pages of a committed transaction, which is then lost. jobrunner runs exactly there:
several connections per process, several processes per file. 3.51.3 fixes it, and so do
the backports 3.44.6 and 3.50.7.

The ``pysqlite3`` package is the same DB-API module built with an SQLite of its own (its
wheels bundle a current release). ``[database] sqlite_library = "pysqlite3"`` makes
jobrunner use it (``pip install "jobrunner[sqlite]"``). It is not the default because of
another way to corrupt a file (https://sqlite.org/howtocorrupt.html, "multiple copies of
SQLite linked into the same application"): two SQLite libraries on one file in one
process release each other's POSIX locks. So every connection a process opens to the
file must go through the same library; :func:`same_library` lets callers check.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sqlite3
from dataclasses import dataclass
from types import ModuleType

from ..errors import ConfigError
from ..settings import SQLITE_LIBRARIES

logger = logging.getLogger("jobrunner.store")

#: The first release of each line that has the WAL-reset fix (3.51.3 and every later
#: line has it; the fix was backported to the 3.44 and 3.50 lines).
_FIXED_IN_LINE = {(3, 44): (3, 44, 6), (3, 50): (3, 50, 7)}
_FIXED_FROM = (3, 51, 3)


def has_wal_reset_bug(version: tuple[int, int, int]) -> bool:
    """True when SQLite ``version`` can lose a commit to the WAL-reset race."""
    if version >= _FIXED_FROM or version < (3, 7, 0):
        return False
    fixed = _FIXED_IN_LINE.get(version[:2])
    return fixed is None or version < fixed


@dataclass(frozen=True, slots=True)
class SqliteLibrary:
    """A DB-API module for SQLite (``sqlite3`` or ``pysqlite3.dbapi2``) and its SQLite."""

    name: str
    module: ModuleType

    @property
    def version(self) -> tuple[int, int, int]:
        """The SQLite release the module runs."""
        major, minor, patch = self.module.sqlite_version_info
        return (major, minor, patch)

    @property
    def wal_reset_bug(self) -> bool:
        """True when this SQLite has the WAL-reset bug (see the module docstring)."""
        return has_wal_reset_bug(self.version)

    def describe(self) -> str:
        """``SQLite 3.53.4 (pysqlite3)``."""
        return f"SQLite {self.module.sqlite_version} ({self.name})"


_STANDARD = SqliteLibrary("sqlite3", sqlite3)


@functools.cache
def _pysqlite3() -> SqliteLibrary | None:
    try:
        return SqliteLibrary("pysqlite3", importlib.import_module("pysqlite3.dbapi2"))
    except ImportError:
        return None


def sqlite_library(choice: str = "sqlite3") -> SqliteLibrary:
    """The library ``[database] sqlite_library = choice`` names."""
    if choice == "sqlite3":
        return _STANDARD
    if choice != "pysqlite3":
        raise ConfigError(f"[database] sqlite_library must be one of {', '.join(SQLITE_LIBRARIES)}, got {choice!r}")
    bundled = _pysqlite3()
    if bundled is None:
        raise ConfigError(
            "[database] sqlite_library = 'pysqlite3', but the pysqlite3 package is not installed "
            "(pip install \"jobrunner[sqlite]\", or use 'sqlite3')"
        )
    return bundled


def same_library(first: ModuleType, second: ModuleType) -> bool:
    """True when two DB-API modules run the same SQLite library (``sqlite3`` and
    ``sqlite3.dbapi2`` do; ``sqlite3`` and ``pysqlite3.dbapi2`` do not)."""
    return getattr(first, "Connection", first) is getattr(second, "Connection", second)


def warn_if_unsafe(library: SqliteLibrary, database: str) -> None:
    """Log a warning when ``library`` has the WAL-reset bug (once per process and file)."""
    if library.wal_reset_bug:
        _warn_once(library.describe(), library.name, database)


@functools.cache
def _warn_once(described: str, name: str, database: str) -> None:
    fix = ('pip install "jobrunner[sqlite]" and set [database] sqlite_library = "pysqlite3" '
           "(then open this file only through pysqlite3 in jobrunner's processes)"
           if name == "sqlite3" else "upgrade pysqlite3")
    logger.warning(
        "sqlite_wal_reset_bug: %s is a release with SQLite's WAL-reset bug unless your distribution "
        "patched it (https://sqlite.org/wal.html#walresetbug): when several connections write to %s "
        "at once, a rare race can lose a committed transaction. Fixed in SQLite 3.51.3; to use it: %s",
        described, database, fix, extra={"event": "sqlite_wal_reset_bug"},
    )


__all__ = ["SqliteLibrary", "has_wal_reset_bug", "same_library", "sqlite_library", "warn_if_unsafe"]
