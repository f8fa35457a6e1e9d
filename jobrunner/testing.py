"""Helpers for testing code that uses jobrunner (our own suite uses them too).

- :func:`perform_job` runs one job's whole outcome path without a database or daemon.
- :func:`drain` runs a topic's jobs until none is left and counts the outcomes.
- :func:`assert_enqueued`, :func:`refute_enqueued`, :func:`all_enqueued` check the table.
- :class:`EventRecorder` records every event; :func:`wait_for` waits for one event.
- :func:`running` runs a runner for the body of an ``async with`` block.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Generator, Iterable, Mapping

import anyio
import anyio.from_thread
import anyio.lowlevel
from blinker import Signal

from . import events
from .config import TopicSettings
from .enqueue import encode_args
from .executor import Executor
from .job import Job
from .producer import Producer
from .runner import Runner
from .worker import Worker, worker_path

Predicate = Callable[[dict[str, Any]], bool]


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
    outcome classification) and return the outcome. The args must be JSON, as for enqueue.
    """
    name = worker_path(worker)
    decoded = json.loads(encode_args(name, args))
    topic_name = worker.topic or "test"
    now = time.time()
    job = Job(
        id=job_id, topic=topic_name, worker=name, args=decoded, state="executing",
        priority=worker.priority or 0, attempt=attempt,
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
        from . import worker as worker_module

        # Let resolve_worker find classes defined inside test functions.
        worker_module._resolved.setdefault(job.worker, self._worker)
        return await super().execute(job)


# ---------------------------------------------------------------- drain


_OUTCOME_SIGNALS = {
    "completed": events.job_completed,
    "failed": events.job_failed,
    "discarded": events.job_discarded,
    "cancelled": events.job_cancelled,
    "snoozed": events.job_snoozed,
}


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
    run_db = _thread_runner()
    producer = Producer(
        settings, runner.store, runner.node, run_db,
        Executor(settings, anyio.CapacityLimiter(settings.parallelism), runner.clock), runner.clock,
    )
    try:
        await run_db(runner.store.migrate)
        async with anyio.create_task_group() as tg:
            while True:
                if with_scheduled:
                    await run_db(runner.store.stage_due, topic, math.inf)
                claimed = await producer.flush(settings.parallelism, stage=True)
                for job in claimed:
                    producer.start_job(tg, job)
                if not claimed:
                    break
                await producer.wait_idle()
            tg.cancel_scope.cancel()  # the job tasks, all idle now
        await producer.flush(0)
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
    return counts


def _thread_runner() -> Callable[..., Any]:
    limiter = anyio.CapacityLimiter(1)

    async def run_db(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=limiter)

    return run_db


# ---------------------------------------------------------------- the table


_WAITING_STATES = ("available", "scheduled", "retryable")


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
    for job in runner.store.list_jobs(topic=topic, worker=name, limit=1_000_000, newest_first=False):
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
        waiting = runner.store.list_jobs(limit=20)
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


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One event seen by an :class:`EventRecorder`."""

    name: str
    sender: Any
    payload: dict[str, Any]

    @property
    def job(self) -> Job | None:
        """The job snapshot, for job events."""
        return self.payload.get("job")


class _LoopNotifier:
    """Wakes a task of the loop it was made in, from any thread."""

    def __init__(self) -> None:
        self._thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()
        self.event = anyio.Event()

    def notify(self) -> None:
        if threading.get_ident() == self._thread:
            self.event.set()
        else:
            with contextlib.suppress(RuntimeError):
                anyio.from_thread.run_sync(self.event.set, token=self._token)


class EventRecorder:
    """Records every jobrunner event while connected (use as a context manager).

    ``with EventRecorder() as rec: ...`` then ``rec.names()``, ``rec.of("job_failed")``,
    or ``await rec.wait_for("job_completed", lambda p: p["job"].id == 3)``, which
    also sees events recorded before the call.
    """

    def __init__(self, topic: str | None = None) -> None:
        self.topic = topic
        self.events: list[RecordedEvent] = []
        self._waiters: list[tuple[str, Predicate, _LoopNotifier, list[RecordedEvent]]] = []
        self._lock = threading.Lock()
        self._receivers: list[tuple[Signal, Callable[..., None]]] = []

    def __enter__(self) -> EventRecorder:
        # blinker does not tell a receiver which signal called it: one receiver per signal.
        self._receivers = [(s, self._receiver_for(s.name)) for s in events.ALL_SIGNALS]
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)
        return self

    def __exit__(self, *exc: object) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)

    def _receiver_for(self, name: str) -> Callable[..., None]:
        def receive(sender: Any, **payload: Any) -> None:
            if self.topic is not None and sender != self.topic and not name.startswith("runner_"):
                return
            event = RecordedEvent(name, sender, payload)
            with self._lock:
                self.events.append(event)
                waiters = list(self._waiters)
            for wanted, predicate, notifier, box in waiters:
                if wanted == name and not box and predicate(payload):
                    box.append(event)
                    notifier.notify()
        return receive

    def names(self) -> list[str]:
        """The names of the recorded events, in order."""
        return [e.name for e in self.events]

    def of(self, name: str) -> list[RecordedEvent]:
        """The recorded events called ``name``."""
        return [e for e in self.events if e.name == name]

    def counts(self) -> collections.Counter[str]:
        """How many events of each name were recorded."""
        return collections.Counter(self.names())

    async def wait_for(
        self, name: str, predicate: Predicate | None = None, timeout: float = 10.0
    ) -> RecordedEvent:
        """The first recorded event ``name`` whose payload satisfies ``predicate``,
        waiting up to ``timeout`` seconds for it (TimeoutError after)."""
        predicate = predicate or (lambda payload: True)
        notifier = _LoopNotifier()
        box: list[RecordedEvent] = []
        with self._lock:
            for event in self.events:
                if event.name == name and predicate(event.payload):
                    return event
            entry = (name, predicate, notifier, box)
            self._waiters.append(entry)
        try:
            with anyio.fail_after(timeout):
                await notifier.event.wait()
        except TimeoutError:
            raise TimeoutError(f"no {name} event matching the predicate within {timeout:g}s; "
                               f"seen: {self.names()[-20:]}") from None
        finally:
            with self._lock:
                self._waiters.remove(entry)
        return box[0]

    async def wait_count(self, name: str, count: int, timeout: float = 10.0) -> list[RecordedEvent]:
        """Wait until ``count`` events called ``name`` were recorded; return them."""
        notifier = _LoopNotifier()

        def enough(payload: dict[str, Any]) -> bool:
            return len(self.of(name)) >= count

        if len(self.of(name)) >= count:
            return self.of(name)[:count]
        box: list[RecordedEvent] = []
        entry = (name, enough, notifier, box)
        with self._lock:
            self._waiters.append(entry)
        try:
            if len(self.of(name)) < count:
                with anyio.fail_after(timeout):
                    await notifier.event.wait()
        except TimeoutError:
            raise TimeoutError(
                f"saw {len(self.of(name))} {name} events, wanted {count}, within {timeout:g}s"
            ) from None
        finally:
            with self._lock:
                self._waiters.remove(entry)
        return self.of(name)[:count]


class wait_for:  # noqa: N801 - used like a function: ``await wait_for(...)``
    """Wait for the next ``signal`` whose payload satisfies ``predicate``.

    Subscribes when called, so ``w = wait_for(events.job_completed, pred)``, then the
    action, then ``payload = await w`` cannot miss the event. ``await wait_for(...)``
    also works when the event comes later. Raises TimeoutError after ``timeout``.
    """

    def __init__(self, signal: Signal, predicate: Predicate | None = None, timeout: float = 10.0,
                 sender: Any = None) -> None:
        self.signal = signal
        self.timeout = timeout
        self._predicate = predicate or (lambda payload: True)
        self._sender = sender
        self._notifier = _LoopNotifier()
        self._payload: dict[str, Any] | None = None
        signal.connect(self._receive, weak=False)

    def _receive(self, sender: Any, **payload: Any) -> None:
        if self._payload is not None or (self._sender is not None and sender != self._sender):
            return
        if self._predicate(payload):
            self._payload = {"sender": sender, **payload}
            self._notifier.notify()

    def __await__(self) -> Generator[Any, None, dict[str, Any]]:
        return self._wait().__await__()

    async def _wait(self) -> dict[str, Any]:
        try:
            with anyio.fail_after(self.timeout):
                await self._notifier.event.wait()
        except TimeoutError:
            raise TimeoutError(f"no {self.signal.name} event matched within {self.timeout:g}s") from None
        finally:
            self.signal.disconnect(self._receive)
        assert self._payload is not None
        return self._payload


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
