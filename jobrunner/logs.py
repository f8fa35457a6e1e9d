"""The command line's log lines: ``2026-11-30 15:35:07,826 INFO    jobrunner.events: ...``.

The daemon writes one line per job event at INFO, so a line must be cheap: the time
text is built once per second instead of once per record, and lines are written in
batches (:class:`BatchedLineHandler`) instead of one write and flush each.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

#: Longest an INFO or DEBUG line waits before it is written (seconds).
WRITE_DELAY = 0.05
#: Lines held at most before they are written whatever the delay.
MAX_HELD = 1000

_DATE_FORMAT = logging.Formatter.default_time_format  # and milliseconds after a comma, as logging does
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class LineFormatter(logging.Formatter):
    """:data:`FORMAT`, with ``asctime`` exactly as :class:`logging.Formatter` renders it."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """``YYYY-mm-dd HH:MM:SS,mmm`` in local time, the date text reused within a second."""
        return self._time(record.created)

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._text = time.strftime(_DATE_FORMAT, self.converter(created))
        return f"{self._text},{int((created - second) * 1000):03d}"

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        """The line of a record made at ``created`` with no exception or stack attached."""
        return f"{self._time(created)} {levelname:<7} {name}: {message}"

    def format(self, record: logging.LogRecord) -> str:
        """The record's line (and its traceback, if any, as :class:`logging.Formatter` adds it)."""
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        return self.line(record.created, record.levelname, record.name, record.getMessage())


class BatchedLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes lines in batches.

    A record at WARNING or above is written at once, with every line held before it, and
    so is a line that comes :data:`WRITE_DELAY` seconds or more after the last write (a
    quiet log is not delayed). Lines that come faster are written together at most
    :data:`WRITE_DELAY` seconds after the first of them (by a thread that sleeps while
    nothing is held), which turns a write and a flush per line into one per batch. Held
    lines are written on :meth:`flush`, which ``logging.shutdown`` calls at exit; a
    process killed outright loses at most the INFO lines of its last
    :data:`WRITE_DELAY` seconds.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._held: list[str] = []
        self._written_at = 0.0  # monotonic time of the last write
        self._waiting = threading.Event()
        threading.Thread(target=self._write_later, name="jobrunner-log-writer", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        """Hold the record's line; write the held lines now for a warning or worse."""
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's contract: report and go on
            self.handleError(record)
            return
        self._hold(line, record.levelno)  # emit runs under the handler's lock (Handler.handle)

    def write_line(self, level: int, name: str, message: str) -> None:
        """Write what a record of logger ``name`` at ``level`` with ``message`` would give,
        without making the record (see :func:`sole_handler`)."""
        formatter = self.formatter
        assert isinstance(formatter, LineFormatter)  # sole_handler() checked it
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._hold(formatter.line(time.time(), logging.getLevelName(level), name, message), level)

    def _hold(self, line: str, level: int) -> None:
        held = self._held
        held.append(line)
        if level >= logging.WARNING or len(held) >= MAX_HELD:
            self._write_held()
        elif len(held) == 1:
            if time.monotonic() - self._written_at >= WRITE_DELAY:
                self._write_held()  # a quiet log: the line goes out at once
            else:
                self._waiting.set()

    def flush(self) -> None:
        """Write every held line and flush the stream."""
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._write_held()

    def _write_held(self) -> None:
        held, self._held = self._held, []
        self._written_at = time.monotonic()
        try:
            if held:
                self.stream.write("\n".join(held) + "\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream must not break the caller
            pass

    def _write_later(self) -> None:
        while True:
            self._waiting.wait()
            self._waiting.clear()
            time.sleep(WRITE_DELAY)
            self.flush()


def sole_handler(logger: logging.Logger, level: int) -> BatchedLineHandler | None:
    """The handler a record of ``logger`` at ``level`` would reach, when it reaches only
    one, a :class:`BatchedLineHandler` with a :class:`LineFormatter`, and nothing filters
    it: that handler's :meth:`~BatchedLineHandler.write_line` then writes the same line
    for a fraction of the cost of a record. None otherwise (a user's logging set-up).
    """
    if logger.filters:  # only the logger a record is made on filters it, not its parents
        return None
    found: BatchedLineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if (found is not None or type(handler) is not BatchedLineHandler or handler.filters
                    or level < handler.level or type(handler.formatter) is not LineFormatter):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def configure(level: int, stream: TextIO) -> None:
    """Log records at ``level`` and above as one line each on ``stream`` (like ``basicConfig``)."""
    handler = BatchedLineHandler(stream)
    handler.setFormatter(LineFormatter())
    logging.basicConfig(level=level, handlers=[handler])


__all__ = ["FORMAT", "MAX_HELD", "WRITE_DELAY", "BatchedLineHandler", "LineFormatter", "configure", "sole_handler"]
