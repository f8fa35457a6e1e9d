"""The periodic throughput summary per topic on the ``jobrunner`` logger."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator

import anyio
import pytest

from jobrunner import Job, Worker
from jobrunner.config import ConfigError, parse
from jobrunner.summary import new_tally, summary_line
from jobrunner.testing import EventRecorder, running
from tests.helpers import MakeRunner
from tests.workers import Add, AlwaysFails, CancelMe, FailTimes


class OnU(Worker):
    """A job of topic u."""

    topic = "u"

    async def perform(self, job: Job) -> str:
        return "u"


LINE = re.compile(
    r"^topic (\w+): (\d+) completed, (\d+) failed, (\d+) discarded, (\d+) cancelled "
    r"in the last 0\.2s \(\d[\d,]*\.\d/s\); running (\d+)/(\d+)$"
)


class Summaries(logging.Handler):
    """Collects the summary records; a test waits on them instead of sleeping."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._changed = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "topic_summary":
            self.records.append(record)
            self._changed.set()

    def of(self, topic: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.__dict__["topic"] == topic]  # an `extra` of the log call

    async def until(self, what: str, predicate: Callable[[], bool], timeout: float = 10) -> None:
        try:
            with anyio.fail_after(timeout):
                while True:
                    self._changed = anyio.Event()  # records arrive only while this task waits
                    if predicate():
                        return
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no summary showed {what}: {[r.getMessage() for r in self.records]}") from None


@pytest.fixture
def summaries() -> Iterator[Summaries]:
    handler = Summaries()
    logger = logging.getLogger("jobrunner")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def totals(records: list[logging.LogRecord]) -> tuple[int, int, int, int]:
    sums = [0, 0, 0, 0]
    for record in records:
        match = LINE.match(record.getMessage())
        assert match, record.getMessage()
        for i in range(4):
            sums[i] += int(match.group(i + 2))
    return sums[0], sums[1], sums[2], sums[3]


@pytest.mark.anyio
async def test_each_active_topic_gets_a_summary_line_per_interval(
    make_runner: MakeRunner, summaries: Summaries
) -> None:
    runner = make_runner({"t": {"parallelism": 4, "poll_interval": 0.05}, "u": {"parallelism": 1}},
                         runner={"summary_interval": 0.2})
    with EventRecorder("t") as recorder:
        async with running(runner):
            runner.enqueue_many([(Add, {"a": i, "b": i}) for i in range(3)])
            runner.enqueue(FailTimes, {"fails": 1})             # failed once, then completed
            runner.enqueue(AlwaysFails, {}, max_attempts=1)     # discarded
            runner.enqueue(CancelMe, {})                        # cancelled
            await recorder.wait_count("job_completed", 4)
            await summaries.until("4 completed, 1 failed, 1 discarded, 1 cancelled",
                                  lambda: totals(summaries.of("t")) == (4, 1, 1, 1))
            seen = len(summaries.of("t"))
            assert summaries.of("u") == []  # idle so far: no line
            # Now u gets work and t none: ticks go on, and t's quiet ones print nothing.
            runner.enqueue(OnU, {})
            # A tick between the job's end and the write of its outcome prints a line for
            # u with the start only ("0 completed"); the completion is in the next one.
            await summaries.until("topic u's job completed", lambda: totals(summaries.of("u")) == (1, 0, 0, 0))
    assert len(summaries.of("t")) == seen
    record = summaries.of("t")[0]
    assert record.name == "jobrunner" and record.levelno == logging.INFO
    matched = LINE.match(record.getMessage())
    assert matched is not None
    assert matched.group(7) == "4"  # running n/parallelism


def test_summary_line_format() -> None:
    tally = new_tally()
    tally.update(complete=1204, retry=3, cancel=1, start=1208)
    line = summary_line("demo", tally, 60.0, 60.0, 4, 4)
    assert line == ("topic demo: 1,204 completed, 3 failed, 0 discarded, 1 cancelled in the last 60s (20.1/s); "
                    "running 4/4")
    tally.update(snooze=2)
    assert "1 cancelled, 2 snoozed in the last" in summary_line("demo", tally, 60.0, 60.0, 0, 4)


def test_summary_interval_is_a_non_negative_number() -> None:
    assert parse({}).runner.summary_interval == 60.0
    assert parse({"runner": {"summary_interval": 0}}).runner.summary_interval == 0.0
    with pytest.raises(ConfigError, match=r"\[runner\].*'summary_interval' must be at least 0"):
        parse({"runner": {"summary_interval": -1}}, source="cfg")
