"""Helpers for testing code that uses jobrunner (our own suite uses them too).

- :func:`perform_job` runs one job's whole outcome path without a database or daemon.
- :func:`drain` runs a topic's jobs until none is left and counts the outcomes.
- :func:`assert_enqueued`, :func:`refute_enqueued`, :func:`all_enqueued` check the table.
- :class:`EventRecorder` records every event; :func:`wait_for` waits for one event;
  both give :class:`RecordedEvent` (see :mod:`jobrunner.recording`).
- :func:`running` runs a runner for the body of an ``async with`` block.

The pytest plugin (:mod:`jobrunner.pytest_plugin`) adds ``runner`` and ``events``
fixtures on top of these.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from . import events
from .config import TopicSettings
from .enqueue import encode_args
from .executor import Executor
from .job import Job, JobState
from .priority import parse_priority
from .producer import Producer
from .recording import EventRecorder, RecordedEvent, wait_for
from .runner import Runner
from .summary import OUTCOMES
from .worker import Worker
from .worker_lookup import worker_path

# ---------------------------------------------------------------- perform_job


@dataclass(frozen=True, slots=True)
class PerformResult:
    """What :func:`perform_job` observed.

    ``state`` is the state the job would be in afterwards: completed, retryable,
    discarded, cancelled or scheduled (snoozed). ``job`` is that job snapshot.
    """

    state: str
    job: Job
    result: Any = None
    error: BaseException | None = None
    reason: str | None = None
    snooze: float | None = None


async def perform_job(
    worker: type[Worker],
    args: Any = None,
    *,
    attempt: int = 1,
    max_attempts: int | None = None,
    topic: TopicSettings | None = None,
    job_id: int = 0,
) -> PerformResult:
    """Run ``worker`` on ``args`` as the daemon would (timeout, after_error, backoff,
    outcome classification) and return the outcome.

    The args are checked as enqueue checks them: EnqueueError when they are not JSON,
    InvalidArgumentsError when they do not match the worker's ``args_type`` (an
    instance of that type is accepted too).
    """
    name = worker_path(worker)
    spec = worker.args_spec
    decoded = json.loads(encode_args(name, args if spec is None else spec.to_json_args(args)))
    if spec is not None:
        spec.convert(decoded, name)
    topic_name = worker.topic or "test"
    now = time.time()
    job = Job(
        id=job_id, topic=topic_name, worker=name, args=decoded, state=JobState.EXECUTING,
        priority=parse_priority(worker.priority) if worker.priority is not None else 0, attempt=attempt,
        max_attempts=max_attempts or worker.max_attempts, inserted_at=now, scheduled_at=now,
        attempted_at=now,
    )
    settings = topic or TopicSettings(name=topic_name)
    executor = _DirectExecutor(worker, settings)
    finished = await executor.execute(job)
    snap = finished.snapshot
    payload = finished.payload
    return PerformResult(
        state=snap.state, job=snap, result=payload.get("result"), error=payload.get("error"),
        reason=payload.get("reason"), snooze=payload.get("seconds"),
    )


class _DirectExecutor(Executor):
    """An executor bound to one worker class (which need not be importable)."""

    def __init__(self, worker: type[Worker], topic: TopicSettings) -> None:
        super().__init__(topic, anyio.CapacityLimiter(1))
        self._worker = worker

    async def execute(self, job: Job) -> Any:
        from . import worker_lookup

        # Let resolve_worker find classes defined inside test functions.
        worker_lookup._resolved.setdefault(job.worker, self._worker)
        return await super().execute(job)


# ---------------------------------------------------------------- drain


#: The outcome counts drain returns, by name, and the events that count them.
_OUTCOME_SIGNALS = {name: events.signal_named(f"job_{name}") for name in OUTCOMES.values()}


async def drain(runner: Runner, topic: str, *, with_scheduled: bool = False) -> dict[str, int]:
    """Run ``topic``'s available jobs in the current task until none is left.

    Returns how many executions ended completed, failed (will retry), discarded,
    cancelled and snoozed. With ``with_scheduled``, scheduled and retryable jobs run
    at once instead of when due, so retries go on until each job completes or is
    discarded. Do not drain a topic that ``runner.run()`` is running.
    """
    settings = runner.settings.topic(topic)
    counts = dict.fromkeys(_OUTCOME_SIGNALS, 0)
    receivers = []
    for name, signal in _OUTCOME_SIGNALS.items():
        def count(sender: Any, _name: str = name, **payload: Any) -> None:
            counts[_name] += 1
        signal.connect(count, sender=topic, weak=False)
        receivers.append((signal, count))
    producer = Producer(
        settings, runner.storage, runner.node,
        Executor(settings, anyio.CapacityLimiter(settings.parallelism), runner.clock), runner.clock,
    )
    try:
        await runner.in_thread(runner.migrate)
        async with anyio.create_task_group() as tg:
            await producer.drain(tg, with_scheduled=with_scheduled)
            tg.cancel_scope.cancel()  # the job tasks, all idle now
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
    return counts


# ---------------------------------------------------------------- the table


_WAITING_STATES = (JobState.AVAILABLE, JobState.SCHEDULED, JobState.RETRYABLE, JobState.BLOCKED)


def all_enqueued(
    runner: Runner,
    *,
    worker: type[Worker] | str | None = None,
    topic: str | None = None,
    args: Mapping[str, Any] | None = None,
    state: str | Iterable[str] | None = None,
) -> list[Job]:
    """Jobs matching every filter given, oldest first.

    ``args`` matches when each given key has that value (other keys are ignored).
    ``state`` defaults to the waiting states: available, scheduled, retryable.
    """
    name = worker if isinstance(worker, str) or worker is None else worker_path(worker)
    states = _WAITING_STATES if state is None else ((state,) if isinstance(state, str) else tuple(state))
    found = []
    for job in runner.list_jobs(topic=topic, worker=name, limit=1_000_000, newest_first=False):
        if job.state not in states:
            continue
        if args is not None and not (
            isinstance(job.args, dict) and all(job.args.get(k, _MISSING) == v for k, v in args.items())
        ):
            continue
        found.append(job)
    return found


_MISSING = object()


def _describe_filters(**filters: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None) or "no filter"


def assert_enqueued(runner: Runner, **filters: Any) -> Job:
    """Assert a job matching ``filters`` (see :func:`all_enqueued`) is stored; return it."""
    found = all_enqueued(runner, **filters)
    if not found:
        waiting = runner.list_jobs(limit=20)
        listing = "\n".join(f"  {j.id} {j.worker} {j.state} {j.args!r}" for j in waiting) or "  (none)"
        raise AssertionError(f"no job enqueued with {_describe_filters(**filters)}; newest jobs:\n{listing}")
    return found[0]


def refute_enqueued(runner: Runner, **filters: Any) -> None:
    """Assert no job matches ``filters`` (see :func:`all_enqueued`)."""
    found = all_enqueued(runner, **filters)
    if found:
        raise AssertionError(
            f"expected no job with {_describe_filters(**filters)}, found ids {[j.id for j in found]}"
        )


# ---------------------------------------------------------------- running


@contextlib.asynccontextmanager
async def running(runner: Runner) -> AsyncIterator[Runner]:
    """Run ``runner`` for the body of the block; stop it gracefully at the end."""
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        try:
            yield runner
        finally:
            with anyio.CancelScope(shield=True):
                await runner.stop()


__all__ = [
    "EventRecorder",
    "PerformResult",
    "RecordedEvent",
    "all_enqueued",
    "assert_enqueued",
    "drain",
    "perform_job",
    "refute_enqueued",
    "running",
    "wait_for",
]
