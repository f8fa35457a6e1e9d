"""The command line's log lines: ``2026-11-30 15:35:07,826 INFO    jobrunner.events: ...``.

The daemon writes one line per job event at INFO, so a line must be cheap: the time
text is built once per second instead of once per record.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

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
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._text = time.strftime(_DATE_FORMAT, self.converter(record.created))
        return f"{self._text},{int(record.msecs):03d}"


def configure(level: int, stream: TextIO) -> None:
    """Log records at ``level`` and above as one line each on ``stream`` (like ``basicConfig``)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter())
    logging.basicConfig(level=level, handlers=[handler])


__all__ = ["FORMAT", "LineFormatter", "configure"]
