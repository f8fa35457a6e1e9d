"""Waiting for a job to reach a final state (completed, discarded or cancelled).

Used by :meth:`jobrunner.Runner.wait` / :meth:`~jobrunner.Runner.wait_async`, the CLI's
``wait`` and ``GET /jobs/{id}?wait=S``. A waiter reads the job once, then again only
when something may have changed it:

- a final event of that job in this process (``job_completed``, ``job_discarded``,
  ``job_cancelled``) wakes it at once;
- a change announced by the runner of this process (another process's commit seen
  by the commit watcher, or a database notification) wakes it; without a running
  runner, an SQLite waiter watches the database file itself (a thread ``stat``s the
  write-ahead log every ``[database] watch_interval``, no query);
- otherwise a fallback read, after 0.05 s, then twice as long each time up to
  ``MAX_POLL`` seconds, catches what nothing announced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from . import events
from .errors import JobNotFoundError, WaitTimeoutError
from .job import FINAL_STATES, Job
from .wakeup import Wakeup
from .watcher import CommitWatcher

if TYPE_CHECKING:
    from .runner import Runner

#: The events that end a wait (in this process).
FINAL_SIGNALS = (events.job_completed, events.job_discarded, events.job_cancelled)
#: First and longest fallback interval between two reads nothing asked for (seconds).
FIRST_POLL = 0.05
MAX_POLL = 1.0


async def wait_for_job(
    runner: Runner, job_id: int, timeout: float | None,
    on_change: Callable[[Callable[[], None]], Callable[[], None]],
) -> Job:
    """The job ``job_id`` once final; WaitTimeoutError after ``timeout`` seconds (None:
    no limit), JobNotFoundError when no job has that id. ``on_change(fn)`` subscribes
    ``fn`` to the runner's change announcements and returns the unsubscribe function."""
    if timeout is not None and (math.isnan(timeout) or timeout < 0):
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    wakeup = Wakeup()

    def on_final(sender: Any, job: Job | None = None, **_: Any) -> None:
        if job is not None and job.id == job_id:
            wakeup.set()

    for signal in FINAL_SIGNALS:
        signal.connect(on_final, weak=False)
    unsubscribe = on_change(wakeup.set)
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as watching:
            interval = runner.settings.database.watch_interval
            probe = None if runner.running or interval <= 0 else runner.store.db.change_probe()
            if probe is not None:
                await watching.start(CommitWatcher(probe, interval, wakeup.set).run)
            try:
                job = await _until_final(runner, job_id, timeout, wakeup)
            except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group
                failure = exc
            watching.cancel_scope.cancel()
    finally:
        unsubscribe()
        for signal in FINAL_SIGNALS:
            signal.disconnect(on_final)
    if failure is not None:
        raise failure
    return job


async def _read(runner: Runner, job_id: int) -> Job:
    job = await anyio.to_thread.run_sync(runner.get_job, job_id)
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job


async def _until_final(runner: Runner, job_id: int, timeout: float | None, wakeup: Wakeup) -> Job:
    deadline = math.inf if timeout is None else anyio.current_time() + timeout
    poll = FIRST_POLL
    job = await _read(runner, job_id)
    while job.state not in FINAL_STATES:
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            raise WaitTimeoutError(
                f"job {job_id} is still {job.state} after {timeout:g}s (waiting for completed, discarded "
                "or cancelled)", job=job,
            )
        if not await wakeup.wait(min(poll, remaining)):
            poll = min(poll * 2, MAX_POLL)
        job = await _read(runner, job_id)
    return job


__all__ = ["FINAL_SIGNALS", "FIRST_POLL", "MAX_POLL", "wait_for_job"]
