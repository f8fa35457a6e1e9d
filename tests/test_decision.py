"""The claim loop's decision (jobrunner.decision.decide), rule by rule, as a table."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from jobrunner.decision import Decision, LoopState, decide

#: A topic at parallelism 4, polled every second, its poll due at t=10; now is t=5.
BASE = LoopState(now=5.0, next_stage=10.0, poll_interval=1.0, stopping=False, paused=False,
                 check_requested=False, running=0, parallelism=4, pending=0)

CASES: list[tuple[str, dict[str, Any], Decision]] = [
    ("free slots: claim them all",
     {}, Decision(transaction=True, claim=4, next_stage=10.0)),
    ("some slots busy: claim the free ones",
     {"running": 3}, Decision(transaction=True, claim=1, next_stage=10.0)),
    ("every slot busy, nothing to write: sleep until the poll",
     {"running": 4}, Decision(next_stage=10.0)),
    ("every slot busy, outcomes pending: write them, claim nothing",
     {"running": 4, "pending": 2}, Decision(transaction=True, next_stage=10.0)),
    ("more running than parallelism (a lowered setting): claim nothing",
     {"running": 6, "pending": 1}, Decision(transaction=True, next_stage=10.0)),
    ("poll due: stage and check with the claim, next poll one interval on",
     {"now": 10.0}, Decision(transaction=True, claim=4, stage=True, check=True, next_stage=11.0)),
    ("poll due, every slot busy: stage and check anyway",
     {"now": 10.5, "running": 4}, Decision(transaction=True, stage=True, check=True, next_stage=11.5)),
    ("another process committed: the check rides along with the claim",
     {"check_requested": True}, Decision(transaction=True, claim=4, check=True, next_stage=10.0)),
    ("check requested, every slot busy: defer it for a job to end",
     {"check_requested": True, "running": 4},
     Decision(defer_check=True, next_stage=10.0, check_requested=True)),
    ("check requested, every slot busy, outcomes pending: check with their write",
     {"check_requested": True, "running": 4, "pending": 1},
     Decision(transaction=True, check=True, next_stage=10.0)),
    ("paused: claim nothing, write outcomes",
     {"paused": True, "pending": 3}, Decision(transaction=True, next_stage=10.0)),
    ("paused, nothing pending: sleep",
     {"paused": True}, Decision(next_stage=10.0)),
    ("paused, poll due: the check's claim obeys the pause itself",
     {"paused": True, "now": 12.0}, Decision(transaction=True, claim=4, stage=True, check=True, next_stage=13.0)),
    ("paused, resume noticed by another process: check and claim",
     {"paused": True, "check_requested": True},
     Decision(transaction=True, claim=4, check=True, next_stage=10.0)),
    ("stopping with outcomes pending: write them only",
     {"stopping": True, "running": 2, "pending": 2}, Decision(transaction=True, next_stage=10.0)),
    ("stopping, poll due, idle: write, neither stage nor check",
     {"stopping": True, "now": 20.0, "pending": 1}, Decision(transaction=True, next_stage=10.0)),
    ("stopping, poll due, jobs running: check (a cancel elsewhere stops its job), never claim",
     {"stopping": True, "now": 20.0, "running": 1}, Decision(transaction=True, check=True, next_stage=21.0)),
    ("stopping, jobs running: wait for them",
     {"stopping": True, "running": 2}, Decision(next_stage=10.0)),
    ("stopping, idle, nothing pending: done",
     {"stopping": True}, Decision(done=True, next_stage=10.0)),
    ("stopping, idle: an owed check stays owed",
     {"stopping": True, "check_requested": True, "pending": 1},
     Decision(transaction=True, next_stage=10.0, check_requested=True)),
    ("stopping, jobs running, another process committed: check with the acks",
     {"stopping": True, "check_requested": True, "running": 1, "pending": 1},
     Decision(transaction=True, check=True, next_stage=10.0)),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(changes: dict[str, Any], expected: Decision) -> None:
    assert decide(replace(BASE, **changes)) == expected


def test_decide_is_pure() -> None:
    state = replace(BASE, now=10.0, check_requested=True)
    assert decide(state) == decide(state)
    assert state == replace(BASE, now=10.0, check_requested=True)
