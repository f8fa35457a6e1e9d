"""Runs one job and turns what happened into a storage ack and an event.

The pipeline: resolve the worker → run ``perform`` under its deadline → classify the
outcome (a pure function) → plan the transition (ack) → the producer writes the ack and
emits the event after the write.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from . import events
from .backoff import backoff_delay, worker_backoff
from .config import TopicSettings
from .errors import InvalidArgumentsError, ProcessFailed, UnknownWorkerError
from .job import LATEST, Job, Unreadable, iso
from .payload import PayloadError, storable
from .process import ExternalProcess, as_external_process
from .storage.records import Ack
from .threads import ThreadCall
from .tracebacks import format_job_error
from .transitions import Transition
from .worker import Cancel, Snooze, Worker, runnable_worker

logger = logging.getLogger("jobrunner.executor")

_TRACEBACK_LIMIT = 8000
#: Seconds ``after_error`` may take for a failure recorded while its job is being cancelled.
SALVAGED_HOOK_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one execution of ``perform`` came to.

    ``kind`` is ``completed`` (``result`` set), ``snoozed`` (``seconds``),
    ``cancelled`` (``reason``), ``failed`` (``error`` and ``traceback``) or
    ``unrunnable`` (the worker cannot be loaded: ``error``).
    """

    kind: str
    result: Any = None
    seconds: float = 0.0
    reason: str | None = None
    error: BaseException | None = None
    traceback: str | None = None


def classify(value: Any) -> Outcome:
    """The outcome of a ``perform`` that returned ``value``."""
    if isinstance(value, Snooze):
        return Outcome("snoozed", seconds=float(value.seconds))
    if isinstance(value, Cancel):
        return Outcome("cancelled", reason=value.reason)
    return Outcome("completed", result=value)


def classify_error(error: BaseException) -> Outcome:
    """The outcome of a ``perform`` that raised ``error``."""
    text = format_job_error(error)
    if len(text) > _TRACEBACK_LIMIT:
        text = "…" + text[-_TRACEBACK_LIMIT:]
    return Outcome("failed", error=error, traceback=text)


def describe_error(error: BaseException) -> str:
    """``Type: message`` for an exception (even one whose ``__str__`` raises)."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the job
        message = "<str() of the exception failed>"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def encode_result(value: Any) -> str | None:
    """The JSON text stored as a job's result; None when the value is not JSON."""
    if value is None or not storable(value):  # too deep, lone surrogates: see jobrunner.payload
        return None
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # not JSON, or nested too deep to encode
        return None


@dataclass(slots=True)
class Finished:
    """An execution waiting to be written: the ack plus what its event will say.

    The event's job snapshot (``job`` with ``changes`` applied) is built only when
    someone listens, which keeps the hot path short.
    """

    ack: Ack
    job: Job
    changes: dict[str, Any]
    payload: dict[str, Any]
    #: A plain ``def perform`` still running in its thread after its job timed out: the
    #: job's slot stays taken until it returns, so parallelism bounds threads too.
    overrun: ThreadCall | None = None

    @property
    def transition(self) -> Transition:
        """How the execution ended."""
        return self.ack.transition

    @property
    def name(self) -> str:
        """The event this transition sends ("" for a put-back at shutdown, which sends none)."""
        return self.ack.transition.event or ""

    @property
    def snapshot(self) -> Job:
        """The job as it is after this transition."""
        return self.job.evolve(state=self.ack.transition.state, **self.changes)

    def emit(self, log_success: bool = True) -> None:
        """Send the event to its receivers and log it (call only after the ack was
        written); ``log_success=False`` leaves out the log line of a job that went well
        (see ``[runner] log_jobs``). The runner's own observers get it in a batch
        (:func:`jobrunner.events.observe_batch`), not from here."""
        name = self.ack.transition.event
        if name is None:  # put back at shutdown: no lifecycle transition to announce
            logger.info(
                "job_released id=%s topic=%s: put back as available", self.job.id, self.job.topic,
                extra={"event": "job_released", "topic": self.job.topic, "job_id": self.job.id},
            )
            return
        signal = events.signal_named(name)
        if not log_success and name in events.SUCCESSES:
            if events.received(signal):
                events.send_untapped(signal, self.job.topic, job=self.snapshot, **self.payload)
        elif events.received(signal):
            events.emit_untapped(signal, self.job.topic, job=self.snapshot, **self.payload)
        elif events.logged(signal):
            # Only the log line: it names the job's id, worker and attempt, which the
            # job before the transition already has unless the attempt changed.
            job = self.snapshot if "attempt" in self.changes else self.job
            events.emit_untapped(signal, self.job.topic, job=job, **self.payload)


def released(job: Job) -> Finished:
    """The execution of ``job`` interrupted by shutdown: the job goes back, unannounced."""
    return Finished(Ack(Transition.RELEASE, job), job, {}, {})


def plan(
    job: Job,
    outcome: Outcome,
    topic: TopicSettings,
    now: float,
    worker: Worker | None = None,
    duration: float = 0.0,
) -> Finished:
    """The transition for ``job`` after ``outcome``: the ack to write and the event to send."""
    kind = outcome.kind
    if kind == "completed":
        result = encode_result(outcome.result)
        stored = None if result is None else outcome.result
        return Finished(Ack(Transition.COMPLETE, job, at=now, result=result), job,
                        {"completed_at": now, "result": stored},
                        {"duration": duration, "result": stored})
    if kind == "snoozed":
        until = min(now + outcome.seconds, max(now, LATEST))
        return Finished(Ack(Transition.SNOOZE, job, at=until), job,
                        {"scheduled_at": until, "attempt": job.attempt - 1},
                        {"duration": duration, "seconds": outcome.seconds})
    if kind == "cancelled":
        entry = {"attempt": job.attempt, "at": iso(now), "error": f"cancelled: {outcome.reason}", "traceback": None}
        errors = [*job.errors, entry]
        return Finished(Ack(Transition.CANCEL, job, at=now, errors=json.dumps(errors)), job,
                        {"cancelled_at": now, "errors": errors},
                        {"duration": duration, "reason": outcome.reason})
    # failed or unrunnable
    error = outcome.error
    message = describe_error(error) if error is not None else "unknown error"
    entry = {"attempt": job.attempt, "at": iso(now), "error": message, "traceback": outcome.traceback}
    notes = [outcome.reason] if outcome.reason else []
    retry_at = None
    if kind == "failed" and job.attempt < job.max_attempts:
        delay, problem = worker_backoff(worker, job)
        if problem is not None:
            notes.append(problem)
        if delay is None:
            delay = backoff_delay(topic.backoff, job.attempt)
        # Run times must stay renderable (year 9999 at most): a huge backoff is clamped.
        retry_at = min(now + max(0.0, delay), max(now, LATEST))
    if notes:
        entry["note"] = "; ".join(notes)
    errors = [*job.errors, entry]
    encoded = json.dumps(errors, default=str)
    if retry_at is not None:
        return Finished(Ack(Transition.RETRY, job, at=retry_at, errors=encoded), job,
                        {"scheduled_at": retry_at, "errors": errors},
                        {"duration": duration, "error": error, "will_retry": True})
    return Finished(Ack(Transition.DISCARD, job, at=now, errors=encoded), job,
                    {"discarded_at": now, "errors": errors},
                    {"duration": duration, "error": error})


class Executor:
    """Runs the jobs of one topic.

    ``thread_limiter`` bounds the worker threads that plain ``def perform`` uses.
    """

    def __init__(
        self,
        topic: TopicSettings,
        thread_limiter: anyio.CapacityLimiter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self.thread_limiter = thread_limiter
        self.clock = clock

    async def execute(self, job: Job) -> Finished:
        """Run ``job`` to an outcome and plan its transition. Never raises, except cancellation."""
        started = time.perf_counter()
        if isinstance(job.args, Unreadable):  # stored around jobrunner: cannot run, cannot improve
            outcome = Outcome("unrunnable", error=PayloadError(job.args),
                              reason="its arguments cannot be read; not retried")
            return plan(job, outcome, self.topic, self.clock(), None, 0.0)
        try:
            worker_cls = runnable_worker(job.worker)
        except UnknownWorkerError as exc:
            outcome = Outcome("unrunnable", error=exc, reason="the worker cannot be loaded; not retried")
            return plan(job, outcome, self.topic, self.clock(), None, 0.0)
        worker: Worker | None = None
        call: ThreadCall | None = None
        salvaged = False
        try:
            worker = worker_cls()
            if worker_cls.args_spec is not None:
                try:
                    worker.args_of(job)  # converted once here; perform reads the cached value
                except InvalidArgumentsError as exc:
                    outcome = Outcome("unrunnable", error=exc, reason="the arguments do not match the worker's "
                                      "args_type; not retried")
                    return plan(job, outcome, self.topic, self.clock(), None, 0.0)
            if not worker.perform_is_async:
                call = ThreadCall(functools.partial(worker.perform, job))
            outcome = classify(await self._perform(worker, job, call))
        except anyio.get_cancelled_exc_class():
            if call is None or not call.done:
                raise
            # The thread returned just as the job was cancelled (shutdown): what perform
            # did is known, so it is recorded instead of the job running again.
            process = as_external_process(call.value)
            if process is not None:
                with anyio.CancelScope(shield=True):
                    await process.terminate()
                raise
            error = call.error
            outcome = classify_error(error) if error is not None else classify(call.value)
            salvaged = True
        except BaseException as exc:  # noqa: BLE001 - a job may raise anything, even SystemExit
            outcome = classify_error(exc)
        duration = time.perf_counter() - started
        if outcome.kind == "failed" and worker is not None:
            if salvaged:  # the job's scope is cancelled: the hook runs shielded, bounded
                with anyio.CancelScope(shield=True), anyio.move_on_after(SALVAGED_HOOK_TIMEOUT):
                    outcome = await self._after_error(worker, job, outcome)
            else:
                outcome = await self._after_error(worker, job, outcome)
        try:
            finished = plan(job, outcome, self.topic, self.clock(), worker, duration)
        except Exception as exc:  # noqa: BLE001 - an outcome that cannot be recorded fails the job alone
            logger.error("recording the outcome of job %s (%s) failed: %s", job.id, job.worker, describe_error(exc))
            failed = Outcome("failed", error=exc, traceback=None,
                             reason=f"the {outcome.kind} outcome could not be recorded")
            finished = plan(job, failed, self.topic, self.clock(), None, duration)
        if call is not None and not call.done:  # timed out, but Python cannot stop the thread
            finished.overrun = call
        return finished

    async def _perform(self, worker: Worker, job: Job, call: ThreadCall | None) -> Any:
        timeout = worker.timeout
        if timeout is None:
            return await self._call(worker, job, call)
        try:
            with anyio.fail_after(timeout):
                return await self._call(worker, job, call)
        except TimeoutError:
            raise TimeoutError(f"perform exceeded the worker's timeout of {timeout:g}s") from None

    async def _call(self, worker: Worker, job: Job, call: ThreadCall | None) -> Any:
        if call is None:
            value = await worker.perform(job)
        else:
            value = await anyio.to_thread.run_sync(call, limiter=self.thread_limiter, abandon_on_cancel=True)
        # A process returned bare (anyio Process, Popen) is held exactly like ExternalProcess.
        process = as_external_process(value)
        if process is not None:
            return await _await_process(worker, job, process)
        return value

    async def _after_error(self, worker: Worker, job: Job, outcome: Outcome) -> Outcome:
        assert outcome.error is not None
        try:
            hook = worker.after_error(job, outcome.error)
            if hook is not None and hasattr(hook, "__await__"):
                await hook
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # noqa: BLE001 - recorded with the failure, never fatal
            logger.error("after_error of %s (job %s) raised %s", job.worker, job.id, describe_error(exc))
            return dataclasses.replace(outcome, reason=f"after_error raised {describe_error(exc)}")
        return outcome


async def _await_process(worker: Worker, job: Job, process: ExternalProcess) -> Any:
    """Hold the job (and its slot) until ``process`` exits; on cancellation or timeout,
    terminate its process group. ``after_async`` runs on every exit; a non-zero exit
    then fails the attempt."""
    try:
        outcome = await process.wait()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await process.terminate()
        raise
    result = worker.after_async(job, outcome)
    if inspect.isawaitable(result):
        result = await result
    if not outcome.ok:
        raise ProcessFailed(outcome.exit_code, outcome.stderr_tail)
    return result
