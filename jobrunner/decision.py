"""What a topic's claim loop does next: a pure function of what it knows.

The claim loop (:mod:`jobrunner.producer`) calls :func:`decide` each time it wakes; the
answer says how many jobs to claim, whether to stage due jobs and read the topic's
control in the same transaction, or that there is nothing to do until the next wake-up.
No clock, database or task is touched here, so every rule is tested by a table
(``tests/test_decision.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoopState:
    """What the claim loop knows when it wakes.

    ``next_stage`` is when due jobs are next staged (and the control read: the poll);
    ``check_requested`` says another process committed (maybe a pause or a cancel);
    ``pending`` counts finished executions whose outcome is not written yet.
    """

    now: float
    next_stage: float
    poll_interval: float
    stopping: bool
    paused: bool
    check_requested: bool
    running: int
    parallelism: int
    pending: int


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do now.

    ``transaction``: write the pending outcomes, then (with ``check``) read the control,
    (with ``stage``) stage due jobs and claim up to ``claim`` jobs, all in one
    transaction. ``defer_check``: every slot is busy and a control check is due; give a
    running job a moment to end so the check rides along with its ack. ``next_stage``
    is the new poll deadline; ``check_requested`` whether a check is still owed.
    ``done``: stopping with nothing running or pending, the loop ends.
    """

    transaction: bool = False
    claim: int = 0
    stage: bool = False
    check: bool = False
    defer_check: bool = False
    done: bool = False
    next_stage: float = 0.0
    check_requested: bool = False


def decide(state: LoopState) -> Decision:
    """The claim loop's next step (see :class:`Decision`)."""
    if state.stopping:
        # Claim and stage nothing more; write what is left, then end once idle. While jobs
        # still run, keep reading the control when asked or at each poll, so that a job
        # cancelled by another process stops now instead of running out the grace.
        due = state.now >= state.next_stage
        check = state.running > 0 and (state.check_requested or due)
        next_stage = state.now + state.poll_interval if check and due else state.next_stage
        owed = state.check_requested and not check
        if state.pending or check:
            return Decision(transaction=True, check=check, next_stage=next_stage, check_requested=owed)
        return Decision(done=state.running == 0, next_stage=next_stage, check_requested=owed)
    stage = state.now >= state.next_stage
    next_stage = state.now + state.poll_interval if stage else state.next_stage
    check = stage or state.check_requested
    # A control check rides along with the claim, which then obeys a pause itself.
    claiming = check or not state.paused
    demand = max(0, state.parallelism - state.running) if claiming else 0
    stage = stage and claiming
    if state.pending or demand or stage:
        return Decision(transaction=True, claim=demand, stage=stage, check=check, next_stage=next_stage)
    if check:
        return Decision(defer_check=True, next_stage=next_stage, check_requested=True)
    return Decision(next_stage=next_stage)


__all__ = ["Decision", "LoopState", "decide"]
