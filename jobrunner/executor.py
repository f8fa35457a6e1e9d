"""Runs one job and turns what happened into a storage ack and an event.

The pipeline: resolve the worker → run ``perform`` under its deadline → classify the
outcome → plan the transition (both pure, in :mod:`jobrunner.outcomes`) → the producer
writes the ack and emits the event after the write.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio

from .config import TopicSettings
from .errors import InvalidArgumentsError, ProcessFailed, UnknownWorkerError
from .job import Job, Unreadable
from .outcomes import (
    Finished,
    Outcome,
    OutcomeKind,
    classify,
    classify_error,
    describe_error,
    encode_result,
    plan,
    released,
)
from .payload import PayloadError
from .process import ExternalProcess, as_external_process
from .threads import ThreadCall, started_in_thread
from .worker import Worker
from .worker_lookup import runnable_worker

logger = logging.getLogger("jobrunner.executor")

#: Seconds ``after_error`` may take for a failure recorded while its job is being cancelled.
SALVAGED_HOOK_TIMEOUT = 5.0


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
            outcome = Outcome(OutcomeKind.UNRUNNABLE, error=PayloadError(job.args),
                              reason="its arguments cannot be read; not retried")
            return plan(job, outcome, self.topic, self.clock(), None, 0.0)
        try:
            worker_cls = runnable_worker(job.worker)
        except UnknownWorkerError as exc:
            outcome = Outcome(OutcomeKind.UNRUNNABLE, error=exc, reason="the worker cannot be loaded; not retried")
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
                    outcome = Outcome(OutcomeKind.UNRUNNABLE, error=exc,
                                      reason="the arguments do not match the worker's args_type; not retried")
                    return plan(job, outcome, self.topic, self.clock(), None, 0.0)
            if not worker.perform_is_async:
                call = ThreadCall(functools.partial(worker.perform, job))
                started_in_thread(call)
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
        if outcome.kind == OutcomeKind.FAILED and worker is not None:
            if salvaged:  # the job's scope is cancelled: the hook runs shielded, bounded
                with anyio.CancelScope(shield=True), anyio.move_on_after(SALVAGED_HOOK_TIMEOUT):
                    outcome = await self._after_error(worker, job, outcome)
            else:
                outcome = await self._after_error(worker, job, outcome)
        try:
            finished = plan(job, outcome, self.topic, self.clock(), worker, duration)
        except Exception as exc:  # noqa: BLE001 - an outcome that cannot be recorded fails the job alone
            logger.error("recording the outcome of job %s (%s) failed: %s", job.id, job.worker, describe_error(exc))
            failed = Outcome(OutcomeKind.FAILED, error=exc, traceback=None,
                             reason=f"the {outcome.kind} outcome could not be recorded")
            finished = plan(job, failed, self.topic, self.clock(), None, duration)
        if call is not None and not call.done:  # timed out, but Python cannot stop the thread
            finished.overrun = call
        return finished

    def timeout_of(self, job: Job) -> float | None:
        """The ``timeout`` of the worker that runs ``job`` (None: none, or no such worker)."""
        try:
            return runnable_worker(job.worker).timeout
        except UnknownWorkerError:
            return None

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


__all__ = ["SALVAGED_HOOK_TIMEOUT", "Executor", "Finished", "Outcome", "OutcomeKind", "classify",
           "classify_error", "describe_error", "encode_result", "plan", "released"]
