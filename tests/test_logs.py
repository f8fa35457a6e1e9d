"""The command line's log lines: the same text as logging's own formatter, written in
batches, and the record-free path for event lines taken only where nothing else listens."""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from jobrunner import events, logs
from jobrunner.job import Job


class _Stream(io.StringIO):
    """A text stream that counts its writes and says when one happened."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        self.written.set()
        return super().write(text)


@pytest.fixture
def events_logger() -> Iterator[logging.Logger]:
    """``jobrunner.events`` cut off from the root (where pytest captures), restored after."""
    logger = logging.getLogger("jobrunner.events")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def _record(message: str, level: int = logging.INFO, exc_info: bool = False) -> logging.LogRecord:
    try:
        raise ValueError("boom")
    except ValueError:
        info = sys.exc_info() if exc_info else None
    return logging.getLogger("jobrunner.test").makeRecord("jobrunner.test", level, __file__, 1, message, (), info)


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR])
@pytest.mark.parametrize("exc_info", [False, True])
def test_a_line_is_what_loggings_formatter_gives(level: int, exc_info: bool) -> None:
    record = _record("job_completed id=7 topic=t", level, exc_info)
    expected = logging.Formatter(logs.FORMAT).format(record)
    assert logs.LineFormatter().format(record) == expected


def test_info_lines_are_written_together_and_a_warning_at_once() -> None:
    stream = _Stream()
    handler = logs.BatchedLineHandler(stream)
    handler.setFormatter(logs.LineFormatter())
    handler.handle(_record("first"))
    assert stream.writes == 1  # a line after a quiet spell goes out at once
    for i in range(50):
        handler.handle(_record(f"line {i}"))
    assert stream.written.wait(10)  # the writer thread, at most WRITE_DELAY later
    handler.flush()
    assert stream.getvalue().splitlines()[-1].endswith("line 49")
    assert stream.writes <= 3  # the first line, then one batch, perhaps split in two: never one per line
    before = stream.writes
    handler.handle(_record("trouble", logging.WARNING))
    assert stream.getvalue().endswith("trouble\n") and stream.writes == before + 1  # no wait


def test_event_lines_take_the_record_free_path_only_where_nothing_else_listens(
    events_logger: logging.Logger,
) -> None:
    stream = _Stream()
    handler = logs.BatchedLineHandler(stream)
    handler.setFormatter(logs.LineFormatter())
    events_logger.handlers.clear()  # pytest's capture handlers, added for the test's call
    events_logger.addHandler(handler)
    assert logs.sole_handler(events_logger, logging.INFO) is handler
    job = Job.of(3, "t", "tests.workers.Add", {}, "completed", 0, 1, 20, [], 5, 0.0, 0.0, 0.0, 1.0,
                 None, None, "n", [], {}, None, None)
    events.emit(events.job_completed, "t", job=job, duration=0.001, result=5)
    handler.flush()
    [line] = stream.getvalue().splitlines()
    assert " INFO    jobrunner.events: job_completed id=3 topic=t worker=tests.workers.Add" in line

    # A second handler, a filter, another formatter, a higher level: records as usual.
    other = logging.StreamHandler(io.StringIO())
    events_logger.addHandler(other)
    assert logs.sole_handler(events_logger, logging.INFO) is None
    events_logger.removeHandler(other)
    events_logger.addFilter(lambda record: True)
    assert logs.sole_handler(events_logger, logging.INFO) is None
    events_logger.filters.clear()
    handler.setFormatter(logging.Formatter("%(message)s"))
    assert logs.sole_handler(events_logger, logging.INFO) is None
    handler.setFormatter(logs.LineFormatter())
    handler.setLevel(logging.WARNING)
    assert logs.sole_handler(events_logger, logging.INFO) is None
    handler.setLevel(logging.NOTSET)
    assert logs.sole_handler(events_logger, logging.INFO) is handler
