"""External topics in-process: what concluding a leased job reports."""

from __future__ import annotations

import logging

import pytest

from jobrunner.enqueue import build_row, external_defaults
from jobrunner.external import ExternalTopics
from jobrunner.testing import EventRecorder
from tests.helpers import MakeRunner

pytestmark = pytest.mark.anyio


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_concluded_external_jobs_report_the_time_since_the_claim(
    make_runner: MakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner({"ext": {"external": True, "backoff": {"strategy": "constant", "base": 0.0}}})
    clock = Clock()
    external = ExternalTopics(runner.settings, runner.storage, clock)
    topic = runner.settings.topic("ext")
    rows = [build_row(runner.settings, name, {}, {"max_attempts": 1}, clock(), external_defaults(name, topic))
            for name in ("anything.Ok", "anything.Bad")]
    ok, bad = runner.store_rows(rows)
    caplog.set_level(logging.INFO, logger="jobrunner.events")
    with EventRecorder("ext") as recorder:
        first = await external.claim("ext", "w1", wait=0)
        second = await external.claim("ext", "w2", wait=0)
        assert first is not None and second is not None and first.job.id == ok.id
        clock.now += 2.5
        await external.complete(ok.id, first.token, {"done": True})
        clock.now += 1.25
        await external.fail(bad.id, second.token, "it broke")
    assert recorder.of("job_completed")[0].payload["duration"] == pytest.approx(2.5)
    assert recorder.of("job_discarded")[0].payload["duration"] == pytest.approx(3.75)
    lines = [r.getMessage() for r in caplog.records if r.name == "jobrunner.events"]
    assert any(f"job_completed id={ok.id}" in line and "duration=2500.0ms" in line for line in lines), lines
    assert any(f"job_discarded id={bad.id}" in line and "duration=3750.0ms" in line for line in lines), lines
