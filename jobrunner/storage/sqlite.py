"""SQLite specifics: opening a file in WAL mode, telling "busy" apart, noticing commits."""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

from ..errors import ConfigError, StorageError
from .sqlite_library import SqliteLibrary


def is_busy(exc: Exception) -> bool:
    """True when SQLite refused because another connection holds a lock (``exc`` is an
    OperationalError of the library in use)."""
    text = str(exc)
    return "locked" in text or "busy" in text


def enable_wal(cursor: Any, database: str, timeout: float, operational_error: type[Exception]) -> None:
    """Switch the file to WAL mode, waiting out other openers.

    Changing the journal mode needs an exclusive lock and SQLite answers "database is
    locked" at once (without its busy handler) while another connection is opening
    the same fresh file, so retry with a short backoff for up to ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode and str(mode[0]).lower() == "wal":
                return
            mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        except operational_error as exc:
            if not is_busy(exc):
                raise
            if time.monotonic() >= deadline:
                raise StorageError(f"database {database!r}: still locked after {timeout:g}s: {exc}") from None
            time.sleep(delay)
            delay = min(0.05, delay * 2)
            continue
        if mode and str(mode[0]).lower() == "wal":
            return
        raise StorageError(f"database {database!r}: could not enable WAL mode (got {mode and mode[0]})")


def sqlite_engine(url: Any, shown_url: str, synchronous: str, busy_timeout: float, library: SqliteLibrary) -> Engine:
    """An engine on the SQLite file of ``url`` through ``library``: WAL, busy timeout,
    ``synchronous`` level, and write transactions that take the write lock at BEGIN."""
    database = url.database
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        raise ConfigError(
            f"database url {shown_url!r}: jobrunner needs an SQLite file "
            "(an in-memory database is private to one connection)"
        )
    directory = os.path.dirname(os.path.abspath(database))
    if not os.path.isdir(directory):
        raise StorageError(f"database {database!r}: directory {directory!r} does not exist")
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout},
        module=library.module,
        pool_size=8,
        max_overflow=16,
    )
    busy_ms = int(busy_timeout * 1000)
    operational_error = library.module.OperationalError

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module: we issue BEGIN ourselves.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        enable_wal(cursor, database, busy_timeout, operational_error)
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the lock up front; read-only work asks for a deferred BEGIN.
        if conn.get_execution_options().get("jobrunner_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class ChangeProbe:
    """Notices commits to an SQLite file by looking at its write-ahead log.

    Every commit in WAL mode writes to ``<file>-wal``, changing its size or
    modification time; ``os.stat`` costs about a microsecond and takes no lock, where
    ``PRAGMA data_version`` costs tens of microseconds of file locking. A change missed
    here (two commits of the same size within one clock tick) is still found by the
    topic's poll.
    """

    def __init__(self, path: str) -> None:
        self._paths = (path + "-wal", path)

    def version(self) -> tuple[int, ...]:
        """A value that changes when someone commits."""
        marks: list[int] = []
        for path in self._paths:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                marks.extend((0, 0, 0))
            else:
                marks.extend((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(marks)

    def close(self) -> None:
        """Nothing to release (kept for probes that hold a connection)."""


__all__ = ["ChangeProbe", "enable_wal", "is_busy", "sqlite_engine"]
